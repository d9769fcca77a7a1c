"""The README's toy-world figures, from an evaluation's outputs: `make figures` (after `make run`).

    python -m elite.toy.figures --eval data/eval --out docs/toy

Writes `held_out_grid.png` (every held-out concept's grid from data/eval/grids, stacked: the concept, its
mask, then ELITE's images per prompt) and copies `lambda_sweep.png`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from elite.io import atomic_file


def stack(paths: list[Path], max_width: int) -> Image.Image:
    tiles = [Image.open(p).convert("RGB") for p in paths]
    width = min(max_width, max(t.width for t in tiles))
    tiles = [t.resize((width, round(t.height * width / t.width)), Image.LANCZOS) for t in tiles]
    out = Image.new("RGB", (width, sum(t.height for t in tiles)), (255, 255, 255))
    y = 0
    for tile in tiles:
        out.paste(tile, (0, y))
        y += tile.height
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", default="data/eval", help="the evaluate stage's output folder")
    parser.add_argument("--out", default="docs/toy")
    parser.add_argument("--max-width", type=int, default=900)
    args = parser.parse_args(argv)
    grids = sorted((Path(args.eval) / "grids").glob("*.png"))
    sweep = Path(args.eval) / "lambda_sweep.png"
    if not grids or not sweep.is_file():
        print(f"{args.eval}: no grids/*.png or lambda_sweep.png; run the evaluation first (make run)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "held_out_grid.png", suffix=".png") as tmp:
        stack(grids, args.max_width).save(tmp, optimize=True)
    with atomic_file(out / "lambda_sweep.png", suffix=".png") as tmp:
        shutil.copyfile(sweep, tmp)
    print(f"wrote {out / 'held_out_grid.png'} ({len(grids)} concepts) and {out / 'lambda_sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
