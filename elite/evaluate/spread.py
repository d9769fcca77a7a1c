"""How far a row's mean score could move with other concepts, prompts and seeds: a two-level percentile bootstrap.

Each resample draws the subjects with replacement, then, within each drawn subject, its images (every prompt and
generation seed) with replacement, and takes the mean. The 2.5th and 97.5th percentiles of those means are the
row's 95% interval. Two rows differ when their intervals do not overlap (`differs`), which is how the report and
the README decide "A beats B". The draws are seeded, so the interval is the same on every run.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

RESAMPLES = 1000


def interval(rows: list[dict], key: str, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float] | None:
    """95% bootstrap interval of the mean of `key` over `rows` (clustered by row["subject"]); None without values."""
    by_subject: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get(key) is not None:
            by_subject[row["subject"]].append(float(row[key]))
    if not by_subject:
        return None
    groups = [np.asarray(v) for _, v in sorted(by_subject.items())]
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for i in range(resamples):
        picked = [groups[j] for j in rng.integers(len(groups), size=len(groups))]
        values = np.concatenate([g[rng.integers(len(g), size=len(g))] for g in picked])
        means[i] = values.mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def spread(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """{<key>_lo, <key>_hi} for every key with values: flat numbers, so `dvc metrics` shows them."""
    out = {}
    for key in keys:
        found = interval(rows, key)
        if found:
            out[f"{key}_lo"], out[f"{key}_hi"] = found
    return out


def differs(a: dict, b: dict, key: str) -> bool:
    """Do the 95% intervals of `key` in two metric rows (with `<key>_lo/_hi`) not overlap?"""
    return a[f"{key}_lo"] > b[f"{key}_hi"] or b[f"{key}_lo"] > a[f"{key}_hi"]


def bar(value: float, lo: float, hi: float) -> tuple[float, float]:
    """The error bar of a mean with its interval: distances to the bounds, never negative (a percentile bound
    can sit a rounding error, or for the pair-weighted CLIP-I and DINO-I a little more, on the mean's other side)."""
    return max(0.0, value - lo), max(0.0, hi - value)
