"""The suite's own scheduling (tests/suite_units.py, used by tests/conftest.py): the units it names are real
modules, and modules that share a costly session fixture are one unit, so xdist never builds it on both workers."""

from __future__ import annotations

import re
from pathlib import Path

from suite_units import LONGEST_FIRST, SHARED_SESSION, work_unit

TESTS = Path(__file__).resolve().parents[1]


def test_every_named_module_exists():
    modules = [m for unit in SHARED_SESSION.values() for m in unit]
    modules += [u for u in LONGEST_FIRST if u not in SHARED_SESSION]
    assert [m for m in modules if not (TESTS / m).is_file()] == []


def test_modules_that_share_the_smoke_run_are_one_unit():
    uses = re.compile(r"def test_\w+\([^)]*\bsmoke_run\b")
    users = sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py") if uses.search(p.read_text()))
    assert users and {work_unit(f"tests/{m}::test_x") for m in users} == {"pipeline-smoke-run"}
    assert work_unit("tests/toy/test_toy_learning.py::test_x[a::b]") == "toy/test_toy_learning.py"


def test_unit_times_sum_each_workers_and_each_units_seconds():
    from suite_units import unit_times

    reports = [
        ("gw0", "tests/pipeline/test_pipeline_dvc.py::test_a", 2.0),
        ("gw0", "tests/pipeline/test_pipeline_prefect.py::test_b", 3.0),
        ("gw1", "tests/core/test_cli.py::test_c", 1.5),
        ("gw1", "tests/core/test_cli.py::test_c", 0.5),
    ]
    workers, units = unit_times(reports)
    assert workers == {"gw0": 5.0, "gw1": 2.0}
    assert units == {"pipeline-smoke-run": ("gw0", 5.0), "core/test_cli.py": ("gw1", 2.0)}
