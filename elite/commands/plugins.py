"""The plugins stage: `elite plugins` writes, per stage that runs a world plug-in, the plug-in code the profile
selects for it (elite/plugins.py `code`: entry point, files, their sha256) to <plugins.out>/<stage>.json.

dvc.yaml lists that file as a dep of the stage instead of the plug-in's files: DVC deps cannot follow a param, and
a stage listing elite/toy/ would go stale on every profile when the toy world changes. The files hold no time
and no absolute path: a run that finds the same code writes the same bytes, and DVC leaves the stages below up to
date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elite.config import load_params
from elite.plugins import DREAMBENCH, MODELS, RELEASES, SCORERS, code

# stage -> (entry-point group, the param naming the plug-in). evaluate runs the scorer registered under the name of
# the world that wrote its evaluation set (dreambench.source; elite/evaluate/scorers.py): on the paper profile
# (dreambench.source: download) no scorer code runs at all, on the toy profile elite/toy/scoring.py and its imports.
STAGES = {
    "prepare_models": (MODELS, "models.base"),
    "download": (RELEASES, "download.source"),
    "dreambench": (DREAMBENCH, "dreambench.source"),
    "evaluate": (SCORERS, "dreambench.source"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="write the plug-in code each stage runs on this profile (plugins.out)")
    p.set_defaults(func=plugins_cmd)


def fingerprints(params) -> dict[str, str]:
    """stage -> the text of its <stage>.json for this profile."""
    out = {}
    for stage, (group, field) in STAGES.items():
        section, key = field.split(".")
        selected = code(group, getattr(getattr(params, section), key), field)
        out[stage] = json.dumps({"stage": stage, "selected_by": field, **selected}, indent=1, sort_keys=True) + "\n"
    return out


def plugins_cmd(args) -> None:
    from elite.io import write_text

    params = load_params(args.params, args.profile)
    out = Path(params.plugins.out)
    for stage, text in fingerprints(params).items():
        path = out / f"{stage}.json"
        write_text(path, text)
        selected = json.loads(text)
        print(f"{stage}: {selected['entry_point'] or 'no plug-in'} ({len(selected['files'])} files) -> {path}")
