"""Helpers of the pipeline tests: git copies of the checkout, their environment, the Prefect REST API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from servers import free_port  # noqa: F401 (re-exported for the pipeline tests)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TRACER = Path(__file__).parent / "tracer"
SHARDS = 2
SHARDED = ("evaluate",)  # sharded in the end-to-end run (the persist output and the scoring run included)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=tests", "-c", "user.email=tests@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def copy_checkout(dst: Path) -> Path:
    """The working tree of this checkout (tracked and untracked, not ignored files; mtimes kept) as a
    fresh git repository with one commit."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # tracked files deleted in the working tree are skipped
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "copy of the checkout")
    return dst


def stage_env(repo: Path, **extra: str) -> dict[str, str]:
    """Environment for commands in a copy: this venv's tools, the copy's own code first on sys.path
    (plus the import tracer), and its own MLflow store and FiftyOne database."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    # the copy's own FiftyOne database (FIFTYONE_DATABASE_DIR below), not a mongod another test of this worker
    # started for its session (tests/data/conftest.py sets the URI in os.environ while its session lasts)
    env.pop("FIFTYONE_DATABASE_URI", None)
    env.update(
        {
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join([str(TRACER), str(repo)]),
            "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}",
            "FIFTYONE_DATABASE_DIR": str(repo.parent / f"{repo.name}-fiftyone-db"),
        }
    )
    env.update(extra)
    return env


def run(cmd: list[str], repo: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)


def dvc(repo: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    proc = run([str(BIN / "dvc"), *args], repo, env, timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def api(base: str, path: str, body: dict | None = None):
    """GET (body None) or POST JSON to the Prefect REST API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def flow_run_id(output: str) -> str:
    """The flow run id that `prefect deployment run` prints."""
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return match.group(1)


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        try:
            if check():
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise AssertionError(f"{what}: not ready after {timeout:.0f} s\n{log.read_text()[-4000:] if log else ''}")


def stop_process(proc: subprocess.Popen, timeout: float = 40) -> None:
    from flows.serve import stop

    stop(proc, timeout)


@dataclass
class SmokeRun:
    repo: Path  # the copy the pipeline ran in
    env: dict  # its environment (PREFECT_API_URL included)
    api: str  # Prefect API base URL
    flow_run_id: str
    returncode: int
    output: str  # `prefect deployment run ... --watch` output
    traces: Path  # import traces of every `elite` process
    serve_log: Path
    seconds: float
