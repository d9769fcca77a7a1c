"""Shared fixtures. Every test session gets its own MLflow store, Prefect home, FiftyOne database directory and
temporary folder (set before anything imports those libraries; deleted at the end), and builds the smoke models
once."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import pytest
from suite_units import LONGEST_FIRST, unit_times, work_unit

REPO = Path(__file__).resolve().parents[1]
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="elite-tests-"))
# Temporary files of this process and of every command it starts (MLflow's model folders, the CLI's temp paths)
# go under the session folder and are deleted with it; pytest's tmp_path keeps its usual root.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
(_SESSION_TMP / "tmp").mkdir()
tempfile.tempdir = str(_SESSION_TMP / "tmp")

os.environ.update(
    {
        "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_TMP / 'mlflow.db'}",
        "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "FIFTYONE_DATABASE_DIR": str(_SESSION_TMP / "fiftyone-db"),
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_DO_NOT_TRACK": "true",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TMPDIR": tempfile.tempdir,
    }
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return UnitScheduling(config, log)


def pytest_addoption(parser):
    parser.addoption(
        "--research",
        action="store_true",
        help="also run the research measurements: claims the project does not meet yet, kept as strict expected "
        "failures (`make test-research`)",
    )


def pytest_collection_modifyitems(config, items):
    """Longest units first, each unit's tests together and in their own order (a stable sort); the research
    measurements skip (with how to run them) unless --research."""
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))
    if not config.getoption("--research"):
        skip = pytest.mark.skip(reason="a research measurement of a claim not met yet: `make test-research`")
        for item in items:
            if item.get_closest_marker("research"):
                item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """Seconds of tests per worker and the longest units with their worker: what balancing the workers and
    ordering tests/suite_units.py's LONGEST_FIRST go by (from the reports the terminal keeps, as --durations)."""
    reports = [
        (getattr(getattr(rep, "node", None), "gateway", None), rep)
        for replist in terminalreporter.stats.values()
        for rep in replist
        if hasattr(rep, "duration")
    ]
    if not reports:
        return
    workers, units = unit_times([(gw.id if gw else "main", rep.nodeid, rep.duration) for gw, rep in reports])
    terminalreporter.write_sep("=", "seconds of tests per worker and the longest units (tests/suite_units.py)")
    terminalreporter.write_line("  ".join(f"{w} {s:.0f} s" for w, s in sorted(workers.items())))
    for unit, (worker, seconds) in sorted(units.items(), key=lambda kv: -kv[1][1])[:10]:
        terminalreporter.write_line(f"{seconds:7.1f} s  {worker}  {unit}")


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_for_shared_fixtures():
    """Session- and module-scoped fixtures (models built, stages trained) run before any per-test fixture:
    they get one torch thread too (two threads on the shared 2-core machine ran a toy measurement 10x slower)."""
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test runs torch on one thread: the tiny smoke models run several times faster so when the
    machine's two cores are shared (pytest plus the servers and stage subprocesses the tests start). Reset per
    test, so a test that changes the count does not leak it."""
    with torch_threads(1):
        yield


@pytest.fixture
def elite_cli(capfd):
    """`elite ARGS` through `elite.cli.main` in this process: the console script's code without the ~6.5 s of
    imports a fresh process pays. Output is captured at the file descriptors (so a line any handler writes is
    seen too) and returned as a CompletedProcess; the environment and warning format `main` sets are restored.
    Whether a refusal happens before the model libraries load is a fresh process's question (test_cli.py)."""

    from elite.cli import main

    def run(*args, cwd) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        capfd.readouterr()
        with (
            contextlib.chdir(cwd),
            mock.patch.dict(os.environ),
            mock.patch.object(warnings, "formatwarning", warnings.formatwarning),
        ):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
        out = capfd.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


@pytest.fixture(scope="session")
def params():
    from elite.config import load_params

    return load_params(REPO / "params.yaml", profile="smoke")


@pytest.fixture(scope="session")
def smoke_models(params) -> Path:
    """models.dir of the smoke profile, built once per session: base/, image_encoder/, elite/."""
    from elite.prepare import prepare_models

    return prepare_models(params, _SESSION_TMP / "models")


@pytest.fixture(scope="session")
def smoke_pipeline(smoke_models):
    from elite.pipeline import ElitePipeline

    pipe = ElitePipeline.from_pretrained(smoke_models / "base", smoke_models / "elite")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def concept_image(session_tmp) -> Path:
    """A 96x128 JPEG of a red disc on a blue background, and its mask next to it (white = disc)."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[:128, :96]
    disc = (yy - 64) ** 2 + (xx - 48) ** 2 < 30**2
    rgb = np.zeros((128, 96, 3), np.uint8)
    rgb[..., 2] = 160
    rgb[disc] = (220, 30, 30)
    path = session_tmp / "concept.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    Image.fromarray((disc * 255).astype(np.uint8)).save(session_tmp / "concept_mask.png")
    return path
