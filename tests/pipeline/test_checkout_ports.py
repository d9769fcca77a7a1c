"""Two checkouts on one machine, their local servers: `make serve` (python -m flows.serve) and `elite mlflow-ui`
on a port another checkout's server already holds stop in one line naming the option for another port,
instead of starting a second server that fails to bind while the command talks to the first."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def held_port():
    """A port with a listening server on it (standing in for another checkout's)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_prefect_serve_on_a_taken_port_is_one_line(held_port, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cmd = [sys.executable, "-m", "flows.serve", "--port", str(held_port), "--home", str(tmp_path / "prefect")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: Prefect server: 127.0.0.1:{held_port} is already in use (Address already in use; another "
        f"checkout's server?); pick another port: make serve PREFECT_PORT={held_port + 1}"
    ]
    assert not (tmp_path / "prefect" / "server.log").exists()  # no server was started


def test_mlflow_ui_on_a_taken_port_is_one_line(held_port, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [str(BIN / "elite"), "mlflow-ui", "--port", str(held_port)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: MLflow UI: 127.0.0.1:{held_port} is already in use (Address already in use; another checkout's "
        f"server?); pick another port: make mlflow-ui MLFLOW_PORT={held_port + 1}"
    ]
