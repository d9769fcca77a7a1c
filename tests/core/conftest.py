"""Fixtures of the core tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fresh(smoke_models):
    """Load a pipeline of its own from the smoke models (for tests that change its dtype, hooks or weights)."""
    from elite.pipeline import ElitePipeline

    def load(**kw) -> ElitePipeline:
        pipe = ElitePipeline.from_pretrained(smoke_models / "base", smoke_models / "elite", **kw)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return load
