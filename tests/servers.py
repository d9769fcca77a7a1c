"""Real servers for tests: a free loopback port, a process group started, waited for (an HTTP URL answers 200)
and stopped; the command line of an `mlflow server` with a proxied artifact store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url}: no answer after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server(
    cmd: list[str], ready_url: str, log: Path, env: dict | None = None, timeout: float = 120, wait: bool = True
) -> Iterator:
    """Start `cmd` in its own process group and yield `ready()`, which waits until `ready_url` answers
    (called at once unless wait=False, so that slow starts can overlap); stop the group afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    start = time.monotonic()

    def ready() -> None:
        wait_http(ready_url, proc, log, timeout - (time.monotonic() - start))

    try:
        if wait:
            ready()
        yield ready
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def mlflow_server_cmd(port: int, backend: Path, artifacts: Path) -> list[str]:
    """`mlflow server` on 127.0.0.1:port, SQLite at `backend`, artifacts proxied into the folder `artifacts`
    (the stand-in for a team's bucket: s3://... or gs://... in production)."""
    return [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{backend}", "--artifacts-destination", str(artifacts),
    ]  # fmt: skip


MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job workers (8 processes)
