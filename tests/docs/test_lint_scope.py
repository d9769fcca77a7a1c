"""`make lint` reads every Python file of the repository: ruff's file list (its excludes applied) holds every
tracked `.py` file. A bare exclude such as `data` matches every folder of that name (`elite/data`, `tests/data`)
and silently took them out of lint and format checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RUFF = Path(sys.executable).with_name("ruff")


def test_ruff_reads_every_tracked_python_file(repo_root):
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=repo_root, capture_output=True, text=True, check=True)
    shown = subprocess.run([str(RUFF), "check", "--show-files", "."], cwd=repo_root, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    linted = {Path(line).resolve() for line in shown.stdout.splitlines() if line.strip()}
    missing = sorted(p for p in tracked.stdout.split() if (repo_root / p).resolve() not in linted)
    assert not missing, f"ruff skips {len(missing)} tracked files, e.g. {missing[:5]}: anchor the excludes with ./"
