"""The lambda sweep (paper Fig. 12): CLIP-I / CLIP-T / DINO-I per lambda as a DVC plot CSV and a figure; on the
toy profile also the probes' identity and scene accuracy (the trade-off measured exactly). Each lambda's 95%
interval (metrics["sweep"]'s `<metric>_lo/_hi`, elite/evaluate/spread.py) is a CSV column and an error bar.
The sweep by block (metrics["blocks"]: lambda on one cross-attention part or block at a time) is a second figure,
one panel per score, a bar per row with its interval."""

from __future__ import annotations

import csv
from pathlib import Path

from elite.evaluate.spread import bar
from elite.io import atomic_file

ACCURACY = (("identity_acc", "identity (joint)"), ("colour_acc", "colour"), ("scene_acc", "scene"))


def has_accuracy(rows: list[dict]) -> bool:
    return bool(rows) and all(row.get("identity_acc") is not None for row in rows)


def sweep_rows(sweep: dict[str, dict]) -> list[dict]:
    """metrics["sweep"] ({"lam_0.6": {...}}) -> rows sorted by lambda."""
    return sorted(
        ({"lam": float(key.removeprefix("lam_")), **value} for key, value in sweep.items()), key=lambda r: r["lam"]
    )


def columns_of(rows: list[dict]) -> tuple[str, ...]:
    """lam, images, each score (and accuracy when scored) with its interval's bounds when the rows have them."""
    keys = ("clip_i", "clip_t", "dino_i")
    accuracy = tuple(k for k, _ in ACCURACY) if has_accuracy(rows) else ()
    bounds = tuple(f"{k}_{end}" for k in keys + accuracy for end in ("lo", "hi") if rows and f"{k}_lo" in rows[0])
    return ("lam", *keys, "images", *accuracy, *bounds)


def write_sweep_csv(path: Path, rows: list[dict]) -> None:
    """The DVC plot: one row per lambda (x = lam; y = clip_i, clip_t, dino_i; the accuracies when scored; the
    95% bounds of each)."""
    columns = columns_of(rows)
    with atomic_file(Path(path), suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if row.get(k) is None else round(row[k], 6) if isinstance(row[k], float) else row[k])
                    for k in columns
                }
            )


def _bars(rows: list[dict], key: str) -> list[list[float]] | None:
    """matplotlib's yerr/xerr for `key`: distances from each mean to its interval's bounds; None without them."""
    if not all(row.get(f"{key}_lo") is not None for row in rows):
        return None
    below, above = zip(*(bar(r[key], r[f"{key}_lo"], r[f"{key}_hi"]) for r in rows))
    return [list(below), list(above)]


def sweep_figure(rows: list[dict]):
    """Left: each score against lambda. Middle: the CLIP-I / CLIP-T trade-off, points labelled by lambda.
    Right (toy profile): the probes' identity, colour and scene accuracy against lambda. Error bars: each
    lambda's 95% interval over subjects, prompts and seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    accuracy = has_accuracy(rows)
    fig, axes = plt.subplots(1, 3 if accuracy else 2, figsize=(15 if accuracy else 10, 4))
    left, right = axes[0], axes[1]
    lams = [r["lam"] for r in rows]
    for key, label in (("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"), ("dino_i", "DINO-I")):
        left.errorbar(lams, [r[key] for r in rows], yerr=_bars(rows, key), marker="o", capsize=3, label=label)
    left.set_xlabel("lambda (local branch weight)")
    left.set_ylabel("score")
    left.legend()
    left.grid(alpha=0.3)
    right.errorbar(
        [r["clip_i"] for r in rows],
        [r["clip_t"] for r in rows],
        xerr=_bars(rows, "clip_i"),
        yerr=_bars(rows, "clip_t"),
        marker="o",
        capsize=3,
    )
    for r in rows:
        right.annotate(f"{r['lam']:g}", (r["clip_i"], r["clip_t"]), textcoords="offset points", xytext=(4, 4))
    right.xaxis.set_major_locator(MaxNLocator(4))
    right.yaxis.set_major_locator(MaxNLocator(5))
    right.set_xlabel("CLIP-I (image alignment)")
    right.set_ylabel("CLIP-T (text alignment)")
    right.grid(alpha=0.3)
    if accuracy:
        for key, label in ACCURACY:
            axes[2].errorbar(lams, [r[key] for r in rows], yerr=_bars(rows, key), marker="o", capsize=3, label=label)
        axes[2].set_xlabel("lambda (local branch weight)")
        axes[2].set_ylabel("probe accuracy on held-out concepts")
        axes[2].set_ylim(0, 1.05)
        axes[2].legend()
        axes[2].grid(alpha=0.3)
    fig.suptitle("ELITE lambda sweep")
    fig.tight_layout()
    return fig


def block_rows_of(blocks: dict[str, dict]) -> list[dict]:
    """metrics["blocks"] ({"up.block_1": {"order": 6, ...}}) -> rows in the sweep's order, each with its name."""
    return [{"row": name, **value} for name, value in sorted(blocks.items(), key=lambda item: item[1]["order"])]


def blocks_figure(rows: list[dict]):
    """One panel per score (CLIP-I, CLIP-T; identity, colour, scene accuracy when scored), a horizontal bar per row
    of the sweep by block (first row on top), its 95% interval as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"), *(ACCURACY if has_accuracy(rows) else ()))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 0.45 * len(rows) + 1.6), sharey=True)
    ys = list(range(len(rows)))[::-1]
    for ax, (key, label) in zip(axes, panels):
        bars = _bars(rows, key)
        ax.barh(ys, [r[key] for r in rows], xerr=bars, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_title(label)
        ax.grid(axis="x", alpha=0.3)
        if key.endswith("_acc"):
            ax.set_xlim(0, 1.05)
    axes[0].set_yticks(ys, [r["row"] for r in rows])
    fig.suptitle("ELITE lambda by block (the local branch on one part or block, 0 elsewhere)")
    fig.tight_layout()
    return fig
