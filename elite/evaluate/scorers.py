"""World scorers: how a world whose images can be read exactly (the toy world's probes) plugs into evaluation.

The evaluate stage knows no world. A package registers a factory under the entry-point group `elite.scorers`
(pyproject.toml: `[project.entry-points."elite.scorers"]`) with the name of its world, the name under which it
registers the evaluation set (`dreambench.source`). `find_scorer` calls the factory of the world that wrote the
evaluation set, and no other, with the evaluate section and the whole params; the factory returns None when its
world's files are not there (e.g. no probes). A profile whose evaluation set no world wrote (paper: `download`)
runs no scorer code at all, so that the `plugins` stage can name the scorer code each profile runs. A scorer
adds per-image scores whose keys end in `_acc` or `_rate` (averaged and given bootstrap intervals like CLIP-I), a
`named` row (the concept written out in words), the two-concept rows' scores, and extra blocks for
metrics/dreambench.json (e.g. what its probes can read).
"""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from elite.plugins import SCORERS, plugin


class WorldScorer(Protocol):
    def words(self) -> dict[str, str]:
        """subject -> the concept in words ("red striped ball"): the `named` row's prompt."""

    def score(self, images: list[Image.Image], subject: str, text: str) -> list[dict]:
        """Per image: its `*_acc` scores against the subject and the prompt."""

    def score_pair(self, images: list[Image.Image], pair: tuple[str, str], text: str) -> list[dict]:
        """Per two-concept image: the scores of each concept in its place (`*_acc`, `swap_rate`)."""

    def context(self) -> dict:
        """Blocks added to the metrics (e.g. `probes`: what the scorer reads on clean images; `oracles`)."""


def score_keys(rows: list[dict]) -> list[str]:
    """The world scores present in `rows`, in a stable order."""
    return sorted({k for r in rows for k, v in r.items() if k.endswith(("_acc", "_rate")) and v is not None})


def find_scorer(cfg, params) -> WorldScorer | None:
    """The scorer of the world named by dreambench.source, if that is a world with a scorer and its files are there."""
    factory = plugin(SCORERS, params.dreambench.source, "dreambench.source")
    return None if factory is None else factory(cfg, params)
