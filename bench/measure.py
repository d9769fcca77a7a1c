"""Timing and memory helpers: interleaved rounds, medians, peak RSS per call, the machine record.

The machines this runs on are shared and noisy, so configurations that are compared are run in
rounds, one call of each per round, the order rotated every round (round r starts with config r mod
n), and ratios are medians of the per-round ratios. Wall time is the figure; process CPU time is
kept beside it (it is less disturbed by other processes competing for the cores).

Peak memory is the resident set's high-water mark (VmHWM) of this process during one call: Linux
resets it when "5" is written to /proc/self/clear_refs. Where that is not possible the lifetime peak
(`getrusage` ru_maxrss) is reported and the method says so.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak() -> bool:
    """Reset this process's peak RSS; False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:  # no procfs: ru_maxrss is KiB on Linux
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


RSS_METHOD = ("VmHWM of this process, reset before each timed call (/proc/self/clear_refs)"
              if reset_peak() else "ru_maxrss: peak over the process lifetime (this kernel cannot reset it)")


@dataclass
class Samples:
    """Timings of one configuration: wall and CPU seconds and the peak RSS (MiB) of each call."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    growth_mib: list[float] = field(default_factory=list)  # peak during the call minus RSS before it
    last: Any = None  # what the last call returned

    def record(self, fn: Callable[[], Any]) -> Any:
        reset_peak()
        before = rss_mib()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        self.last = fn()
        self.wall.append(time.perf_counter() - wall0)
        self.cpu.append(time.process_time() - cpu0)
        self.peak_mib.append(peak_rss_mib())
        if before is not None:
            self.growth_mib.append(self.peak_mib[-1] - before)
        return self.last

    def summary(self) -> dict:
        return {
            "median_s": statistics.median(self.wall),
            "min_s": min(self.wall),
            "median_cpu_s": statistics.median(self.cpu),
            "n": len(self.wall),
            "wall_s": [round(x, 6) for x in self.wall],
            "peak_rss_mib": round(max(self.peak_mib), 1),
            "peak_growth_mib": round(max(self.growth_mib), 1) if self.growth_mib else None,
        }


Config = Callable[[], Any] | tuple[Callable[[], Any], Callable[[], Any]]


def interleaved(configs: dict[str, Config], rounds: int, warmup: int = 1) -> dict[str, Samples]:
    """Run every config `warmup` times untimed, then `rounds` rounds of one timed call each, rotating
    the order per round so no config always runs first (or right after the same neighbour).

    A config is a callable, or a pair (prepare, call) whose `prepare` runs untimed before each call
    (e.g. installing that config's attention processors on a shared UNet)."""
    names = list(configs)
    pairs = {n: c if isinstance(c, tuple) else (None, c) for n, c in configs.items()}

    def run(name: str, samples: Samples | None):
        prepare, call = pairs[name]
        if prepare is not None:
            prepare()
        return call() if samples is None else samples.record(call)

    for _ in range(warmup):
        for name in names:
            run(name, None)
    out = {name: Samples() for name in names}
    for r in range(rounds):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            run(name, out[name])
    return out


def ratio(samples: dict[str, Samples], num: str, den: str) -> dict:
    """num/den: the median of the per-round ratios (the figure), the ratio of the medians, and the
    same from CPU time."""
    a, b = samples[num], samples[den]
    per_round = [x / y for x, y in zip(a.wall, b.wall)]
    return {
        "ratio": statistics.median(per_round),
        "ratio_of_medians": statistics.median(a.wall) / statistics.median(b.wall),
        "cpu_ratio": statistics.median([x / y for x, y in zip(a.cpu, b.cpu)]),
        "per_round": [round(x, 4) for x in per_round],
    }


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Samples:
    return interleaved({"only": fn}, repeats, warmup)["only"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import diffusers
    import torch
    import transformers

    try:
        mem_total = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
    except (OSError, AttributeError):
        mem_total = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem_total, 1) if mem_total else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_used": False,
        "load_average_at_start": list(os.getloadavg()),
        "rss_method": RSS_METHOD,
    }
