"""The README's toy-world figures, from an evaluation's outputs: `make figures` (after `make run`).

    python -m elite.toy.figures --eval data/eval --out docs/toy

`held_out_grid.png`: one row per held-out concept: its concept image; every row of the evaluation
(class word, identity named, TI, XTI, ELITE global only, ELITE) on the first prompt; then ELITE on each
other prompt (first seed everywhere). `lambda_sweep.png`: copied from the evaluation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from elite.io import atomic_file

ROWS = {
    "baseline": "class word",
    "named": "named",
    "ti": "TI",
    "xti": "XTI",
    "global": "ELITE global",
    "elite": "ELITE",
}


def _open(path: Path, tile: int) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB").resize((tile, tile), Image.NEAREST)


def held_out_grid(eval_dir: Path, root: Path, tile: int) -> Image.Image:
    subjects = sorted(p for p in (eval_dir / "elite").iterdir() if (p / "concept.json").is_file())
    if not subjects:
        raise FileNotFoundError(f"{eval_dir / 'elite'}: no evaluated concepts")
    prompts = {s.name: sorted(p.name for p in s.iterdir() if (p / "0.png").is_file()) for s in subjects}
    first = {name: folders[0] for name, folders in prompts.items()}
    rows = [v for v in ROWS if all((eval_dir / v / s / first[s] / "0.png").is_file() for s in first)]
    others = prompts[subjects[0].name][1:]
    labels = ["concept"] + [ROWS[v] for v in rows] + [p.split("_on_the_")[-1].replace("_", " ") for p in others]
    label_h = 14
    grid = Image.new("RGB", (tile * len(labels), label_h + tile * len(subjects)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        draw.text((c * tile + 2, 1), label[: tile // 6], fill=(0, 0, 0))
    for r, subject in enumerate(subjects):
        concept = json.loads((subject / "concept.json").read_text())["image"]
        cells = [root / concept] + [eval_dir / v / subject.name / first[subject.name] / "0.png" for v in rows]
        cells += [subject / p / "0.png" for p in prompts[subject.name][1:]]
        for c, cell in enumerate(cells):
            grid.paste(_open(cell, tile), (c * tile, label_h + r * tile))
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", default="data/eval", help="the evaluate stage's output folder")
    parser.add_argument("--root", default=".", help="the repository root (concept image paths are relative to it)")
    parser.add_argument("--out", default="docs/toy")
    parser.add_argument("--tile", type=int, default=64)
    args = parser.parse_args(argv)
    eval_dir, sweep = Path(args.eval), Path(args.eval) / "lambda_sweep.png"
    if not (eval_dir / "elite").is_dir() or not sweep.is_file():
        message = f"{eval_dir}: no elite/ images or lambda_sweep.png; run the evaluation first (make run)"
        print(message, file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "held_out_grid.png", suffix=".png") as tmp:
        held_out_grid(eval_dir, Path(args.root), args.tile).save(tmp, optimize=True)
    with atomic_file(out / "lambda_sweep.png", suffix=".png") as tmp:
        shutil.copyfile(sweep, tmp)
    for name in ("held_out_grid.png", "lambda_sweep.png"):
        (out / name).chmod(0o644)
    print(f"wrote {out / 'held_out_grid.png'} and {out / 'lambda_sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
