"""How the suite is split between pytest-xdist workers (used by tests/conftest.py's scheduler hooks)."""

from __future__ import annotations

# `make test` runs two pytest-xdist workers (`--dist loadscope` with tests/conftest.py's scheduler). Each
# worker has its own session folder (tests/conftest.py), so its own MLflow store, Prefect home, FiftyOne database
# folder and free ports. A test module is one unit of work (its module fixtures are built once); modules that
# share a costly session fixture are one unit too (SHARED_SESSION). Units start longest first (LONGEST_FIRST,
# from `--durations`), so that the two workers finish together. (xdist's own `--dist loadgroup` is not used:
# with pytest 9.2 its group marker no longer reaches the test ids, and the groups were silently split.)
SHARED_SESSION = {  # unit -> modules (paths under tests/)
    "pipeline-smoke-run": (
        "pipeline/test_pipeline_dvc.py",
        "pipeline/test_pipeline_prefect.py",
        "pipeline/test_pipeline_prefect_ui.py",
    ),
}
LONGEST_FIRST = (
    "toy/test_toy_learning.py",
    "pipeline-smoke-run",
    "pipeline/test_pipeline_experiments.py",
    "toy/test_toy_world.py",
    "core/test_core_install.py",
    "pipeline/test_pipeline_launch.py",
)


def work_unit(nodeid: str) -> str:
    """The unit of work a test id belongs to: its SHARED_SESSION unit, else its module."""
    module = nodeid.split("::", 1)[0].removeprefix("tests/")
    return next((unit for unit, modules in SHARED_SESSION.items() if module in modules), module)


def unit_times(reports: list[tuple[str, str, float]]) -> tuple[dict[str, float], dict[str, tuple[str, float]]]:
    """From (worker, test id, seconds) of every setup/call/teardown report: the seconds each worker spent in tests,
    and each unit's worker and seconds (what LONGEST_FIRST is ordered by; a unit runs on one worker)."""
    workers: dict[str, float] = {}
    units: dict[str, tuple[str, float]] = {}
    for worker, nodeid, seconds in reports:
        workers[worker] = workers.get(worker, 0.0) + seconds
        unit = work_unit(nodeid)
        units[unit] = (worker, units.get(unit, (worker, 0.0))[1] + seconds)
    return workers, units
