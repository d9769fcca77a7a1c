"""`make bench`: measure the figures of issue 8 in one process, write bench/results.json, print a table.

    python bench/run.py                 # full run (see bench/README.md for what and how)
    python bench/run.py --dvc           # also `dvc repro` of the smoke pipeline in a temporary copy
    python bench/run.py --quick --out /tmp/r.json   # smoke sizes, few repeats: checks the code paths only
    python bench/run.py --only encode,generation    # some figures
    python bench/run.py --table bench/results.json --markdown   # print the table of a results file
    python bench/run.py --device cuda   # on a GPU node: the device_memory figure -> bench/results_cuda.json

Every model is built from its configuration with random weights in a temporary folder; nothing in the
checkout (models/, data/, mlflow.db) is read or written except the results file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIGURES = ("encode", "generation", "step", "textual_inversion", "training", "memory", "device_memory", "sam", "dvc")
GPU_FIGURES = ("device_memory",)  # what `--device cuda` measures unless --only names more (those run on the CPU)


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "x":
        return f"{value:.3g}x" if value < 1000 else f"{value:,.0f}x"
    if unit == "s":
        return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"
    return f"{value:.0f} {unit}" if unit == "MiB" else f"{value:.3g} {unit}"


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    order = [k for k in FIGURES if k in results["figures"]] + [k for k in results["figures"] if k not in FIGURES]
    for fig in (results["figures"][k] for k in order):
        if fig["status"] != "measured":
            rows.append([fig["title"], "-", fig["status"], "-", "-", fig["target"], fig.get("reason", "")])
            continue
        for h in fig["headline"]:
            met = "" if h["met"] is None else ("yes" if h["met"] else "NO")
            rows.append(
                [
                    fig["title"],
                    h["size"],
                    h["label"],
                    _fmt(h["value"], h["unit"]),
                    _fmt(h.get("wall"), h["unit"]),
                    h["target"],
                    met,
                ]
            )
    return rows


def render_table(results: dict, markdown: bool) -> str:
    header = ["figure", "size", "measure", "value (CPU time)", "wall time", "target", "met"]
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [min(48, max(len(str(r[i])) for r in [header, *rows])) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c)[:w].ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _failed(key: str, size: str, exc: BaseException) -> dict:
    from bench.measure import figure

    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return figure(key, "", {}, [], "failed", f"{size}: {type(exc).__name__}: {line}")


def _missing(key: str, modules: tuple[str, ...]) -> dict | None:
    """A "not measured" record when code of another area that the figure uses is not in this checkout."""
    import importlib

    from bench.measure import figure

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return figure(key, "", {}, [], "not measured", f"{module} is not in this checkout yet ({exc})")
    return None


@dataclasses.dataclass
class Recorder:
    """The results file being filled: each figure is written as soon as it is measured (a killed run keeps what
    it measured); a figure that raises is recorded as failed and the others go on."""

    out: Path
    wanted: set[str]
    results: dict
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def measure(self, key: str, size: str, fn) -> None:
        from tqdm.auto import tqdm

        from bench.measure import merge
        from elite.io import write_json

        if key not in self.wanted:
            return
        tqdm.write(f"[bench] {key} ({size}) ...", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            fig = fn()
        except Exception as exc:  # one broken figure must not lose the others
            traceback.print_exc(file=sys.stderr)
            fig = _failed(key, size, exc)
        fig["seconds"] = round(time.perf_counter() - t0, 1)
        self.results["figures"][key] = merge(self.results["figures"].get(key), fig)
        self.results["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        write_json(self.out, self.results)
        tqdm.write(f"[bench] {key} ({size}): {fig['status']} in {fig['seconds']} s", file=sys.stderr)


@dataclasses.dataclass
class Inputs:
    """What every size's figures share: the smoke models (built once), the concept, the settings."""

    smoke: object
    smoke_root: Path
    image: object
    mask: object
    params: object
    settings: object
    work: Path
    encode_smoke: dict = dataclasses.field(default_factory=dict)  # the smoke encode figure, for TI's speed-up


def _measure_size(rec: Recorder, size: str, inp: Inputs) -> None:
    """The model figures of one size (smoke: the smoke models; sd: SD-sized random weights) and its SAM figure."""
    from tqdm.auto import tqdm

    from bench import figures_infer, figures_train
    from bench.models import build_sd

    settings, params, work, models, concepts = inp.settings, inp.params, inp.work, {}, {}
    if size == "smoke":
        models[size] = inp.smoke
    elif rec.wanted & {"encode", "generation", "step", "training", "memory"}:
        tqdm.write(f"[bench] building the {size} models (random weights) ...", file=sys.stderr)
        models[size] = build_sd(inp.smoke, inp.smoke_root, settings.sd_resolution, params, work)
    if rec.wanted & {"generation", "step"}:
        concepts[size] = models[size].elite_pipeline().encode_concept(inp.image, inp.mask)

    def encode():
        fig, _ = figures_infer.encode_latency(models, settings, inp.image, inp.mask)
        inp.encode_smoke.update(fig["sizes"].get("smoke", {}))
        return fig

    def train_figure(key: str, module: str, fn):
        return lambda: (
            _missing(key, ("elite.train.stages", module))
            or fn(size, models[size], inp.smoke_root, work, params, settings)
        )

    def textual_inversion():
        if not inp.encode_smoke:  # the encode figure was not asked for: TI's speed-up still needs its latency
            encode()
        base = inp.smoke_root / "base"
        return figures_train.textual_inversion(base, inp.image, inp.mask, params, settings, inp.encode_smoke)

    def sam_masking():
        return _missing("sam", ("elite.data.sam",)) or figures_train.sam_masking(sam, inp.smoke_root, params, settings)

    if models:
        rec.measure("encode", size, encode)
        rec.measure("generation", size, lambda: figures_infer.generation(models, concepts, settings))
        rec.measure("step", size, lambda: figures_infer.sampling_step(models, concepts, settings))
        rec.measure("training", size, train_figure("training", "elite.train.latents", figures_train.training_step))
        rec.measure("memory", size, train_figure("memory", "elite.train.memory", figures_train.training_memory))
    if size == "smoke":
        rec.measure("textual_inversion", size, textual_inversion)
    sam = settings.sam_model[size]
    rec.measure("sam", sam, sam_masking)


def run(args) -> int:
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from bench import figures_device, figures_dvc
    from bench.measure import machine
    from bench.models import build_smoke, concept_image, load_smoke
    from bench.settings import FULL, QUICK
    from elite.config import load_params
    from elite.io import write_json

    settings = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    wanted = set(args.only.split(",")) if args.only else set(GPU_FIGURES if device.type == "cuda" else FIGURES)
    params = load_params(REPO / "params.yaml", profile="smoke")
    results = {
        "schema": 1,
        "mode": settings.mode,
        "machine": machine(device),
        "settings": dataclasses.asdict(settings),
    }
    rec = Recorder(Path(args.out), wanted, {**results, "figures": {}})
    work = Path(tempfile.mkdtemp(prefix="elite-bench-"))
    try:
        sizes = settings.sizes if wanted - {"dvc"} else []  # the dvc figure alone needs no models
        if sizes:
            tqdm.write("[bench] building the smoke models ...", file=sys.stderr)
            smoke_root = build_smoke(work / "models", params)
            img_path, mask_path = concept_image(work / "concept")
            image, mask = Image.open(img_path).convert("RGB"), Image.open(mask_path).convert("L")
            inp = Inputs(load_smoke(smoke_root), smoke_root, image, mask, params, settings, work)
        for size in tqdm(sizes, desc="bench sizes", file=sys.stderr):
            _measure_size(rec, size, inp)
        if sizes:
            size = "sd" if device.type == "cuda" else "smoke"
            measure = figures_device.device_memory
            rec.measure("device_memory", size, lambda: measure(smoke_root, work, settings, device))
        rec.measure("dvc", "smoke", lambda: figures_dvc.dvc_repro(REPO, work, args.dvc, args.dvc_timeout))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = rec.results
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.perf_counter() - rec.started, 1)
    write_json(rec.out, results)
    print(render_table(results, args.markdown))
    print(
        f"\n{settings.mode} run in {results['wall_seconds']:.0f} s on {results['machine']['cores']} cores "
        f"({results['machine']['cpu_model']}, {args.threads} torch thread(s)); results: {rec.out}"
    )
    return 1 if any(f["status"] == "failed" for f in results["figures"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes and few repeats (the tests' mode)")
    parser.add_argument("--dvc", action="store_true", help="also time `dvc repro` of the smoke pipeline (minutes)")
    parser.add_argument("--dvc-timeout", type=float, default=3600.0, help="seconds per dvc repro (default 3600)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine two threads made the timings "
        "erratic and several times slower; use the core count on a quiet machine)",
    )
    parser.add_argument("--only", help=f"comma-separated figures out of: {','.join(FIGURES)}")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: on a GPU node, the device_memory figure at the paper profile's settings (default out "
        "bench/results_cuda.json); the other figures run on the CPU",
    )
    parser.add_argument("--out", help="results file (default bench/results.json; --device cuda: results_cuda.json)")
    parser.add_argument("--table", metavar="RESULTS", help="print the table of an existing results file and exit")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.out is None:
        args.out = str(REPO / "bench" / ("results_cuda.json" if args.device == "cuda" else "results.json"))
    if args.device == "cuda" and not args.table:
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA GPU here (run it on a GPU node, or leave --device out)")
    if args.only:
        unknown = [f for f in args.only.split(",") if f not in FIGURES]
        if unknown:
            parser.error(f"--only: unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    if args.table:
        try:
            results = json.loads(Path(args.table).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"--table {args.table}: cannot read a results file ({exc})")
        print(render_table(results, args.markdown))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
