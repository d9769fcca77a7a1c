"""Bootstrap intervals of a row's mean: seeded, around the mean, wider when the subjects disagree."""

from __future__ import annotations

import numpy as np

from elite.evaluate.spread import differs, interval, spread


def rows(means: list[float], per_subject: int = 20, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"subject": f"s{k}", "identity_acc": float(rng.random() < m)}
        for k, m in enumerate(means)
        for _ in range(per_subject)
    ]


def test_interval_is_seeded_and_holds_the_mean():
    data = rows([0.5, 0.6, 0.4, 0.5])
    lo, hi = interval(data, "identity_acc")
    mean = np.mean([r["identity_acc"] for r in data])
    assert lo < mean < hi and interval(data, "identity_acc") == (lo, hi)
    assert interval(data, "clip_i") is None


def test_subjects_that_disagree_widen_the_interval():
    agree, disagree = rows([0.5] * 6), rows([0.05, 0.95, 0.05, 0.95, 0.05, 0.95])
    width = [np.subtract(*interval(d, "identity_acc")[::-1]) for d in (agree, disagree)]
    assert width[1] > 1.5 * width[0]


def test_differs_needs_intervals_that_do_not_overlap():
    high, low, near = (
        spread(rows([m] * 6, 40, seed=s), ("identity_acc",)) for s, m in ((1, 0.8), (2, 0.2), (3, 0.78))
    )
    assert differs(high, low, "identity_acc") and not differs(high, near, "identity_acc")
