"""Timing and memory helpers: interleaved rounds, medians, peak RSS per call, the machine record.

The machines this runs on are shared and noisy, so configurations that are compared are run in
rounds, one call of each per round, the order rotated every round (round r starts with config r mod
n), and ratios are medians of the per-round ratios. Wall time is the figure; process CPU time is
kept beside it (it is less disturbed by other processes competing for the cores).

Peak memory is the resident set's high-water mark (VmHWM) of this process during one call: Linux
resets it when "5" is written to /proc/self/clear_refs (freed heap memory is first handed back with
glibc's malloc_trim, untimed). Where that is not possible the lifetime peak (`getrusage` ru_maxrss)
is reported and the method says so.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _malloc_trim():
    """glibc's malloc_trim: hand freed heap memory back to the kernel, so that the RSS before a call is
    what is alive and the peak during it shows what the call itself needed (None off glibc)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


RSS_METHOD = (
    "VmHWM of this process, reset before each timed call (/proc/self/clear_refs)"
    if reset_peak()
    else "ru_maxrss: peak over the process lifetime (this kernel cannot reset it)"
)


@dataclass
class Samples:
    """Timings of one configuration: wall and CPU seconds and the peak RSS (MiB) of each call."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    growth_mib: list[float] = field(default_factory=list)  # peak during the call minus RSS before it
    last: Any = None  # what the last call returned

    def record(self, fn: Callable[[], Any]) -> Any:
        if _TRIM is not None:
            _TRIM(0)
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
    """num/den per round, from process CPU time (`cpu`, the figure: with one compute thread it is the
    time the work took, whatever else runs on the machine) and from wall time (`wall`); each the
    median of the per-round ratios."""
    a, b = samples[num], samples[den]
    cpu = [x / y for x, y in zip(a.cpu, b.cpu)]
    wall = [x / y for x, y in zip(a.wall, b.wall)]
    return {
        "cpu": statistics.median(cpu),
        "wall": statistics.median(wall),
        "wall_ratio_of_medians": statistics.median(a.wall) / statistics.median(b.wall),
        "per_round_cpu": [round(x, 4) for x in cpu],
        "per_round_wall": [round(x, 4) for x in wall],
    }


# figure key -> (title, target), as in issue 8
CATALOG = {
    "encode": ("concept encode latency", "report (paper: 0.05 s on a V100)"),
    "generation": ("ELITE generation vs StableDiffusionPipeline", "<= 1.10x"),
    "step": ("our sampling step vs the authors' style", "report the speed-up"),
    "textual_inversion": (
        "Textual-Inversion-style optimisation vs ELITE encode",
        "report the ratio (paper: 50 min vs 0.05 s, i.e. 60000x)",
    ),
    "training": ("stage-1 training step, with vs without cached VAE latents", ">= 1.5x faster with the cache"),
    "memory": (
        "stage-1 step memory per option (checkpointing, bf16, 8-bit AdamW)",
        "report (target: paper stage 1 < 24 GB)",
    ),
    "device_memory": (
        "stage-1 and stage-2 step peak memory on the training device, per option (paper profile on a CUDA GPU)",
        "stage 1 at the paper's per-process batch < 24 GiB (CUDA)",
    ),
    "sam": ("SAM masking, all boxes of an image in one call vs one call per box", ">= 3x"),
    "dvc": ("smoke pipeline: dvc repro from nothing, then with nothing changed", "<= 15 min and <= 10 s"),
}


def figure(
    key: str, how: str, sizes: dict, heads: list[dict], status: str = "measured", reason: str | None = None
) -> dict:
    """One figure's record in results.json."""
    title, target = CATALOG[key]
    out = {"title": title, "target": target, "how": how, "status": status, "sizes": sizes, "headline": heads}
    if reason:
        out["reason"] = reason
    return out


def merge(old: dict | None, new: dict) -> dict:
    """The records of one figure measured in several phases (model sizes) as one record."""
    if old is None:
        return new
    out = {
        **old,
        "sizes": {**old["sizes"], **new["sizes"]},
        "headline": old["headline"] + new["headline"],
        "seconds": round(old.get("seconds", 0) + new.get("seconds", 0), 1),
        "how": old["how"] or new["how"],
    }
    if new["status"] != "measured":
        out["status"] = "failed" if "failed" in (old["status"], new["status"]) else new["status"]
        out["reason"] = "; ".join(r for r in (old.get("reason"), new.get("reason")) if r)
    return out


def headline(
    size: str,
    label: str,
    value: float | None,
    unit: str,
    target: str = "report",
    met: bool | None = None,
    wall: float | None = None,
) -> dict:
    """One row of the results table: `value` from CPU time (or a size in MiB), `wall` from wall time."""
    return {"size": size, "label": label, "value": value, "wall": wall, "unit": unit, "target": target, "met": met}


def ratio_headline(
    size: str, label: str, r: dict, target: str = "report", ok: Callable[[float], bool] | None = None
) -> dict:
    return headline(size, label, r["cpu"], "x", target, None if ok is None else bool(ok(r["cpu"])), r["wall"])


def time_headline(size: str, label: str, summary: dict, target: str = "report") -> dict:
    return headline(size, label, summary["median_cpu_s"], "s", target, wall=summary["median_s"])


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


def machine(device=None) -> dict:
    """The machine record; `device` (a torch.device) names the GPU when the figures ran on one."""
    import diffusers
    import torch
    import transformers

    cuda = device is not None and device.type == "cuda"
    try:
        mem_total = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) / 2**20
    except (OSError, AttributeError):
        mem_total = None
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
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
        "cuda_used": cuda,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "load_average_at_start": list(os.getloadavg()),
        "rss_method": RSS_METHOD,
    }
