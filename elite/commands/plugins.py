"""The plugins stage: `elite plugins` writes, per stage that runs a world plug-in, the plug-in code the profile
selects for it (elite/plugins.py `stage_code`: entry point, files, their sha256) to <plugins.out>/<stage>.json.

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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="write the plug-in code each stage runs on this profile (plugins.out)")
    p.set_defaults(func=plugins_cmd)


def plugins_cmd(args) -> None:
    from elite.io import write_text
    from elite.plugins import stage_code

    params = load_params(args.params, args.profile)
    out = Path(params.plugins.out)
    for stage, text in stage_code(params).items():
        path = out / f"{stage}.json"
        write_text(path, text)
        selected = json.loads(text)
        print(f"{stage}: {selected['entry_point'] or 'no plug-in'} ({len(selected['files'])} files) -> {path}")
