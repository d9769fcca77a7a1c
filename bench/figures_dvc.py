"""The smoke pipeline figure: `dvc repro` from nothing in a temporary copy, then again unchanged.

The copy holds the files a clone of this checkout would get once everything is committed: tracked
and untracked-but-not-ignored files of the working tree (`git ls-files -co --exclude-standard`), made
a fresh git repository with one commit. No DVC cache, no models/, data/ outputs or MLflow store are
copied, so the first run computes every stage. The commands run with this venv's tools, the copy's
own code first on PYTHONPATH, and their own MLflow store, FiftyOne database and Prefect home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import figure, headline
from elite.errors import last_line
from flows.stages import apply_profile, load_stages

HOW = (
    "`dvc repro` (smoke profile) in a temporary copy of the checkout (tracked + "
    "untracked-not-ignored files, fresh git "
    "repo, empty DVC cache), wall time of the whole command; then `dvc repro` again with nothing changed"
)


def _not_measured(reason: str, status: str = "not measured") -> dict:
    return figure("dvc", HOW, {}, [], status, reason)


def _copy_checkout(repo: Path, dst: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        if not (repo / rel).is_file():  # deleted in the working tree
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dst / rel)
    apply_profile(dst, "smoke", lambda _msg: None)  # this figure is the smoke pipeline's (the default is toy)
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench copy"]):
        subprocess.run(["git", *ident, *cmd], cwd=dst, check=True, capture_output=True)


def _env(copy: Path, work: Path) -> dict:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.pop("ELITE_PARENT_RUN_ID", None)
    env.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "PYTHONPATH": str(copy),
            "MLFLOW_TRACKING_URI": f"sqlite:///{copy / 'mlflow.db'}",
            "FIFTYONE_DATABASE_DIR": str(work / "fiftyone-db"),
            "FIFTYONE_DATABASE_VALIDATION": "false",
            "FIFTYONE_DO_NOT_TRACK": "true",
            "PREFECT_HOME": str(work / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


def dvc_repro(repo: Path, work: Path, enabled: bool, timeout_s: float) -> dict:
    if not enabled:
        return _not_measured("opt-in (minutes of CPU): `make bench BENCH_ARGS=--dvc` or `python bench/run.py --dvc`")
    dvc = str(Path(sys.executable).parent / "dvc")
    stages = [s.name for s in load_stages(repo)]  # dvc.yaml's stages, in the order they run
    listed = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=repo, capture_output=True, text=True)
    if listed.returncode != 0 or listed.stdout.split() != stages:
        return _not_measured(f"dvc cannot read dvc.yaml's stages: {last_line(listed)}")
    copy = work / "dvc-copy"
    copy.mkdir(parents=True)
    _copy_checkout(repo, copy)
    env = _env(copy, work)
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        proc = subprocess.run([dvc, "repro"], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
        runs.append((time.perf_counter() - start, proc))
        if proc.returncode != 0:
            return _not_measured(f"dvc repro failed in the copy (run {len(runs)}): {last_line(proc)}", "failed")
    (first, p1), (second, p2) = runs
    up_to_date = "up to date" in (p2.stdout + p2.stderr)
    sizes = {"smoke": {"first_s": first, "second_s": second, "second_up_to_date": up_to_date, "stages": stages}}
    return figure(
        "dvc",
        HOW,
        sizes,
        [
            headline("smoke", "dvc repro from nothing (wall)", first, "s", "<= 900 s", first <= 900, wall=first),
            headline(
                "smoke",
                "dvc repro, nothing changed (wall)",
                second,
                "s",
                "<= 10 s",
                second <= 10 and up_to_date,
                wall=second,
            ),
        ],
    )
