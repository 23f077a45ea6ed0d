"""`edge run` as a long-lived process: the options resolved (options.py), the model loaded, the loop assembled
(executors.py) and run until the input ends or a signal comes; SIGHUP re-reads the configuration and rebuilds the
loop, keeping the model when it did not change. STOPPING=1 on SIGTERM or SIGINT, after which the loop finishes the
batch in hand, flushes the sinks and exits 0. What systemd sees (READY, WATCHDOG, the journal) is in systemd.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

from ..errors import EdgeError
from ..model import Model
from .executors import make_executor
from .http import Metrics, parse_address, serve
from .loop import Loop
from .options import resolve_options
from .sinks import AnnotatedVideo, Results, load_groups, open_sink
from .sources import open_source, redact
from .systemd import Notifier, Watchdog, counts, setup_logging, watchdog_interval

log = logging.getLogger("edge")


class Runner:
    """Runs the loop with one set of options; SIGHUP rebuilds it from the re-read configuration."""

    def __init__(self, config: str | None, flags: dict):
        self.config, self.flags = config, flags
        self.notifier = Notifier(os.environ.get("NOTIFY_SOCKET"))
        self.loop = None
        self.stopping = self.reloading = False
        self.model_key = self.model = None
        self.started = False  # READY=1 has been sent once: systemd's watchdog runs from then on, reloads included

    def handle_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self.reloading = True
        else:
            if not self.stopping:
                self.notifier.send("STOPPING=1")
                log.info("%s: stopping", signal.Signals(signum).name)
            self.stopping = True
        if self.loop is not None:
            self.loop.stop.set()
        elif signum != signal.SIGHUP:
            raise SystemExit(0)  # still starting (loading the model): nothing to flush

    def run(self) -> int:
        options = resolve_options(self.config, self.flags)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.handle_signal)
        while True:
            reason = self.run_once(options)
            if self.stopping or reason == "end" or not self.reloading:
                return 0
            self.reloading = False
            self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
            try:
                options = resolve_options(self.config, self.flags)
                log.info("SIGHUP: configuration reloaded%s", f" from {self.config}" if self.config else "")
            except EdgeError as e:
                log.error("SIGHUP: %s; keeping the running configuration", e)

    def load_model(self, options: dict):
        key = (options["model"], options["repo"], options["backend"], options["precision"], options["workers"])
        if key != self.model_key:  # a reload that keeps the model keeps it loaded (an engine can take a while)
            self.model = None
            model, repo, backend, precision, workers = key
            self.model = Model.load(model, repo, backend, precision, runs=workers)
            self.model_key = key
        return self.model

    def run_once(self, options: dict) -> str:
        model = self.load_model(options)
        card = model.card
        batch = options["batch"] or card.batch or 1
        if card.batch and batch % card.batch:
            raise EdgeError(f"batch {batch}: {model.folder} takes batches of exactly {card.batch}")
        groups = load_groups(options["groups"], model.labels, card.classes) if options["groups"] else None
        results = Results(model, options["top"], groups, options["min_probability"], options["smoothing"])
        address = parse_address(options["http"]) if options["http"] else None
        source = open_source(options["input"], options["width"], options["height"], options["fps"], options["loop"])
        sinks = [open_sink(uri) for uri in options["output"]]
        annotate = AnnotatedVideo(options["annotate"], source, options["fps"]) if options["annotate"] else None
        shown = redact(options["input"])  # no camera password in logs, STATUS or /metrics
        watchdog = Watchdog(self.notifier, watchdog_interval(options["watchdog_interval"]), shown,
                            self.started)
        with contextlib.ExitStack() as gpu_scope:  # the CUDA context, while the GPU path runs
            executor = make_executor(model, options["workers"], gpu_scope, batch)
            loop = Loop(source, executor, results, sinks, batch, on_tick=watchdog.tick, annotate=annotate)
            metrics = Metrics(loop.stats, {"model": card.name, "backend": options["backend"],
                                           "precision": options["precision"], "input": shown}, model.backend)
            loop.timings.append(metrics)
            server = serve(address, metrics) if address else None
            log.info("%s (%s, %s) on %s, batch %d, workers %d", card.name, options["backend"],
                     options["precision"], shown, batch, options["workers"])
            self.loop = loop
            try:
                if self.stopping or self.reloading:  # the signal came while the model was loading
                    return "stopped"
                reason = loop.run()
            finally:
                self.loop = None
                self.started = self.started or watchdog.ready
                if server is not None:
                    server.close()
                metrics.close()
                for sink in sinks:
                    sink.close()
                if annotate is not None:
                    annotate.close()
        s = loop.stats
        log.info("%s: %s", reason, counts(s))
        return reason


def run(config: str | None, flags: dict) -> int:
    setup_logging()
    try:
        return Runner(config, flags).run()
    except BrokenPipeError:  # `edge run ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 0
