"""`make figures` (the README's toy figures from an evaluation's outputs; without them a one-line error) and the
lambda sweep's accuracy panel and columns on the toy profile."""

from __future__ import annotations

import csv
import json

from PIL import Image

from elite.evaluate.sweep import sweep_figure, write_sweep_csv
from elite.toy.figures import main

COLOURS = {"baseline": (0, 0, 255), "elite": (255, 0, 0)}


def fake_eval(root):
    """Two concepts, two prompts; rows baseline (first prompt only) and elite (every prompt)."""
    for subject, cls in (("red_plain_ball", "ball"), ("blue_plain_box", "box")):
        Image.new("RGB", (32, 32), (0, 255, 0)).save(root / f"{subject}.png")
        prompts = [f"a_{cls}_on_the_grass", f"a_{cls}_on_the_snow"]
        for variant, colour in COLOURS.items():
            for prompt in prompts if variant == "elite" else prompts[:1]:
                (root / "eval" / variant / subject / prompt).mkdir(parents=True)
                Image.new("RGB", (32, 32), colour).save(root / "eval" / variant / subject / prompt / "0.png")
        (root / "eval" / "elite" / subject / "concept.json").write_text(json.dumps({"image": f"{subject}.png"}))
    Image.new("RGB", (300, 200), "white").save(root / "eval" / "lambda_sweep.png")
    Image.new("RGB", (310, 120), "white").save(root / "eval" / "rows.png")


def test_grid_rows_are_concepts_columns_the_evaluation_rows_then_prompts(tmp_path):
    fake_eval(tmp_path)
    args = ["--eval", str(tmp_path / "eval"), "--root", str(tmp_path), "--out", str(tmp_path / "docs"), "--tile", "20"]
    assert main(args) == 0
    grid = Image.open(tmp_path / "docs" / "held_out_grid.png")
    assert grid.size == (4 * 20, 14 + 2 * 20)  # concept | class word | ELITE | ELITE on the snow; 2 concepts
    row = [grid.getpixel((c * 20 + 10, 14 + 10)) for c in range(4)]
    assert row == [(0, 255, 0), (0, 0, 255), (255, 0, 0), (255, 0, 0)]
    assert Image.open(tmp_path / "docs" / "lambda_sweep.png").size == (300, 200)
    assert Image.open(tmp_path / "docs" / "rows.png").size == (310, 120)


def test_rows_are_drawn_from_the_metrics_with_the_training_seeds(tmp_path):
    fake_eval(tmp_path)
    bounds = {"identity_acc_lo": 0.1, "identity_acc_hi": 0.5}
    metrics = {"overall": {"identity_acc": 0.3}, "context": {}, "table2": {}, "spread": {"elite": bounds}}
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    seeds = {"overall.identity_acc": {"mean": 0.25, "sd": 0.05, "n": 2, "values": [0.2, 0.3]}}
    (tmp_path / "s.json").write_text(json.dumps({"experiments": ["seed-1", "seed-2"], "metrics": seeds}))
    args = ["--eval", str(tmp_path / "eval"), "--root", str(tmp_path), "--out", str(tmp_path / "docs")]
    assert main([*args, "--metrics", str(tmp_path / "m.json"), "--seeds", str(tmp_path / "s.json")]) == 0
    drawn = Image.open(tmp_path / "docs" / "rows.png")
    assert drawn.size != (310, 120)  # drawn, not the evaluation's copied


def test_without_an_evaluation_the_error_says_what_to_run(tmp_path, capsys):
    assert main(["--eval", str(tmp_path / "nothing"), "--out", str(tmp_path / "docs")]) == 2
    assert "run the evaluation first (make run)" in capsys.readouterr().err
    assert not (tmp_path / "docs").exists()


def test_sweep_adds_the_accuracies_when_the_probes_scored(tmp_path):
    scores = {"clip_i": 0.5, "clip_t": 0.3, "dino_i": 0.4, "images": 8}
    acc = {"colour_acc": 0.5}
    toy = [{"lam": lam, **scores, **acc, "identity_acc": lam / 2, "scene_acc": 1 - lam / 2} for lam in (0.0, 1.0)]
    write_sweep_csv(tmp_path / "toy.csv", toy)
    write_sweep_csv(tmp_path / "smoke.csv", [{"lam": 0.0, **scores}])
    with open(tmp_path / "toy.csv") as fh:
        assert [r["identity_acc"] for r in csv.DictReader(fh)] == ["0.0", "0.5"]
    with open(tmp_path / "smoke.csv") as fh:
        assert csv.DictReader(fh).fieldnames == ["lam", "clip_i", "clip_t", "dino_i", "images"]
    assert len(sweep_figure(toy).axes) == 3 and len(sweep_figure([{"lam": 0.0, **scores}]).axes) == 2


def test_several_images_and_two_concepts_grids(tmp_path):
    """With images<k> and pair rows: one row per concept (its images, ELITE from 1 and 2 of them) and one per
    pair (both concept images, then the pair rows present, in a fixed order); without them, no such files."""
    fake_eval(tmp_path)
    args = ["--eval", str(tmp_path / "eval"), "--root", str(tmp_path), "--out", str(tmp_path / "docs"), "--tile", "20"]
    assert main(args) == 0 and not (tmp_path / "docs" / "two_concepts.png").exists()
    assert not (tmp_path / "docs" / "several_images.png").exists()
    rows = {"images2": (255, 255, 0), "pair": (255, 0, 255), "pair_class": (0, 255, 255)}
    for subject, cls in (("red_plain_ball", "ball"), ("blue_plain_box", "box")):
        (tmp_path / "db" / subject).mkdir(parents=True)  # the DreamBench layout: 00 is the concept image
        Image.new("RGB", (32, 32), (0, 255, 0)).save(tmp_path / "db" / subject / "00.png")
        Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "db" / subject / "01.png")
        concept = tmp_path / "eval" / "elite" / subject / "concept.json"
        concept.write_text(json.dumps({"image": f"db/{subject}/00.png"}))
        folder = tmp_path / "eval" / "images2" / subject / f"a_{cls}_on_the_grass"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32), rows["images2"]).save(folder / "0.png")
    for variant in ("pair", "pair_class"):
        folder = tmp_path / "eval" / variant / "red_plain_ball+blue_plain_box" / "a_ball_and_a_box_on_the_grass"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32), rows[variant]).save(folder / "0.png")
    assert main(args) == 0
    several = Image.open(tmp_path / "docs" / "several_images.png")
    assert several.size == (4 * 20, 14 + 2 * 20)  # image 0 | image 1 | 1 image | 2 images; 2 concepts
    assert [several.getpixel((c * 20 + 10, 14 + 10)) for c in range(4)] == [
        (0, 255, 0),
        (9, 9, 9),
        (255, 0, 0),
        rows["images2"],
    ]
    pairs = Image.open(tmp_path / "docs" / "two_concepts.png")
    assert pairs.size == (4 * 20, 14 + 20)  # S1* | S2* | class words | per concept
    assert [pairs.getpixel((c * 20 + 10, 24)) for c in range(2, 4)] == [rows["pair_class"], rows["pair"]]
