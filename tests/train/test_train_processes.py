"""Training as separate processes: SIGKILL and resume, and a two-process (gloo) run under accelerate launch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import run_cli, write_params

from elite.config import load_params
from elite.io import load_state
from elite.models.elite_model import EliteModel
from elite.train.checkpoint import FIELDS

CKPT_FILES = [
    "elite",
    "history.csv",
    "optimizer.safetensors",
    "rng.safetensors",
    "scheduler.safetensors",
    "state.json",
]


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_then_rerun_resumes_to_the_same_final_step(smoke_models, scenes, session_tmp, capsys):
    folder = session_tmp / "train-kill"
    overrides = {"train_global": {"max_steps": 16, "checkpoint_every": 4, "sample_every": 0}}
    params = write_params(folder, smoke_models, scenes, overrides)
    ckpts = folder / "train_global" / "checkpoints"
    proc = run_cli(["--params", str(params), "train-global"], cwd=folder, background=True)
    deadline = time.monotonic() + 300
    while not (ckpts / "step-0000004" / "state.json").exists():
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(int(p.name.split("-")[1]) for p in ckpts.glob("step-*"))
    assert killed_at < 16 and not (folder / "train_global" / "weights").exists()
    killed_run = json.loads((ckpts / f"step-{killed_at:07d}" / "state.json").read_text())["mlflow_run_id"]

    # run again (the same `train` that `elite train-global` runs; in this process to save a start-up)
    from elite.train.loop import train
    from elite.train.stages import GlobalStage

    with contextlib.chdir(folder):
        metrics = train(GlobalStage(load_params(params, profile="smoke").train_global), "smoke")
    assert f"resuming from {ckpts / f'step-{killed_at:07d}'}" in capsys.readouterr().out
    assert metrics["steps"] == 16 and metrics["resumed_from_step"] == killed_at
    assert json.loads((folder / "train_global" / "metrics.json").read_text()) == metrics
    rows = _rows(folder / "train_global" / "plot.csv")
    assert [int(r[0]) for r in rows] == list(range(1, 17))  # the history of the killed run is kept
    resumed = EliteModel.from_pretrained(folder / "train_global" / "weights")
    assert sorted(p.name for p in (ckpts / "step-0000016").iterdir()) == CKPT_FILES
    # the resumed run continues the killed run's MLflow run
    import mlflow

    run_id = json.loads((ckpts / "step-0000016" / "state.json").read_text())["mlflow_run_id"]
    assert run_id == killed_run
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    steps = {m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss")}
    assert steps == set(range(1, 17))

    # the same params without the kill: same losses, same weights
    straight = session_tmp / "train-straight"
    params2 = write_params(straight, smoke_models, scenes, overrides)
    with contextlib.chdir(straight):
        train(GlobalStage(load_params(params2, profile="smoke").train_global), "smoke")
    rows2 = _rows(straight / "train_global" / "plot.csv")
    for a, b in zip(rows, rows2):
        assert float(a[1]) == pytest.approx(float(b[1]), rel=1e-4, abs=1e-6), (a, b)
    a, b = resumed.state_dict(), EliteModel.from_pretrained(straight / "train_global" / "weights").state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_two_processes_write_one_checkpoint(smoke_models, scenes, session_tmp):
    """Two gloo processes (with bf16 autocast, which CPUs have too) train as one: one writer, one format; with
    scale_lr the rate is the authors' learning_rate x batch x accumulation x processes, printed and logged."""
    folder = session_tmp / "train-ddp"
    params = write_params(
        folder,
        smoke_models,
        scenes,
        {
            "train_global": {
                "max_steps": 4,
                "checkpoint_every": 2,
                "sample_every": 2,
                "mixed_precision": "bf16",
                "scale_lr": True,
                "learning_rate": 1.0e-3,
            }
        },
    )
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launcher = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
    ]
    env = {"HF_HOME": str(session_tmp / "hf-home")}  # no user accelerate config
    done = run_cli(["--params", str(params), "train-global"], cwd=folder, launcher=launcher, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    metrics = json.loads((folder / "train_global" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["effective_batch_size"] == 4
    authors_lr = (
        1.0e-3 * 1 * 2 * 2
    )  # train_global.py: lr * gradient_accumulation_steps * train_batch_size * num_processes
    assert metrics["learning_rate"] == pytest.approx(authors_lr)
    assert (
        output.count(
            "train_global: learning rate 0.004 = 0.001 x 2 per process x 1 accumulation x 2 processes "
            "(scale_lr); effective batch 4"
        )
        == 1
    )  # printed once, by the main process
    assert all(
        float(r[FIELDS.index("lr")]) == pytest.approx(authors_lr) for r in _rows(folder / "train_global" / "plot.csv")
    )
    ckpts = folder / "train_global" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000002", "step-0000004"]  # nothing half-written
    for step in (2, 4):
        path = ckpts / f"step-{step:07d}"
        assert output.count(f"checkpoint {path} written") == 1  # written by the main process only
        assert sorted(p.name for p in path.iterdir()) == CKPT_FILES  # the single-process format
        rngs = load_state(path / "rng.safetensors")
        assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])  # one state per process
        assert json.loads((path / "state.json").read_text())["num_processes"] == 2
    weights = load_file(folder / "train_global" / "weights" / "elite.safetensors")
    init = load_file(smoke_models / "elite" / "elite.safetensors")
    assert any(not torch.equal(weights[k], init[k]) for k in weights)
    assert all(w.dtype == torch.float32 for w in weights.values())  # trained weights stay fp32 under autocast
    assert len(_rows(folder / "train_global" / "plot.csv")) == 4
    import mlflow

    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"params.`train_global.checkpoint_dir` = '{ckpts}'"
    )
    assert len(runs) == 1 and float(runs["params.effective_learning_rate"][0]) == pytest.approx(authors_lr)


def test_launch_params_start_the_stage_command_on_two_processes(smoke_models, scenes, session_tmp):
    """`elite train-global` as dvc.yaml runs it, with params `launch.processes: 2`: the command starts itself
    through `accelerate launch` as two gloo processes; batch and learning rate follow the world size."""
    import yaml

    folder = session_tmp / "train-launch"
    overrides = {"max_steps": 2, "checkpoint_every": 2, "sample_every": 0, "scale_lr": True, "learning_rate": 1.0e-3}
    params = write_params(folder, smoke_models, scenes, {"train_global": overrides})
    raw = yaml.safe_load(params.read_text())
    raw["launch"]["smoke"] = {"processes": 2}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {"HF_HOME": str(session_tmp / "hf-home")}  # no user accelerate config
    done = run_cli(["--params", str(params), "train-global"], cwd=folder, env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "train_global: 2 processes on 1 machine(s): launch --multi_gpu --num_processes 2" in output
    metrics = json.loads((folder / "train_global" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["effective_batch_size"] == 2 * 1 * 2
    assert metrics["learning_rate"] == pytest.approx(1.0e-3 * 4)
    assert output.count("effective batch 4") == 1  # printed by the main process only
