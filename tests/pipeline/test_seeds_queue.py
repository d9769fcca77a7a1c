"""`elite seeds queue` on a two-stage DVC project: a seed experiment reruns only the stages the training seeds
reach (the expensive `prepare` stage is skipped, as prepare_models is on the toy profile: 63 minutes), and a
name that is taken is refused in one line unless --replace."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from pipeline_helpers import BIN, dvc, git, run

PARAMS = "train_global:\n  seed: 0\ntrain_local:\n  seed: 0\nprepare:\n  size: 3\n"
STAGES = """stages:
  prepare:
    cmd: echo ran >> {log} && echo ${{prepare.size}} > prepared.txt
    params: [prepare.size]
    outs: [prepared.txt]
  train:
    cmd: cat prepared.txt > trained.txt && echo ${{train_global.seed}} ${{train_local.seed}} >> trained.txt
    deps: [prepared.txt]
    params: [train_global.seed, train_local.seed]
    outs: [trained.txt]
"""


@pytest.fixture
def project(tmp_path):
    repo, log = tmp_path / "project", tmp_path / "prepare-runs.log"
    repo.mkdir()
    env = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), "DVC_NO_ANALYTICS": "1"}
    git(repo, "init", "-q")
    (repo / "params.yaml").write_text(PARAMS)
    (repo / "dvc.yaml").write_text(STAGES.format(log=log))
    for args in (["init", "-q"], ["repro", "-q"]):
        assert run([str(BIN / "dvc"), *args], repo, env).returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "baseline")
    log.unlink()
    return repo, env, log


def _elite(repo: Path, env: dict, *args: str):
    return run([str(BIN / "elite"), "seeds", *args], repo, env)


def test_a_seed_experiment_skips_the_stages_its_seeds_do_not_reach(project):
    repo, env, log = project
    queued = _elite(repo, env, "queue", "--seeds", "7")
    assert queued.returncode == 0, queued.stderr[-2000:]
    dvc(repo, env, "queue", "start", "-j", "1")
    try:
        deadline, status = time.monotonic() + 300, ""
        while time.monotonic() < deadline and not re.search(r"seed-7\s.*(Success|Failed)", status):
            time.sleep(2)
            status = dvc(repo, env, "queue", "status")
        assert re.search(r"seed-7\s.*Success", status), status
    finally:
        run([str(BIN / "dvc"), "queue", "stop", "--kill"], repo, env)
    assert not log.exists(), "the seed experiment reran `prepare` (dvc exp run --force reruns every stage)"
    dvc(repo, env, "exp", "apply", "seed-7")
    assert (repo / "trained.txt").read_text().split() == ["3", "7", "7"]  # both training seeds set

    again = _elite(repo, env, "queue", "--seeds", "7")
    assert again.returncode == 2 and again.stderr.count("\n") == 1, again.stderr
    assert "seed-7" in again.stderr and "--replace" in again.stderr
    replaced = _elite(repo, env, "queue", "--seeds", "7", "--replace")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert re.search(r"seed-7\s.*Queued", dvc(repo, env, "queue", "status"))
    assert "seed-7" not in dvc(repo, env, "exp", "ls", "-A", "--name-only").split()  # the finished one is gone
