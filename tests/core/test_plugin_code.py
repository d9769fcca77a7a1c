"""`elite plugins` (the plugins stage) on a copy of the package: per stage, the plug-in code the profile selects.
Editing a toy world file changes the toy profile's file of exactly the stages whose plug-in imports it, and never
a file of the paper profile (no plug-in runs there), so DVC reruns nothing on paper for a toy edit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from elite.plugins import STAGES

REPO = Path(__file__).resolve().parents[2]


def plugins(repo: Path, profile: str) -> dict[str, bytes]:
    """Run `elite plugins` in `repo` (its own copy of the package first on sys.path); stage -> file bytes."""
    run = subprocess.run(
        [sys.executable, "-m", "elite.cli", "--profile", profile, "plugins"],
        cwd=repo,
        env=dict(os.environ, PYTHONPATH=str(repo)),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return {stage: (repo / "data" / "plugins" / f"{stage}.json").read_bytes() for stage in STAGES}


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copytree(REPO / "elite", tmp_path / "elite", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_a_toy_edit_changes_only_the_stages_whose_plugin_imports_it(copy):
    before = {profile: plugins(copy, profile) for profile in ("paper", "toy")}
    assert plugins(copy, "toy") == before["toy"]  # nothing changed: the same bytes (no time, no absolute path)
    assert all(b'"files": {}' in text for text in before["paper"].values()), before["paper"]
    edits = {  # toy file -> the stages whose plug-in imports it (world.py: every one, some through other modules)
        "dreambench.py": {"dreambench"},
        "sam_tune.py": {"prepare_models"},
        "oracles.py": {"evaluate"},
        "figures.py": set(),  # the figures of bench/, run by no stage
        "world.py": set(STAGES),
    }
    for edited, changed in edits.items():
        with open(copy / "elite" / "toy" / edited, "a") as out:
            out.write("\n# an edit\n")
        after = {profile: plugins(copy, profile) for profile in ("paper", "toy")}
        assert after["paper"] == before["paper"], edited
        assert {s for s in STAGES if after["toy"][s] != before["toy"][s]} == changed, edited
        before = after


def test_a_name_no_plugin_registers_selects_no_code(copy):
    params = (copy / "params.yaml").read_text()
    (copy / "params.yaml").write_text(params.replace("  toy:\n    source: toy\n", "  toy:\n    source: elsewhere\n"))
    written = plugins(copy, "toy")
    assert b'"name": "elsewhere"' in written["dreambench"] and b'"entry_point": null' in written["dreambench"]
    assert b'"name": "elsewhere"' in written["evaluate"] and b'"elite/toy/' not in written["evaluate"]
    assert b'"elite/toy/prepare.py"' in written["prepare_models"]
