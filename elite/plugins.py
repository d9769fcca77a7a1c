"""World plug-ins: what a world (a profile's stand-in models, its images, its concept set, its scorers) adds to
the stages, found through entry points, so that no stage imports a world.

A package registers callables in pyproject.toml (`[project.entry-points."<group>"]`), under the name that
params.yaml then uses as the source; the toy world (elite/toy) registers under `toy`:

| group              | callable                            | chosen by              | stage          |
|--------------------|-------------------------------------|------------------------|----------------|
| `elite.models`     | `(params, out: Path) -> None`       | `models.base`          | prepare_models |
| `elite.releases`   | `(params, out: Path) -> Path`       | `download.source`      | download       |
| `elite.dreambench` | `(params, out: Path) -> Path`       | `dreambench.source`    | dreambench     |
| `elite.scorers`    | `(evaluate_cfg, params) -> scorer`  | `dreambench.source`    | evaluate       |

`models` writes every model folder of the profile into `out`; `releases` writes an Open Images-layout release
(`<split>/`, boxes and masks CSVs) under `out` and returns its root; `dreambench` writes a DreamBench-layout folder
(one folder of images per subject, prompts file) and returns it. Scorers: elite/evaluate/scorers.py.

`code(group, name)` is the source a plug-in runs: the module of its entry point and, transitively, the modules of
the entry point's package it imports (read statically, nothing is imported). The `plugins` stage writes it per
stage, so that DVC reruns a stage when the plug-in code the profile selects for it changes, and only then.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from elite.errors import EliteError

MODELS, RELEASES, DREAMBENCH, SCORERS = "elite.models", "elite.releases", "elite.dreambench", "elite.scorers"

# stage -> (entry-point group, the param naming the plug-in). evaluate runs the scorer registered under the name of
# the world that wrote its evaluation set (dreambench.source; elite/evaluate/scorers.py): on the paper profile
# (dreambench.source: download) no scorer code runs at all, on the toy profile elite/toy/scoring.py and its imports.
STAGES = {
    "prepare_models": (MODELS, "models.base"),
    "download": (RELEASES, "download.source"),
    "dreambench": (DREAMBENCH, "dreambench.source"),
    "evaluate": (SCORERS, "dreambench.source"),
}


def names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def _entry_point(group: str, name: str) -> EntryPoint | None:
    return next((ep for ep in entry_points(group=group) if ep.name == name), None)


def plugin(group: str, name: str, field: str) -> Callable[..., Any] | None:
    """The callable registered as `name` in `group`, or None when `name` is not a plug-in of that group."""
    found = _entry_point(group, name)
    if found is None:
        return None
    try:
        return found.load()
    except ImportError as exc:  # registered, but its package is broken or half installed
        raise EliteError(f"{field}: the plug-in {name!r} ({found.value}) does not import: {exc}") from exc


def stage_code(params) -> dict[str, str]:
    """stage -> the text of its plug-in code file (the plugins stage's <stage>.json) for this profile: the same
    bytes for the same code (no time, no absolute path)."""
    out = {}
    for stage, (group, field) in STAGES.items():
        section, key = field.split(".")
        selected = code(group, getattr(getattr(params, section), key), field)
        out[stage] = json.dumps({"stage": stage, "selected_by": field, **selected}, indent=1, sort_keys=True) + "\n"
    return out


def code(group: str, name: str, field: str) -> dict[str, Any]:
    """What the plug-in `name` of `group` runs: its entry point and {file: sha256} of the modules of its package
    it imports, transitively (paths relative to the folder holding the package: `elite/toy/world.py`). Not a
    plug-in: no entry point and no files. Imports made at run time by name (importlib) are not seen."""
    found = _entry_point(group, name)
    if found is None:
        return {"group": group, "name": name, "entry_point": None, "files": {}}
    module = found.module
    package = module.rpartition(".")[0] or module
    spec = find_spec(package)  # imports the package's parents (their __init__), never the plug-in's modules
    if spec is None or spec.origin is None:
        raise EliteError(f"{field}: the plug-in {name!r} ({found.value}): package {package} not found")
    pkg_dir = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
    root = pkg_dir.parents[package.count(".")] if spec.submodule_search_locations else pkg_dir.parent
    files = _imported_files(module, package, root)
    if not files:
        raise EliteError(f"{field}: the plug-in {name!r} ({found.value}): module {module} not found under {root}")
    return {
        "group": group,
        "name": name,
        "entry_point": found.value,
        "files": {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(files)},
    }


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _imported_files(module: str, package: str, root: Path) -> set[Path]:
    """The files of `module` and of the modules of `package` it imports, transitively, with the __init__.py of
    each package of `package` they lie in (importing a module runs them)."""
    inside = lambda name: name == package or name.startswith(package + ".")  # noqa: E731
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(root, name)
        if path is None or path in files:
            continue
        files.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(package.count(".") + 1, len(parts))]  # enclosing packages
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if inside(a.name)]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                if inside(base):  # `from pkg import mod` imports pkg.mod when that is a module
                    todo += [base] + [f"{base}.{a.name}" for a in node.names]
    return files
