"""Does this workspace's evaluation match the committed reference run within the reference's spread?

`elite check-reference` (`make check-reference`) reads metrics/dreambench.json of the workspace and the same file
at a git revision (default HEAD: the committed reference), and checks every row the reference has a 95% interval
for (its `spread` block, elite/evaluate/spread.py, and each lambda of its sweep): the workspace's mean must lie
inside the reference's interval widened by the workspace's own half-width (two noisy estimates of one number
agree when their intervals overlap).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from elite.errors import EliteError

ROW_BLOCKS = {
    "elite": ("overall",),
    "baseline": ("context", "baseline"),
    "named": ("context", "named"),
    "global": ("context", "global"),
    "ti": ("table2", "ti"),
    "xti": ("table2", "xti"),
}


def committed(path: str, rev: str) -> dict:
    try:
        text = subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        raise EliteError(
            f"git show {rev}:{path}: no committed reference metrics ({err}); commit a reference run"
        ) from None
    return json.loads(text)


def row_path(name: str) -> tuple[str, ...]:
    """Where row `name` sits in metrics/dreambench.json: ROW_BLOCKS; images<k> (ELITE from k images):
    images.<k>; any other name: context.<name>."""
    several = re.fullmatch(r"images(\d+)", name)
    return ROW_BLOCKS.get(name) or (("images", several[1]) if several else ("context", name))


def row_block(metrics: dict, name: str) -> dict | None:
    """The block of metrics/dreambench.json that holds row `name` (row_path)."""
    block = metrics
    for key in row_path(name):
        block = block.get(key) if isinstance(block, dict) else None
    return block


def _rows(workspace: dict, reference: dict):
    """(name, reference row, workspace row, reference bounds, workspace bounds) of every row with an interval:
    the `spread` block's rows, then each lambda of the sweep and each row of the sweep by block (their bounds sit in
    the row itself)."""
    for name, bounds in sorted(reference["spread"].items()):
        ws_bounds = workspace.get("spread", {}).get(name, {})
        yield name, row_block(reference, name), row_block(workspace, name), bounds, ws_bounds
    for block in ("sweep", "blocks"):
        for key, ref_row in sorted(reference.get(block, {}).items()):
            ws_row = workspace.get(block, {}).get(key)
            yield f"{block}.{key}", ref_row, ws_row, ref_row, ws_row or {}


def compare(workspace: dict, reference: dict) -> list[dict]:
    """One line per (row, metric) the reference has an interval for: both values, the interval, agreement."""
    if not reference.get("spread"):
        raise EliteError(
            "the reference metrics have no `spread` block (made before intervals were recorded); "
            "rerun the evaluation and commit it as the reference"
        )
    out = []
    for name, ref_row, ws_row, bounds, ws_bounds in _rows(workspace, reference):
        for key in sorted(k[:-3] for k in bounds if k.endswith("_lo")):
            if ref_row is None or ref_row.get(key) is None:
                continue
            lo, hi = bounds[f"{key}_lo"], bounds[f"{key}_hi"]
            value = None if ws_row is None else ws_row.get(key)
            half = 0.0
            if f"{key}_lo" in ws_bounds:
                half = (ws_bounds[f"{key}_hi"] - ws_bounds[f"{key}_lo"]) / 2
            ok = value is not None and lo - half <= value <= hi + half
            out.append(
                {
                    "row": name,
                    "metric": key,
                    "reference": ref_row[key],
                    "interval": [lo, hi],
                    "workspace": value,
                    "agrees": ok,
                }
            )
    return out


def check_reference(metrics_path: str, rev: str = "HEAD") -> list[dict]:
    path = Path(metrics_path)
    if not path.is_file():
        raise EliteError(f"{path}: no evaluation in this workspace; run `make run` (dvc repro) first")
    return compare(json.loads(path.read_text()), committed(path.as_posix(), rev))
