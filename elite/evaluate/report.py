"""Evaluation outputs: the metrics JSON, one grid per subject, the markdown report, the FiftyOne dataset.

metrics/dreambench.json (DVC metrics; `dvc metrics diff` compares runs):
    overall  {clip_i, clip_t, dino_i, images}        ELITE over every generated image
    families {<family>: {...}}  subjects {<subject>: {...}}
    context  {real: {clip_i, dino_i, pairs}, baseline: {clip_i, clip_t, dino_i, images}}
    sweep    {lam_<x>: {clip_i, clip_t, dino_i, images, <metric>_lo, <metric>_hi}}   with each lambda's 95% interval
    blocks   {<row>: {order, clip_i, clip_t, dino_i, images, <metric>_lo, <metric>_hi}}   the sweep by block
             (`evaluate.sweep_blocks` on one cross-attention part or block; `order`: the rows' order)
    table2   {elite|ti|xti: {clip_t, clip_i, dino_i, images, time_s}}   paper Table 2 on the baselines' subjects
             (time_s: ELITE's encode vs a baseline's optimisation, mean seconds per concept)
    spread   {<row>: {<metric>_lo, <metric>_hi}}   95% bootstrap intervals over subjects, prompts and seeds
             (elite/evaluate/spread.py) of every row above: elite, baseline, named, global, ti, xti, oracles
    timing   {encode_s_mean, encode_s_max, generate_s_per_image_mean, baseline_generate_s_per_image_mean,
              encode_s: {<subject>: s}}
CLIP-I and DINO-I average over all (generated, real) pairs, so an image weighs by the real images of its
subject; CLIP-T averages over images.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from elite.evaluate.metrics import Mean
from elite.evaluate.scorers import score_keys
from elite.evaluate.spread import spread
from elite.io import atomic_file

SCORES = ("clip_i", "clip_t", "dino_i")


def aggregate(rows: list[dict]) -> dict:
    """Mean scores; with a world scorer (toy world) also its accuracies (each over the images that have it)."""
    clip_i, dino_i, clip_t = Mean(), Mean(), Mean()
    accuracies = {key: Mean() for key in score_keys(rows)}
    for r in rows:
        clip_i.add(r["clip_i"], r["n_real"])
        dino_i.add(r["dino_i"], r["n_real"])
        clip_t.add(r["clip_t"])
        for key, mean in accuracies.items():
            mean.add(r.get(key))
    return {
        "clip_i": clip_i.value,
        "clip_t": clip_t.value,
        "dino_i": dino_i.value,
        "images": len(rows),
        **{key: mean.value for key, mean in accuracies.items()},
    }


def group(rows: list[dict], key: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(r[key])].append(r)
    return {name: aggregate(items) for name, items in groups.items()}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def table2(
    by_variant: dict[str, list[dict]], encode_s: dict[str, float], inversion_s: dict[str, dict[str, float]]
) -> dict:
    """ELITE next to the optimisation baselines, on the subjects the baselines ran on (paper Table 2)."""
    subjects = {r["subject"] for m in inversion_s for r in by_variant.get(m, [])}
    if not subjects:
        return {}
    rows = {"elite": ([r for r in by_variant["elite"] if r["subject"] in subjects], encode_s)}
    rows.update({m: (by_variant[m], inversion_s[m]) for m in inversion_s if by_variant.get(m)})
    return {
        name: {**aggregate(items), "time_s": _mean([t for s, t in times.items() if s in subjects])}
        for name, (items, times) in rows.items()
    }


def _intervals(items: list[dict]) -> dict[str, float]:
    """The 95% interval of every score the rows have."""
    return spread(items, (*SCORES, *score_keys(items)))


def _with_intervals(items: list[dict]) -> dict:
    """Mean scores and their intervals: one row of the sweep or of the sweep by block."""
    return {**aggregate(items), **_intervals(items)}


def build_metrics(
    rows: list[dict],
    real: dict[str, dict],
    encode_s: dict[str, float],
    inversion_s: dict[str, dict[str, float]] | None = None,
) -> dict:
    """rows: per-image scores of every variant; real: per-subject real-vs-real {clip_i, dino_i, pairs};
    inversion_s: {method: {subject: seconds}} of the optimisation baselines."""
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    elite, baseline = by_variant["elite"], by_variant["baseline"]
    real_clip, real_dino = Mean(), Mean()
    for value in real.values():
        real_clip.add(value["clip_i"], value["pairs"])
        real_dino.add(value["dino_i"], value["pairs"])
    context = {
        "real": {"clip_i": real_clip.value, "dino_i": real_dino.value, "pairs": sum(v["pairs"] for v in real.values())}
    }
    for variant in ("baseline", "named", "global"):  # the class word, the identity in words (toy), lambda 0
        if by_variant[variant]:
            context[variant] = aggregate(by_variant[variant])
    by_lam: dict[float, list[dict]] = defaultdict(list)
    for r in by_variant["sweep"]:
        by_lam[float(r["lam"])].append(r)
    sweep = {f"lam_{lam:g}": _with_intervals(items) for lam, items in by_lam.items()}
    by_row: dict[str, list[dict]] = defaultdict(list)
    for r in by_variant["blocks"]:
        by_row[r["row"]].append(r)
    blocks = {name: {"order": i, **_with_intervals(items)} for i, (name, items) in enumerate(by_row.items())}
    times = list(encode_s.values())
    timing = {
        "encode_s_mean": _mean(times),
        "encode_s_max": max(times) if times else None,
        "encode_s": dict(encode_s),
        "generate_s_per_image_mean": _mean([r["generate_s"] for r in elite if r["generate_s"] is not None]),
        "baseline_generate_s_per_image_mean": _mean(
            [r["generate_s"] for r in baseline if r["generate_s"] is not None]
        ),
    }
    spread_rows = {"elite": elite, **{v: by_variant[v] for v in by_variant if v not in ("elite", "sweep", "blocks")}}
    return {
        "overall": aggregate(elite),
        "spread": {name: _intervals(items) for name, items in spread_rows.items() if items},
        "families": group(elite, "family"),
        "subjects": group(elite, "subject"),
        "context": context,
        "sweep": sweep,
        "blocks": blocks,
        "timing": timing,
        "table2": table2(by_variant, encode_s, inversion_s or {}),
    }


def flatten(data: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves as dotted keys (for MLflow metrics)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


# --- grids -----------------------------------------------------------------------------------------------
def _tile(img: Image.Image, size: int) -> Image.Image:
    img = img.convert("RGB")
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The concept as the local branch sees it: background black."""
    black = Image.new("RGB", image.size)
    return Image.composite(image.convert("RGB"), black, mask.convert("L").resize(image.size, Image.NEAREST))


def make_grid(concept: list[Image.Image], rows: list[tuple[str, list[Image.Image]]], tile: int) -> Image.Image:
    """Column 0: the concept image (and its masked version); then one row per prompt with its images."""
    label_h = max(12, tile // 8)
    cols = max(4, 1 + max((len(images) for _, images in rows), default=0))  # room for the prompt labels
    grid = Image.new("RGB", (cols * tile, max(len(rows), len(concept)) * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, img in enumerate(concept):
        y = r * (tile + label_h)
        draw.text((2, y + 1), "concept" if r == 0 else "masked", fill=(0, 0, 0))
        grid.paste(_tile(img, tile), (0, y + label_h))
    for r, (label, images) in enumerate(rows):
        y = r * (tile + label_h)
        draw.text((tile + 2, y + 1), label, fill=(0, 0, 0))
        for c, img in enumerate(images):
            grid.paste(_tile(img, tile), ((c + 1) * tile, y + label_h))
    return grid


def save_image(img: Image.Image, path: Path) -> Path:
    with atomic_file(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return path


# --- markdown ----------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows],
    ]


WORLD_ROWS = {
    "elite": "ELITE",
    "global": "ELITE global only (lambda 0)",
    "ti": "Textual Inversion",
    "xti": "Extended Textual Inversion (P+)",
    "named": "concept named in the prompt (base)",
    "baseline": "class word only (base)",
}


def _with_interval(metrics: dict, row: str, key: str) -> str:
    block = metrics["overall"] if row == "elite" else metrics["context"].get(row) or metrics["table2"].get(row, {})
    value, found = block.get(key), metrics.get("spread", {}).get(row, {})
    if value is None:
        return "-"
    lo, hi = found.get(f"{key}_lo"), found.get(f"{key}_hi")
    return f"{value:.3f}" if lo is None else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def world_lines(metrics: dict) -> list[str]:
    """The world scorer's accuracies per row with 95% bootstrap intervals, the single-attribute oracles and what
    the probes read on clean and autoencoded held-out renders (toy world); nothing without a world scorer."""
    if metrics["overall"].get("identity_acc") is None:
        return []
    keys = ("identity_acc", "colour_acc", "pattern_acc", "class_acc", "scene_acc")
    present = [r for r in WORLD_ROWS if r == "elite" or r in metrics["context"] or r in metrics.get("table2", {})]
    lines = ["", "## Identity and scene (world scorer; [95% bootstrap interval over subjects, prompts, seeds])", ""]
    lines += _table(
        ["", "identity (class, colour, pattern)", "colour", "pattern", "class", "scene"],
        [[WORLD_ROWS[r], *(_with_interval(metrics, r, k) for k in keys)] for r in present],
    )
    if metrics.get("oracles"):
        lines += ["", "Single-attribute oracles (renders of the held-out concepts sharing only that attribute):", ""]
        lines += _table(
            ["oracle", "identity", "bound"],
            [[k, v["identity_acc"], v["bound"]] for k, v in metrics["oracles"].items()],
        )
    if metrics.get("probes"):
        lines += ["", "What the probes read on held-out renders, clean and through the base's autoencoder:", ""]
        lines += _table(
            ["renders", "identity", "colour", "pattern", "class", "scene"],
            [[k, v["joint"], v["colour"], v["pattern"], v["class"], v["scene"]] for k, v in metrics["probes"].items()],
        )
    return lines


def write_report(path: Path, metrics: dict, settings: dict, grids: dict[str, Path]) -> None:
    """report.md: the settings, then one section per table (overall, Table 2, families, subjects, sweep, the toy
    world's and the several-image rows), the figures written beside it, timing and the subjects' grids."""
    from elite.evaluate.several import report_lines

    lines = [
        "# DreamBench evaluation",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        "",
        "CLIP-I / DINO-I: mean cosine over all (generated, real) pairs of a subject; CLIP-T: generated image vs "
        "the prompt with the class word instead of S*.",
        *_overall_lines(metrics),
        *_table2_lines(metrics),
        *_breakdown_lines(metrics),
        *_sweep_lines(metrics),
        *_block_lines(metrics),
        *world_lines(metrics),
        *report_lines(metrics),
        "",
        *_figure_lines(path.parent),
        *_timing_lines(metrics["timing"]),
        "",
        "## Grids",
        "",
    ]
    for subject, grid in grids.items():
        lines += [f"### {subject}", "", f"![{subject}]({grid.relative_to(path.parent).as_posix()})", ""]
    with atomic_file(path, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _overall_lines(metrics: dict) -> list[str]:
    ctx, overall = metrics["context"], metrics["overall"]
    rows = [_score_row("ELITE", overall)]
    if "baseline" in ctx:
        rows.append(_score_row("base model, class word (no concept)", ctx["baseline"]))
    rows.append(["real vs real (upper bound)", None, ctx["real"]["clip_i"], ctx["real"]["dino_i"], None])
    return ["", "## Overall", "", *_table(["", *SCORE_HEADERS, "images"], rows)]


SCORE_COLUMNS = (("clip_t", "CLIP-T"), ("clip_i", "CLIP-I"), ("dino_i", "DINO-I"))  # (metric key, header), shown order
SCORE_HEADERS = tuple(header for _, header in SCORE_COLUMNS)


def _score_row(name: str, v: dict, *extra) -> list:
    """A table row: name, the SCORE_COLUMNS, `extra` columns, images."""
    return [name, *(v[key] for key, _ in SCORE_COLUMNS), *extra, v["images"]]


TABLE2_NAMES = {
    "elite": "ELITE (one forward pass)",
    "ti": "Textual Inversion",
    "xti": "Extended Textual Inversion (P+)",
}


def _table2_lines(metrics: dict) -> list[str]:
    if not metrics.get("table2"):
        return []
    rows = [_score_row(TABLE2_NAMES[k], v, v["time_s"]) for k, v in metrics["table2"].items()]
    return [
        "",
        "## ELITE vs optimisation baselines (paper Table 2, on the baselines' subjects)",
        "",
        *_table(["", *SCORE_HEADERS, "time per concept (s)", "images"], rows),
    ]


def _breakdown_lines(metrics: dict) -> list[str]:
    lines = []
    for title, key in (("Per prompt family", "families"), ("Per subject", "subjects")):
        rows = [_score_row(name, v) for name, v in metrics[key].items()]
        lines += ["", f"## {title}", "", *_table(["", *SCORE_HEADERS, "images"], rows)]
    return lines


def _sweep_lines(metrics: dict) -> list[str]:
    if not metrics["sweep"]:
        return []
    from elite.evaluate.sweep import sweep_rows

    rows = [_score_row(f"{r['lam']:g}", r) for r in sweep_rows(metrics["sweep"])]
    return ["", "## Lambda sweep", "", *_table(["lambda", *SCORE_HEADERS, "images"], rows)]


def _block_lines(metrics: dict) -> list[str]:
    """The sweep by block: scores and, in a world with probes, identity / colour / scene accuracy per row."""
    if not metrics.get("blocks"):
        return []
    from elite.evaluate.sweep import ACCURACY, block_rows_of, has_accuracy

    rows = block_rows_of(metrics["blocks"])
    accuracy = ACCURACY if has_accuracy(rows) else ()
    table = [_score_row(r["row"], r, *(r[key] for key, _ in accuracy)) for r in rows]
    return [
        "",
        "## Lambda by block",
        "",
        "The local branch on one cross-attention part or block at a time (0 elsewhere), on the sweep's prompts.",
        "",
        *_table(["row", *SCORE_HEADERS, *(label for _, label in accuracy), "images"], table),
    ]


def _figure_lines(folder: Path) -> list[str]:
    """The figures the stage wrote beside the report (the lambda sweep, by value and by block; every row with its
    interval)."""
    lines = []
    if (folder / "lambda_sweep.png").is_file():
        lines += ["![lambda sweep](lambda_sweep.png)", ""]
    if (folder / "lambda_blocks.png").is_file():
        lines += ["![lambda by block](lambda_blocks.png)", ""]
    if (folder / "rows.png").is_file():
        lines += ["## Every row with its 95% interval", "", "![rows with intervals](rows.png)", ""]
    return lines


def _timing_lines(t: dict) -> list[str]:
    base = t["baseline_generate_s_per_image_mean"]
    return [
        "## Timing",
        "",
        f"- encode per concept: mean {_fmt(t['encode_s_mean'])} s, max {_fmt(t['encode_s_max'])} s",
        f"- generation per image (ELITE): {_fmt(t['generate_s_per_image_mean'])} s",
        *([f"- generation per image (base model): {_fmt(base)} s"] if base is not None else []),
    ]


# --- FiftyOne ---------------------------------------------------------------------------------------------
FIELDS = (
    "variant",
    "subject",
    "class",
    "live",
    "family",
    "prompt",
    "text",
    "lam",
    "index",
    "seed",
    *SCORES,
    "generate_s",
)


def write_fiftyone(name: str, rows: list[dict]) -> int:
    """A persistent FiftyOne dataset (replaced if it exists): one sample per generated image with its scores. The
    sweep by block's images carry their row's name in `row` and no number in `lam` (theirs is per block)."""
    from elite.data.fiftyone_db import fiftyone  # the project's FiftyOne settings (bundled mongod, no tracking)

    fo = fiftyone()

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    samples = []
    for r in rows:
        sample = fo.Sample(filepath=str(Path(r["path"]).resolve()), tags=[r["variant"], r["subject"]])
        for key in FIELDS:
            sample["class_word" if key == "class" else key] = r[key]  # `class` reads badly in queries
        if "row" in r:
            sample["lam"], sample["row"] = None, r["row"]
        samples.append(sample)
    dataset.add_samples(samples)
    return len(dataset)
