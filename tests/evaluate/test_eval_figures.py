"""The evaluation's figures carry their intervals: the lambda sweep has each lambda's 95% interval in
metrics["sweep"], as CSV columns (the DVC plot) and as error bars (a lambda whose subjects disagree gets the wider
bar); the rows figure draws every row's interval, and the oracles on the identity panel."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from elite.evaluate.report import build_metrics
from elite.evaluate.rows_figure import rows_figure
from elite.evaluate.sweep import sweep_figure, sweep_rows, write_sweep_csv


def sweep_rows_of(lam: float, subject_means: list[float], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "variant": "sweep",
            "subject": f"s{k}",
            "family": "f",
            "lam": lam,
            "n_real": 2,
            "clip_i": float(np.clip(m + rng.normal(0, 0.02), 0, 1)),
            "clip_t": 0.3,
            "dino_i": 0.4,
            "generate_s": 1.0,
            "identity_acc": float(rng.random() < m),
            "colour_acc": 1.0,
            "scene_acc": 0.5,
        }
        for k, m in enumerate(subject_means)
        for _ in range(8)
    ]


@pytest.fixture(scope="module")
def sweep():
    rows = sweep_rows_of(0.0, [0.5] * 4, 1) + sweep_rows_of(0.8, [0.05, 0.95, 0.05, 0.95], 2)
    return build_metrics(rows, {}, {})["sweep"]


def test_each_lambda_has_an_interval_around_its_mean(sweep):
    for row in sweep.values():
        for key in ("clip_i", "identity_acc"):
            assert row[f"{key}_lo"] <= row[key] <= row[f"{key}_hi"]
    assert sweep["lam_0.8"]["clip_t_lo"] == sweep["lam_0.8"]["clip_t_hi"] == pytest.approx(0.3)  # no spread at all
    width = {lam: row["clip_i_hi"] - row["clip_i_lo"] for lam, row in sweep.items()}
    assert width["lam_0.8"] > 3 * width["lam_0"]  # its subjects disagree


def test_the_csv_and_the_figure_carry_the_bounds(sweep, tmp_path):
    rows = sweep_rows(sweep)
    write_sweep_csv(tmp_path / "sweep.csv", rows)
    with open(tmp_path / "sweep.csv") as fh:
        written = list(csv.DictReader(fh))
    assert [r["lam"] for r in written] == ["0.0", "0.8"]
    assert float(written[1]["identity_acc_lo"]) == pytest.approx(rows[1]["identity_acc_lo"], abs=1e-6)
    assert {"clip_i_hi", "scene_acc_lo"} <= set(written[0])
    fig = sweep_figure(rows)
    for ax in fig.axes:
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert bars and all(c.has_yerr for c in bars), ax.get_xlabel()
    clip_i = fig.axes[0].containers[0]  # the left panel's first series: CLIP-I against lambda
    (low, high) = clip_i.lines[2][0].get_segments()[1]  # the bar of lambda 0.8: from its _lo to its _hi
    assert low[1] == pytest.approx(rows[1]["clip_i_lo"]) and high[1] == pytest.approx(rows[1]["clip_i_hi"])


def test_the_rows_figure_draws_each_rows_interval_and_the_oracles():
    row = {"identity_acc": 0.3, "colour_acc": 0.6, "pattern_acc": 0.4, "scene_acc": 0.5, "clip_t": 0.3}
    bounds = {f"{k}_{end}": v + (-0.1 if end == "lo" else 0.1) for k, v in row.items() for end in ("lo", "hi")}
    metrics = {
        "overall": row,
        "context": {"baseline": {**row, "identity_acc": 0.02}, "named": row},  # named: no interval, not drawn
        "table2": {},
        "spread": {"elite": bounds, "baseline": {**bounds, "identity_acc_lo": 0.0, "identity_acc_hi": 0.05}},
        "oracles": {"colour_only": {"identity_acc": 0.49}, "pattern_only": {"identity_acc": 0.33}},
    }
    fig = rows_figure(metrics)
    assert [ax.get_title() for ax in fig.axes] == ["identity", "colour", "pattern", "scene"]
    identity = fig.axes[0]
    assert [t.get_text() for t in identity.get_yticklabels()] == ["class word", "ELITE"]
    spans = sorted(tuple(c.lines[2][0].get_segments()[0][:, 0]) for c in identity.containers)
    assert spans == [pytest.approx((0.0, 0.05)), pytest.approx((0.2, 0.4))]
    assert sorted(line.get_xdata()[0] for line in identity.get_lines() if line.get_linestyle() == "--") == [0.33, 0.49]
    seeds = {"overall.identity_acc": {"mean": 0.2, "sd": 0.1, "n": 3, "values": [0.1, 0.2, 0.3]}}
    with_seeds = rows_figure(metrics, seeds).axes[0]
    dots = [line for line in with_seeds.get_lines() if line.get_color() == "grey"]
    assert len(dots) == 1 and list(dots[0].get_xdata()) == [0.1, 0.2, 0.3]  # ELITE's three training seeds
    diamond = [c for c in with_seeds.containers if c.lines[0].get_marker() == "D"]
    assert len(diamond) == 1 and tuple(diamond[0].lines[2][0].get_segments()[0][:, 0]) == pytest.approx((0.1, 0.3))
    no_world = {"overall": {"clip_t": 0.3}, "context": {}, "table2": {}, "spread": {"elite": bounds}}
    assert [ax.get_title() for ax in rows_figure(no_world).axes] == ["CLIP-T"]
    assert rows_figure({**no_world, "spread": {}}) is None  # made before intervals were recorded
