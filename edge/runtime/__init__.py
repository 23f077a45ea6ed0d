"""The camera loop and its service glue: sources -> loop (executor) -> sinks, the HTTP endpoint, systemd.

    sources.py    input URIs -> frames (SCHEMES)    loop.py      capture thread, queue, staged inference
    executors.py  CPU or GPU path (make_executor)   sinks.py     results as JSON lines, groups, annotated video
    http.py       /latest, /healthz, /metrics       options.py   `edge run`'s options (RUN_OPTIONS) and --config
    service.py    `edge run`: the Runner, signals   systemd.py   sd_notify, watchdog, `edge service install|...`
"""
