"""The camera loop and its service glue: sources -> loop -> sinks, the HTTP endpoint, sd_notify.

    sources.py  input URIs -> frames          loop.py     capture thread, queue, staged inference
    sinks.py    results as JSON lines         http.py     /latest, /healthz, /metrics
    service.py  `edge run` options and config, signals, sd_notify, `edge service install|uninstall|status`
"""
