"""Fixtures for the register tests: metrics JSON files, register configs on the smoke models, and real
servers (`mlflow server`, `mlflow models serve`) on free loopback ports, stopped by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import MLFLOW_SERVER_ENV, free_port, mlflow_server_cmd, server

BIN = Path(sys.executable).parent


def dreambench_metrics(clip_t: float, dino_i: float, clip_i: float = 0.7) -> dict:
    """A metrics JSON in the evaluate stage's layout (overall / subjects / sweep / timing)."""
    overall = {"clip_i": clip_i, "clip_t": clip_t, "dino_i": dino_i, "images": 4}
    return {
        "overall": overall,
        "subjects": {"dog": dict(overall, images=2), "rc_car": dict(overall, clip_t=clip_t - 0.01, images=2)},
        "sweep": {"lam_0.8": dict(overall)},
        "timing": {"encode_s_mean": 0.01, "encode_s_max": None},
    }


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """The smoke models are tiny: one thread is as fast, and on a busy machine two OpenMP threads that
    wait for each other make a 1-step generation take seconds instead of a third of one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def servers():
    """Helpers for tests that start their own servers: (free_port, server context manager, mlflow binary)."""
    return free_port, server, BIN / "mlflow"


@pytest.fixture(scope="session")
def metrics_for():
    return dreambench_metrics


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, proxied artifact store) on a free loopback port; while the
    module runs, MLFLOW_TRACKING_URI points at it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = mlflow_server_cmd(port, root / "mlflow.db", root / "artifacts")
    env = dict(os.environ, **MLFLOW_SERVER_ENV)
    with server(cmd, f"{uri}/health", root / "server.log", env=env, timeout=180), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        yield uri


def config_maker(register, models: Path, root: Path):
    """`make(metrics_dict, name, **update)`: `register` (a RegisterConfig) pointed at `models` (base/, elite/),
    with the metrics written to a file of its own under `root`."""

    def make(metrics: dict, name: str, **update):
        path = root / f"{name}.json"
        path.write_text(json.dumps(metrics))
        return register.model_copy(
            update={
                "weights": str(models / "elite"),
                "base": str(models / "base"),
                "metrics": str(path),
                "report": str(root / f"{name}-register.json"),
                **update,
            }
        )

    return make


def downstream_app(cwd: Path, env: dict, model_uri: str, concept_image: Path, prompts: list[str]):
    """examples/downstream_app.py in a fresh process (3 steps, seed 7, lambda 0.6): (process, output folder)."""
    out = cwd / "out"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "examples" / "downstream_app.py")]
    cmd += ["--model-uri", model_uri, "--image", str(concept_image)]
    cmd += ["--mask", str(concept_image.with_name("concept_mask.png"))]
    cmd += [arg for prompt in prompts for arg in ("--prompt", prompt)]
    cmd += ["--out-dir", str(out), "--steps", "3", "--seed", "7", "--lam", "0.6"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd), out


@pytest.fixture(scope="module")
def register_cfg(params, smoke_models, tmp_path_factory):
    """params.register pointed at the smoke models; `make(metrics_dict, name)` writes the metrics file."""
    make = config_maker(params.register, smoke_models, tmp_path_factory.mktemp("register"))

    return make
