"""Fixtures of the reliability tests: the generated bad inputs and the catalogue's context."""

from __future__ import annotations

import pytest
from rel_catalogue import Ctx
from rel_helpers import make_inputs


@pytest.fixture(scope="session")
def inputs(session_tmp):
    return make_inputs(session_tmp / "reliability-inputs")


@pytest.fixture(scope="session")
def ctx(inputs, session_tmp, smoke_models, smoke_pipeline) -> Ctx:
    return Ctx(d=inputs, root=session_tmp / "reliability-cases", models=smoke_models, pipe=smoke_pipeline)
