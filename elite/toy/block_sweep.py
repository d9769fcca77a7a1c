"""What each cross-attention block's local term carries (issue 27): the toy world's lambda sweep by block.

ELITE is sampled as the mapper's gate samples it (elite.toy.word_gate: each concept encoded from one fresh render,
"a S* on the <scene>", seen and held-out concepts, read by the probes), once per row of lambdas:

- `global word only`: lambda 0 everywhere (no local branch);
- `every block`: the same lambda on every cross-attention layer (the pipeline's plain number);
- one row per part (down, mid, up) and per block of a part that has several (`up.block_1`, ...): the lambda
  on that part or block only, 0 elsewhere (the per-block dict of elite.models.local_control).

A row's colour / pattern / class / scene next to the global word's row says what the local term adds there, and
what it costs the prompt's scene. Writes a JSON table and, with `--figure`, one panel per score.
Run: `python -m elite.toy.block_sweep --models models/pretrained --weights models/elite --out block_sweep.json`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from elite.errors import EliteError
from elite.io import atomic_file, write_json
from elite.models.attention import KVProjections, cross_attention_layers
from elite.models.local_control import block_rows
from elite.toy.heldout import Concept
from elite.toy.word_gate import WordSampling, held_out_of, judge_words, load_judged, sampling_parser

SCORES = ("joint", "colour", "pattern", "class", "scene")


def sweep_blocks(models: Path, weights: Path, held_out: list[Concept], n: int, lam: float, how: WordSampling) -> dict:
    """{"lam": lam, ..., "rows": [{"row", "lam", "seen", "held_out"}]} over `block_rows` (in their order); each
    row's seen / held-out scores are the mapper gate's (elite.toy.word_gate), sampled as `how` with its lambda
    replaced by the row's."""
    pipe, probes = load_judged(models, weights)
    rows = block_rows((KVProjections.key(layer) for layer in cross_attention_layers(pipe.unet)), lam)
    out: dict = {"lam": lam, "guidance": how.guidance, "steps": how.steps, "images": n, "rows": []}
    for i, (name, row_lam) in enumerate(rows.items(), 1):
        report = judge_words(pipe, probes, held_out, n, replace(how, lam=row_lam))
        out["rows"].append({"row": name, "lam": row_lam, "seen": report["seen"], "held_out": report["held_out"]})
        held = report["held_out"]
        print(f"[{i}/{len(rows)}] {name}: held-out " + " ".join(f"{k} {held[k]:.2f}" for k in SCORES), flush=True)
    return out


def table(sweep: dict) -> str:
    """A markdown table: one line per row, held-out then seen scores."""
    head = "| row | " + " | ".join(f"held-out {k}" for k in SCORES) + " | seen joint | seen scene |"
    lines = [head, "|" + "---|" * (len(SCORES) + 3)]
    for row in sweep["rows"]:
        name, held, seen = row["row"], row["held_out"], row["seen"]
        cells = [f"{held[k]:.2f}" for k in SCORES] + [f"{seen['joint']:.2f}", f"{seen['scene']:.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion p of n (it stays inside [0, 1], also at 0 and 1)."""
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half / (1 + z * z / n)), min(1.0, centre + half / (1 + z * z / n))


def figure(sweep: dict, path: Path) -> None:
    """One panel per score (held-out concepts), one bar per row; the global word's value as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["row"] for row in sweep["rows"]]
    fig, axes = plt.subplots(1, len(SCORES), figsize=(2.6 * len(SCORES) + 1.5, 0.32 * len(names) + 1.4), sharey=True)
    for ax, key in zip(axes, SCORES):
        values = [row["held_out"][key] for row in sweep["rows"]]
        lo, hi = zip(*(wilson(v, row["held_out"]["images"]) for v, row in zip(values, sweep["rows"])))
        xerr = [[v - a for v, a in zip(values, lo)], [b - v for v, b in zip(values, hi)]]
        colours = ["grey"] + ["tab:red"] * (len(names) - 1)
        ax.barh(range(len(names)), values, xerr=xerr, color=colours, error_kw={"lw": 1, "capsize": 2})
        ax.axvline(values[0], ls="--", lw=1, color="black")
        ax.set_title(key)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
    axes[0].set_yticks(range(len(names)), names)
    fig.suptitle(
        f"Held-out concepts, {sweep['images']} images a row (95% Wilson intervals): lambda {sweep['lam']} on one "
        "block at a time"
    )
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = sampling_parser(__doc__, "models/elite", "images per set (seen, held-out) and row")
    parser.add_argument("--lam", type=float, default=0.8, help="lambda of the blocks a row turns on")
    parser.add_argument("--out", type=Path, default=Path("block_sweep.json"))
    parser.add_argument("--figure", type=Path, default=None, help="also draw the held-out panels (png/svg)")
    args = parser.parse_args(argv)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    how = WordSampling(guidance=args.guidance, steps=args.steps)
    try:
        sweep = sweep_blocks(args.models, args.weights, held_out_of(args.models), args.images, args.lam, how)
    except EliteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_json(args.out, sweep)
    if args.figure:
        figure(sweep, args.figure)
    print(table(sweep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
