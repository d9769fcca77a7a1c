"""Two checkouts on one machine: `elite download` started at the same moment in two copies of a tiny checkout (no
FIFTYONE_DATABASE_DIR, no FIFTYONE_DATABASE_URI, no MLFLOW_TRACKING_URI) gives each its own FiftyOne database in
`<checkout>/.fiftyone/db`, holding only its own dataset, and its own `mlflow.db`; the databases stop with the last
process using them; a database that stops just as a process attaches is started again; and a database that cannot
start or be reached is one error line."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flows.stages import apply_profile

pytestmark = pytest.mark.slow
ELITE = Path(sys.executable).with_name("elite")
PROBE = (
    "import json; from elite.data.fiftyone_db import fiftyone; fo = fiftyone(); "
    "d = fo.load_dataset('elite-openimages-smoke'); "
    "print(json.dumps({'uri': fo.config.database_uri, 'datasets': fo.list_datasets(), 'samples': len(d), "
    "'images': sorted(d.values('open_images_id'))}))"
)


def _env(**extra: str) -> dict[str, str]:
    drop = ("DVC_ROOT", "MLFLOW_TRACKING_URI")  # each checkout its own store too: <checkout>/mlflow.db
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE_") and k not in drop}
    env.update(FIFTYONE_DATABASE_VALIDATION="false", **extra)
    return env


def _checkout(root: Path, repo_root: Path, images: int) -> Path:
    repo = root
    repo.mkdir()
    shutil.copy(repo_root / "params.yaml", repo / "params.yaml")
    apply_profile(repo, "smoke", lambda _msg: None)
    text = (repo / "params.yaml").read_text()  # each checkout its own data: another number of scenes
    (repo / "params.yaml").write_text(text.replace("synthetic_images: 36 ", f"synthetic_images: {images} ", 1))
    return repo


def _mongods_under(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["name"] == "mongod" and any(str(path) in arg for arg in cmd):
            found.append(proc)
    return found


def test_two_checkouts_start_their_own_databases_at_once(repo_root, tmp_path):
    a, b = _checkout(tmp_path / "a", repo_root, 12), _checkout(tmp_path / "b", repo_root, 9)
    env = _env()
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [str(ELITE), "download"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for repo in (a, b)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    print(f"two concurrent downloads: {time.monotonic() - start:.1f} s")
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    found = {}
    for repo in (a, b):
        assert (repo / ".fiftyone" / "db").is_dir() and list((repo / ".fiftyone" / "db").glob("*.wt"))
        assert (repo / "mlflow.db").is_file()
        probe = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert probe.returncode == 0, probe.stderr[-3000:]
        found[repo.name] = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["a"]["uri"] != found["b"]["uri"]
    assert (found["a"]["samples"], found["b"]["samples"]) == (12, 9)  # each database holds its own checkout's data
    assert found["a"]["datasets"] == found["b"]["datasets"] == ["elite-openimages-smoke"]
    deadline = time.monotonic() + 60  # the last process using a database has exited: it stops
    while _mongods_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _mongods_under(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"FIFTYONE_DATABASE_DIR": "/proc/elite-cannot-write/db"}, "FiftyOne's database did not start in /proc/"),
        (
            {"FIFTYONE_DATABASE_URI": "mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=2000"},
            "FiftyOne's database at mongodb://127.0.0.1:",
        ),
    ],
)
def test_a_database_that_cannot_start_or_answer_is_one_line(repo_root, tmp_path, extra, message):
    repo = _checkout(tmp_path / "c", repo_root, 6)
    extra = {k: v.format(port=_free_port()) for k, v in extra.items()}
    env = _env(**extra)
    proc = subprocess.run([str(ELITE), "download"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()  # progress bars and MLflow's notes, then one error line
    assert "Traceback" not in proc.stderr and lines[-1].startswith(f"error: {message}"), proc.stderr[-2000:]
    assert [line for line in lines if line.startswith("error")] == lines[-1:] and "FIFTYONE_DATABASE_" in lines[-1]


PEEK = (
    "import json; from elite.data.fiftyone_db import fiftyone; fo = fiftyone(); "
    "print(json.dumps({'uri': fo.config.database_uri, 'datasets': fo.list_datasets()}))"
)
HOLD = (  # process A: holds the database; a line on stdin drops its handle (its watcher then stops)
    "import sys; from elite.data import fiftyone_db as f; fo = f.fiftyone(); "
    "print(fo.config.database_uri, flush=True); sys.stdin.readline(); f._drop_service(str(f.database_dir())); "
    "print('dropped', flush=True); sys.stdin.read()"
)


def _hold(repo: Path, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, str, psutil.Process]:
    """Process A, holding the checkout's database until its stdin closes; its URI; its mongod."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD], cwd=repo, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    first = holder.stdout.readline().strip()
    (mongod,) = _mongods_under(tmp_path)
    return holder, first, mongod


def _started_again(probe: subprocess.Popen, out: str, err: str, first: str, tmp_path: Path) -> None:
    assert probe.returncode == 0, err[-3000:]
    found = json.loads(out.strip().splitlines()[-1])
    assert found["uri"] != first and found["datasets"] == []
    assert "starting it again" in err
    deadline = time.monotonic() + 60  # B has exited: its database stops
    while _mongods_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _mongods_under(tmp_path)


def test_a_database_that_stops_as_a_process_attaches_is_started_again(repo_root, tmp_path):
    """Process A holds the checkout's database; its mongod is paused, process B attaches to A's watcher and
    waits for an answer, then the mongod dies (as one does when its watcher stops just after B attached). B
    starts the database again once the directory is free, and reads it."""
    repo, env = _checkout(tmp_path / "d", repo_root, 6), _env()
    holder, first, old = _hold(repo, env, tmp_path)
    old_port = int(first.rsplit(":", 1)[1])
    old.suspend()
    probe = subprocess.Popen(
        [sys.executable, "-c", PEEK], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300  # B is waiting on the paused mongod: a connection to its port
    while not any(c.raddr and c.raddr.port == old_port for c in psutil.Process(probe.pid).net_connections("tcp")):
        assert probe.poll() is None and time.monotonic() < deadline, probe.communicate()
        time.sleep(0.2)
    old.kill()
    out, err = probe.communicate(timeout=600)
    holder.kill()  # (its exit hooks would wait 30 s on the dead mongod)
    holder.wait(timeout=60)
    _started_again(probe, out, err, first, tmp_path)


def test_a_database_refused_while_it_stops_is_started_again(repo_root, tmp_path):
    """Process A holds the database, then lets its watcher go while its mongod is paused: the watcher is
    stopping (it refuses newcomers) and the mongod still holds the directory, so process B's own mongod cannot
    start there. B waits until the old mongod has gone, then starts the database and reads it. (A stays alive:
    a watcher orphaned with a paused mongod gets it continued by the kernel.)"""
    repo, env = _checkout(tmp_path / "e", repo_root, 6), _env()
    holder, first, old = _hold(repo, env, tmp_path)
    old.suspend()
    holder.stdin.write("drop\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "dropped"  # A's watcher stops: its SIGTERM waits on the paused mongod
    log = tmp_path / "peek.err"
    with open(log, "w") as err_file:
        probe = subprocess.Popen(
            [sys.executable, "-c", PEEK], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=err_file, text=True
        )
        deadline = time.monotonic() + 300
        while "starting it again" not in log.read_text():
            assert probe.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        old.resume()
        out, _ = probe.communicate(timeout=600)
    holder.kill()
    holder.wait(timeout=60)
    _started_again(probe, out, log.read_text(), first, tmp_path)
