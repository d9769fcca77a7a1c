"""`elite check-reference`: a run agrees with the committed reference when its numbers sit in the reference's
intervals, and a run that moved says so; a reference without intervals is a one-line error."""

from __future__ import annotations

import copy

import pytest

from elite.errors import EliteError
from elite.evaluate.reference import compare


def metrics(identity: float, lo: float, hi: float) -> dict:
    return {
        "overall": {"identity_acc": identity, "clip_i": 0.5},
        "context": {"baseline": {"identity_acc": 0.05}},
        "spread": {
            "elite": {"identity_acc_lo": lo, "identity_acc_hi": hi, "clip_i_lo": 0.48, "clip_i_hi": 0.52},
            "baseline": {"identity_acc_lo": 0.02, "identity_acc_hi": 0.08},
        },
    }


def test_a_run_inside_the_interval_agrees_and_a_moved_one_does_not():
    reference = metrics(0.60, 0.52, 0.68)
    same = compare(metrics(0.63, 0.55, 0.71), reference)
    assert len(same) == 3 and all(r["agrees"] for r in same)
    moved = compare(metrics(0.30, 0.25, 0.35), reference)
    off = [(r["row"], r["metric"]) for r in moved if not r["agrees"]]
    assert off == [("elite", "identity_acc")]
    gone = copy.deepcopy(reference)
    del gone["overall"]["identity_acc"]
    assert not [r for r in compare(gone, reference) if r["metric"] == "identity_acc" and r["row"] == "elite"][0][
        "agrees"
    ]


def test_a_reference_without_intervals_is_a_one_line_error():
    with pytest.raises(EliteError, match="no `spread` block"):
        compare(metrics(0.6, 0.5, 0.7), {"overall": {"identity_acc": 0.6}})


def test_each_lambda_of_the_sweep_is_checked_against_its_own_interval():
    reference = metrics(0.60, 0.52, 0.68)
    reference["sweep"] = {
        "lam_0": {"identity_acc": 0.10, "identity_acc_lo": 0.05, "identity_acc_hi": 0.15},
        "lam_0.8": {"identity_acc": 0.60, "identity_acc_lo": 0.50, "identity_acc_hi": 0.70},
    }
    workspace = copy.deepcopy(reference)
    workspace["sweep"]["lam_0.8"].update(identity_acc=0.20, identity_acc_lo=0.15, identity_acc_hi=0.25)
    lines = {(r["row"], r["metric"]): r for r in compare(workspace, reference)}
    assert lines[("sweep.lam_0", "identity_acc")]["agrees"]
    assert not lines[("sweep.lam_0.8", "identity_acc")]["agrees"]  # 0.20 + 0.05 falls short of 0.50
    del workspace["sweep"]["lam_0"]
    assert not {(r["row"], r["metric"]): r for r in compare(workspace, reference)}[("sweep.lam_0", "identity_acc")][
        "agrees"
    ]  # a lambda the workspace did not run does not agree


def test_each_row_of_the_sweep_by_block_is_checked_against_its_own_interval():
    reference = metrics(0.60, 0.52, 0.68)
    reference["blocks"] = {
        "mid": {"order": 2, "colour_acc": 0.10, "colour_acc_lo": 0.05, "colour_acc_hi": 0.15},
        "up.block_1": {"order": 3, "colour_acc": 0.50, "colour_acc_lo": 0.40, "colour_acc_hi": 0.60},
    }
    workspace = copy.deepcopy(reference)
    workspace["blocks"]["up.block_1"].update(colour_acc=0.10, colour_acc_lo=0.05, colour_acc_hi=0.15)
    lines = {(r["row"], r["metric"]): r for r in compare(workspace, reference)}
    assert lines[("blocks.mid", "colour_acc")]["agrees"]
    assert not lines[("blocks.up.block_1", "colour_acc")]["agrees"]
    assert ("blocks.mid", "order") not in lines  # only what has an interval


def test_the_rows_of_elite_from_several_images_are_checked():
    reference = metrics(0.60, 0.52, 0.68)
    reference["images"] = {"2": {"identity_acc": 0.40}}
    reference["spread"]["images2"] = {"identity_acc_lo": 0.30, "identity_acc_hi": 0.50}
    workspace = copy.deepcopy(reference)
    workspace["images"]["2"]["identity_acc"] = 0.10
    lines = {(r["row"], r["metric"]): r for r in compare(workspace, reference)}
    assert lines[("images2", "identity_acc")]["reference"] == 0.40
    assert not lines[("images2", "identity_acc")]["agrees"]
