"""jetson-stats (jtop) telemetry for the profile: board power, GPU load, temperatures and the clock settings
(jetson_clocks, the nvpmodel power mode) while it runs: a Jetson's timings mean little without those two.

jtop is imported lazily and only here; on any machine without it (or without its service) every function returns
None and a one-line reason instead of failing. The client talks to the root service jtop.service over
/run/jtop.sock, so the user must be in the `jtop` group.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from .errors import first_line

SOCKET = Path("/run/jtop.sock")


def availability() -> tuple[bool, str]:
    """For `edge info`: (usable, what was found or why not). Does not connect to the service."""
    try:
        import jtop  # noqa: F401  (jetson-stats)
    except ImportError:
        return False, "jetson-stats is not installed (pip install 'edge[jetson]' on a Jetson)"
    except Exception as e:  # a broken install raises more than ImportError
        return False, f"jetson-stats cannot be imported: {type(e).__name__}: {e}"
    if not SOCKET.exists():
        return False, f"jetson-stats is installed but {SOCKET} is missing: is jtop.service running?"
    return True, f"jetson-stats installed, service socket {SOCKET}"


def summarize(samples: list[dict]) -> dict:
    """Samples of {"power_mw", "gpu_load_percent", "temperatures_c": {sensor: C}, "jetson_clocks", "nvpmodel"}
    -> means, maxima, and the clock settings (each setting seen, in order, when it changed during the run)."""
    summary: dict = {"samples": len(samples)}
    # Each change, not each distinct value: on, off, on again must not read as "on then off"
    clocks = [on for on, _ in itertools.groupby(s["jetson_clocks"] for s in samples
                                                if s.get("jetson_clocks") is not None)]
    if clocks:
        summary["jetson_clocks"] = " then ".join("on" if on else "off" for on in clocks)
    modes = [mode for mode, _ in itertools.groupby(s["nvpmodel"] for s in samples if s.get("nvpmodel") is not None)]
    if modes:
        summary["nvpmodel"] = " then ".join(modes)
    power = [s["power_mw"] for s in samples if s.get("power_mw") is not None]
    load = [s["gpu_load_percent"] for s in samples if s.get("gpu_load_percent") is not None]
    if power:
        summary["power_mean_w"] = round(sum(power) / len(power) / 1000.0, 3)
    if load:
        summary["gpu_load_mean_percent"] = round(sum(load) / len(load), 1)
    temperatures: dict[str, float] = {}
    for s in samples:
        for sensor, celsius in s.get("temperatures_c", {}).items():
            temperatures[sensor] = max(celsius, temperatures.get(sensor, celsius))
    if temperatures:
        summary["temperature_max_c"] = {k: round(v, 1) for k, v in sorted(temperatures.items())}
    return summary


def read_sample(jetson) -> dict:
    """One reading from a started jtop client (fields as jetson-stats 4.x names them)."""
    power = jetson.power.get("tot", {}).get("power")
    loads = [gpu.get("status", {}).get("load") for gpu in jetson.gpu.values() if isinstance(gpu, dict)]
    loads = [load for load in loads if load is not None]
    temperatures = {name: sensor["temp"] for name, sensor in jetson.temperature.items()
                    if isinstance(sensor, dict) and sensor.get("online", True) and sensor.get("temp", -256) > -256}
    # Absent (None) when jetson-stats cannot read or control them on this board.
    clocks = getattr(jetson, "jetson_clocks", None)
    mode = getattr(jetson, "nvpmodel", None)
    return {"power_mw": power, "gpu_load_percent": max(loads) if loads else None, "temperatures_c": temperatures,
            "jetson_clocks": None if clocks is None else bool(clocks),
            "nvpmodel": None if mode is None else str(mode.name)}


class Sampler:
    """Samples jtop on a thread between start() and stop(); stop() returns (summary or None, note)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list[dict] = []
        self.note = ""
        self.jetson = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self) -> None:
        usable, self.note = availability()
        if not usable:
            return
        from jtop import jtop

        try:
            self.jetson = jtop(interval=self.interval)
            self.jetson.start()
        except Exception as e:  # JtopException: service down, not in the jtop group, or a version mismatch
            self.note = f"jetson-stats cannot connect: {first_line(e)}"
            self.jetson = None
            return
        self.thread = threading.Thread(target=self._sample, name="edge-telemetry", daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopping.is_set() and self.jetson.ok():  # ok() waits for the service's next sample
            try:
                self.samples.append(read_sample(self.jetson))
            except Exception as e:  # a field missing on this board: keep what was read, say what failed
                self.note = f"jetson-stats sample failed: {type(e).__name__}: {e}"
                return

    def stop(self) -> tuple[dict | None, str]:
        if self.jetson is None:
            return None, self.note
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=2 * self.interval + 1)
        try:
            self.jetson.close()
        except Exception:
            pass
        if not self.samples:
            return None, self.note or "jetson-stats gave no sample during the run"
        return summarize(self.samples), self.note or f"jetson-stats, {len(self.samples)} samples"
