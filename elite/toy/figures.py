"""The README's toy-world figures, from an evaluation's outputs: `make figures` (after `make run`).

    python -m elite.toy.figures --eval data/eval --out docs/toy

`held_out_grid.png`: one row per held-out concept: its concept image; every row of the evaluation
(class word, identity named, TI, XTI, ELITE global only, ELITE) on the first prompt; then ELITE on each
other prompt (first seed everywhere). `lambda_sweep.png`, `lambda_blocks.png`: copied from the evaluation.
`rows.png` (every row with its 95% interval): drawn from --metrics, with each training seed of --seeds (`elite
seeds summary`) when given, else copied from the evaluation. When the evaluation has them (issue 16):
`several_images.png`, one row per concept: its first three images, then ELITE from 1, 2 and 3 of them on the first
prompt; `two_concepts.png`, one row per pair: both concept images, then the class words, the identities named,
ELITE naive and ELITE per concept on the first pair prompt.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from elite.evaluate.rows_figure import rows_figure
from elite.io import atomic_file, save_figure

ROWS = {
    "baseline": "class word",
    "named": "named",
    "ti": "TI",
    "xti": "XTI",
    "global": "ELITE global",
    "elite": "ELITE",
}
PAIR_ROWS = {"pair_class": "class words", "pair_named": "named", "pair_naive": "naive", "pair": "per concept"}


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
    cells = []
    for subject in subjects:
        cells.append(
            [_concept_image(eval_dir, root, subject.name)]
            + [eval_dir / v / subject.name / first[subject.name] / "0.png" for v in rows]
            + [subject / p / "0.png" for p in prompts[subject.name][1:]]
        )
    return _labelled(labels, cells, tile)


def _labelled(labels: list[str], rows: list[list[Path]], tile: int) -> Image.Image:
    label_h = 14
    grid = Image.new("RGB", (tile * len(labels), label_h + tile * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(labels):
        draw.text((c * tile + 2, 1), label[: tile // 6], fill=(0, 0, 0))
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            grid.paste(_open(cell, tile), (c * tile, label_h + r * tile))
    return grid


def _first(folder: Path) -> Path:
    return folder / sorted(p.name for p in folder.iterdir() if (p / "0.png").is_file())[0] / "0.png"


def _concept_image(eval_dir: Path, root: Path, subject: str) -> Path:
    """The image ELITE encoded for `subject` (recorded by the evaluation in elite/<subject>/concept.json)."""
    return root / json.loads((eval_dir / "elite" / subject / "concept.json").read_text())["image"]


def _subject_images(eval_dir: Path, root: Path, subject: str) -> list[Path]:
    """The concept image and the subject's images after it (DreamBench layout: NN.jpg in one folder)."""
    concept = _concept_image(eval_dir, root, subject)
    return [p for p in sorted(concept.parent.glob(f"*{concept.suffix}")) if p.name >= concept.name]


def several_images_grid(eval_dir: Path, root: Path, tile: int) -> Image.Image | None:
    ks = sorted(int(p.name[6:]) for p in eval_dir.glob("images[0-9]*") if p.is_dir())
    if not ks:
        return None
    subjects = sorted(p.name for p in (eval_dir / f"images{ks[0]}").iterdir() if p.is_dir())
    rows = []
    for s in subjects:
        images = _subject_images(eval_dir, root, s)[: max(ks)]
        prompt = _first(eval_dir / f"images{ks[0]}" / s).parent.name
        rows.append(
            images
            + [eval_dir / "elite" / s / prompt / "0.png"]
            + [eval_dir / f"images{k}" / s / prompt / "0.png" for k in ks]
        )
    labels = [f"image {i}" for i in range(max(ks))] + ["1 image"] + [f"{k} images" for k in ks]
    return _labelled(labels, rows, tile)


def two_concepts_grid(eval_dir: Path, root: Path, tile: int) -> Image.Image | None:
    if not (eval_dir / "pair").is_dir():
        return None
    pairs = sorted(p.name for p in (eval_dir / "pair").iterdir() if p.is_dir())
    variants = [v for v in PAIR_ROWS if (eval_dir / v).is_dir()]
    rows = []
    for pair in pairs:
        prompt = _first(eval_dir / "pair" / pair).parent.name
        concepts = [_concept_image(eval_dir, root, s) for s in pair.split("+")]
        rows.append(concepts + [eval_dir / v / pair / prompt / "0.png" for v in variants])
    return _labelled(["S1*", "S2*"] + [PAIR_ROWS[v] for v in variants], rows, tile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", default="data/eval", help="the evaluate stage's output folder")
    parser.add_argument("--root", default=".", help="the repository root (concept image paths are relative to it)")
    parser.add_argument("--out", default="docs/toy")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--metrics", help="metrics/dreambench.json: draw rows.png from it (else: the evaluation's)")
    parser.add_argument(
        "--seeds", help="metrics/seeds.json (`elite seeds summary`): add each training seed to rows.png"
    )
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
    written = ["held_out_grid.png"]
    if args.metrics:  # the rows with their intervals, and each training seed when `elite seeds summary` ran
        seeds_file = Path(args.seeds) if args.seeds else None
        seeds = json.loads(seeds_file.read_text())["metrics"] if seeds_file and seeds_file.is_file() else None
        fig = rows_figure(json.loads(Path(args.metrics).read_text()), seeds)
        if fig is not None:
            save_figure(fig, out / "rows.png")
            written.append("rows.png")
    for name in ("lambda_sweep.png", "lambda_blocks.png", "rows.png"):  # the evaluation's own figures
        if name not in written and (eval_dir / name).is_file():
            with atomic_file(out / name, suffix=".png") as tmp:
                shutil.copyfile(eval_dir / name, tmp)
            written.append(name)
    for name, make in (("several_images.png", several_images_grid), ("two_concepts.png", two_concepts_grid)):
        grid = make(eval_dir, Path(args.root), args.tile)
        if grid is not None:
            with atomic_file(out / name, suffix=".png") as tmp:
                grid.save(tmp, optimize=True)
            written.append(name)
    for name in written:
        (out / name).chmod(0o644)
    print("wrote " + ", ".join(str(out / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
