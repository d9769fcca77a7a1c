"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
from train_helpers import make_scenes


@pytest.fixture(scope="session")
def scenes(session_tmp) -> dict:
    glob, local = make_scenes(session_tmp / "train-scenes", 4)
    two_glob, two_local = make_scenes(session_tmp / "train-scenes-2", 2, seed=1)
    return {"global": glob, "local": local, "global2": two_glob, "local2": two_local}
