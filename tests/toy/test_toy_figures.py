"""`make figures`: the README's toy figures from an evaluation's outputs; without them a one-line error."""

from __future__ import annotations

from PIL import Image

from elite.toy.figures import main


def test_grids_are_stacked_and_the_sweep_copied(tmp_path):
    (tmp_path / "eval" / "grids").mkdir(parents=True)
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (1200, 100 + i), colour).save(tmp_path / "eval" / "grids" / f"{colour}.png")
    Image.new("RGB", (300, 200), "white").save(tmp_path / "eval" / "lambda_sweep.png")
    assert main(["--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "docs")]) == 0
    grid = Image.open(tmp_path / "docs" / "held_out_grid.png")
    assert grid.width == 900 and grid.height == 75 + 76  # each scaled to the width, stacked blue then red
    assert grid.getpixel((10, 10)) == (0, 0, 255) and grid.getpixel((10, 140)) == (255, 0, 0)
    assert Image.open(tmp_path / "docs" / "lambda_sweep.png").size == (300, 200)


def test_without_an_evaluation_the_error_says_what_to_run(tmp_path, capsys):
    assert main(["--eval", str(tmp_path / "nothing"), "--out", str(tmp_path / "docs")]) == 2
    assert "run the evaluation first (make run)" in capsys.readouterr().err
    assert not (tmp_path / "docs").exists()
