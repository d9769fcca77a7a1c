"""The bench tests run bench/run.py in its --quick mode once per module (smoke sizes, few repeats)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(exit code, output, results dict or None) of `python bench/run.py --quick --out <tmp>`."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = json.loads(out.read_text()) if out.is_file() else None
    return proc.returncode, proc.stdout + proc.stderr, results, out
