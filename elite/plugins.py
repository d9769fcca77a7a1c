"""World plug-ins: what a world (a profile's stand-in models, its images, its concept set, its scorers) adds to
the stages, found through entry points, so that no stage imports a world.

A package registers callables in pyproject.toml (`[project.entry-points."<group>"]`), under the name that
params.yaml then uses as the source; the toy world (elite/toy) registers under `toy`:

| group              | callable                            | chosen by              | stage          |
|--------------------|-------------------------------------|------------------------|----------------|
| `elite.models`     | `(params, out: Path) -> None`       | `models.base`          | prepare_models |
| `elite.releases`   | `(params, out: Path) -> Path`       | `download.source`      | download       |
| `elite.dreambench` | `(params, out: Path) -> Path`       | `dreambench.source`    | dreambench     |
| `elite.scorers`    | `(evaluate_cfg, params) -> scorer`  | (first that answers)   | evaluate       |

`models` writes every model folder of the profile into `out`; `releases` writes an Open Images-layout release
(`<split>/`, boxes and masks CSVs) under `out` and returns its root; `dreambench` writes a DreamBench-layout folder
(one folder of images per subject, prompts file) and returns it. Scorers: elite/evaluate/scorers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from elite.errors import EliteError

MODELS, RELEASES, DREAMBENCH = "elite.models", "elite.releases", "elite.dreambench"


def names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def plugin(group: str, name: str, field: str) -> Callable[..., Any] | None:
    """The callable registered as `name` in `group`, or None when `name` is not a plug-in of that group."""
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        return None
    try:
        return found[0].load()
    except ImportError as exc:  # registered, but its package is broken or half installed
        raise EliteError(f"{field}: the plug-in {name!r} ({found[0].value}) does not import: {exc}") from exc
