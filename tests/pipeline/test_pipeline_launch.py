"""Training on several processes from the pipeline: with params `launch.processes: 2`, `dvc repro train_local`
(the dvc.yaml stages unchanged: `elite train-global`, `elite train-local`) runs both training stages as two gloo
processes through `accelerate launch` on this CPU machine; the effective batch and the learning rate follow
the real world size and are logged in the stages' metrics and MLflow runs."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from conftest import SMOKE_OVERRIDES
from pipeline_helpers import copy_checkout, dvc, git, stage_env

pytestmark = pytest.mark.slow  # the smoke stages up to train_local: a few minutes on 2 shared cores


def test_dvc_repro_trains_on_two_gloo_processes(session_tmp):
    repo = copy_checkout(session_tmp / "launch-repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    for section, values in SMOKE_OVERRIDES.items():
        params[section].setdefault("smoke", {}).update(values)
    params["launch"].setdefault("smoke", {})["processes"] = 2
    for section in ("train_global", "train_local"):  # the authors' rule: lr x batch x accumulation x processes
        params[section]["smoke"].update({"scale_lr": True, "learning_rate": 1.0e-4, "sample_every": 0})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-q", "-am", "smoke on two processes")
    env = stage_env(repo, OMP_NUM_THREADS="1")
    start = time.monotonic()
    out = dvc(repo, env, "repro", "train_local", timeout=1800)
    print(f"dvc repro train_local on 2 processes: {time.monotonic() - start:.0f} s")
    for stage in ("train_global", "train_local"):
        assert f"{stage}: 2 processes on 1 machine(s): launch --multi_gpu --num_processes 2" in out, out[-3000:]
        metrics = json.loads((repo / "metrics" / f"{stage}.json").read_text())
        batch = params[stage]["smoke"]["batch_size"] * params[stage]["smoke"]["gradient_accumulation_steps"] * 2
        assert metrics["num_processes"] == 2 and metrics["effective_batch_size"] == batch, metrics
        assert metrics["learning_rate"] == pytest.approx(1.0e-4 * batch), metrics
    assert any((repo / "models" / "elite").iterdir())
    assert "train_local" not in dvc(repo, env, "status", "train_local")  # dvc.lock records the two-process run

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("elite").experiment_id], max_results=100)
    train = {r.data.tags.get("stage"): r for r in runs if r.data.tags.get("stage", "").startswith("train_")}
    assert set(train) == {"train_global", "train_local"}  # one MLflow run per stage, not one per process
    for stage, run in train.items():
        batch = params[stage]["smoke"]["batch_size"] * params[stage]["smoke"]["gradient_accumulation_steps"] * 2
        assert run.data.params["num_processes"] == "2", stage
        assert int(run.data.params["effective_batch_size"]) == batch, stage
        assert float(run.data.params["effective_learning_rate"]) == pytest.approx(1.0e-4 * batch), stage
