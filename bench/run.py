"""`make bench`: measure the figures of issue 8 in one process, write bench/results.json, print a table.

    python bench/run.py                 # full run (see bench/README.md for what and how)
    python bench/run.py --dvc           # also `dvc repro` of the smoke pipeline in a temporary copy
    python bench/run.py --quick --out /tmp/r.json   # smoke sizes, few repeats: checks the code paths only
    python bench/run.py --only encode,generation    # some figures
    python bench/run.py --table bench/results.json --markdown   # print the table of a results file

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

FIGURES = ("encode", "generation", "step", "textual_inversion", "training", "sam", "dvc")


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
    for key, fig in results["figures"].items():
        if fig["status"] != "measured":
            rows.append([fig["title"], "-", fig["status"], "-", fig["target"], fig.get("reason", "")])
            continue
        for h in fig["headline"]:
            met = "" if h["met"] is None else ("yes" if h["met"] else "NO")
            rows.append([fig["title"], h["size"], h["label"], _fmt(h["value"], h["unit"]), h["target"], met])
    return rows


def render_table(results: dict, markdown: bool) -> str:
    header = ["figure", "size", "measure", "value", "target", "met"]
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [min(48, max(len(str(r[i])) for r in [header, *rows])) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c)[:w].ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def _failed(name: str, exc: BaseException) -> dict:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return {"title": name, "how": "", "target": "", "status": "failed", "reason": f"{type(exc).__name__}: {line}",
            "sizes": {}, "headline": []}


def _unavailable(name: str, module: str) -> str | None:
    """Why a figure whose code lives in another area cannot run yet (None when it can)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"not measured: {module} is not in this checkout yet ({exc})"
    return None


def run(args) -> int:
    from tqdm.auto import tqdm

    from bench.measure import machine
    from bench.settings import FULL, QUICK
    from elite.config import load_params
    from elite.io import write_json

    import torch

    settings = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    wanted = [f for f in FIGURES if not args.only or f in args.only.split(",")]
    params = load_params(REPO / "params.yaml", profile="smoke")
    results = {"schema": 1, "mode": settings.mode, "machine": machine(), "settings": dataclasses.asdict(settings),
               "figures": {}}
    started = time.perf_counter()
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="elite-bench-"))
    try:
        from PIL import Image

        from bench import figures_dvc, figures_infer, figures_train
        from bench.models import build_smoke, build_sd, concept_image, load_smoke

        tqdm.write("[bench] building models (random weights) ...", file=sys.stderr)
        smoke_root = build_smoke(work / "models", params)
        models = {"smoke": load_smoke(smoke_root)}
        needs_sd = any(f in wanted for f in ("encode", "generation", "step")) and "sd" in settings.sizes
        if needs_sd or ("training" in wanted and "sd" in settings.train_sizes):
            models["sd"] = build_sd(models["smoke"], smoke_root, settings.sd_resolution, params, work)
        infer_models = {k: v for k, v in models.items() if k in settings.sizes}
        img_path, mask_path = concept_image(work / "concept")
        image, mask = Image.open(img_path).convert("RGB"), Image.open(mask_path).convert("L")
        concepts: dict = {}
        encode_s: float | None = None

        def encode():
            nonlocal concepts, encode_s
            fig, concepts = figures_infer.encode_latency(infer_models, settings, image, mask)
            encode_s = fig["sizes"]["smoke"]["median_s"]
            return fig

        def need_concepts():
            if not concepts:  # figures run without the encode figure still need encoded concepts
                for name, m in infer_models.items():
                    concepts[name] = m.elite_pipeline().encode_concept(image, mask)
            return concepts

        def ti():
            if encode_s is None:
                raise RuntimeError("the textual_inversion figure needs the encode figure (--only encode,textual_inversion)")
            return figures_train.textual_inversion(smoke_root / "base", image, mask, params, settings, encode_s)

        def training():
            reason = _unavailable("training", "elite.train.stages") or _unavailable("training", "elite.train.latents")
            if reason:
                return {"title": "stage-1 training step, with vs without cached VAE latents", "how": "",
                        "target": ">= 1.5x faster with the cache", "status": "not measured", "reason": reason,
                        "sizes": {}, "headline": []}
            return figures_train.training_step(models, smoke_root, work, params, settings)

        def sam():
            reason = _unavailable("sam", "elite.data.sam")
            if reason:
                return {"title": "SAM masking, all boxes of an image in one call vs one call per box", "how": "",
                        "target": ">= 3x", "status": "not measured", "reason": reason, "sizes": {}, "headline": []}
            return figures_train.sam_masking(smoke_root, params, settings)

        steps = {
            "encode": encode,
            "generation": lambda: figures_infer.generation(infer_models, need_concepts(), settings),
            "step": lambda: figures_infer.sampling_step(infer_models, need_concepts(), settings),
            "textual_inversion": ti,
            "training": training,
            "sam": sam,
            "dvc": lambda: figures_dvc.dvc_repro(REPO, work, args.dvc, args.dvc_timeout),
        }
        for name in tqdm(wanted, desc="bench", file=sys.stderr):
            tqdm.write(f"[bench] {name} ...", file=sys.stderr)
            t0 = time.perf_counter()
            try:
                fig = steps[name]()
            except Exception as exc:  # one broken figure must not lose the others
                traceback.print_exc(file=sys.stderr)
                fig = _failed(name, exc)
            fig["seconds"] = round(time.perf_counter() - t0, 1)
            results["figures"][name] = fig
            results["wall_seconds"] = round(time.perf_counter() - started, 1)
            write_json(out, results)  # after every figure: a killed run keeps what it measured
            tqdm.write(f"[bench] {name}: {fig['status']} in {fig['seconds']} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(out, results)
    print(render_table(results, args.markdown))
    print(f"\n{settings.mode} run in {results['wall_seconds']:.0f} s on {results['machine']['cores']} cores "
          f"({results['machine']['cpu_model']}); results: {out}")
    return 1 if any(f["status"] == "failed" for f in results["figures"].values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes and few repeats (the tests' mode)")
    parser.add_argument("--dvc", action="store_true", help="also time `dvc repro` of the smoke pipeline (minutes)")
    parser.add_argument("--dvc-timeout", type=float, default=3600.0, help="seconds per dvc repro (default 3600)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine two threads made the timings "
                             "erratic and several times slower; use the core count on a quiet machine)")
    parser.add_argument("--only", help=f"comma-separated figures out of: {','.join(FIGURES)}")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.json"), help="results file")
    parser.add_argument("--table", metavar="RESULTS", help="print the table of an existing results file and exit")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
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
