"""Fixtures for the web demo: the smoke model registered as champion in the session's MLflow store, an example
folder, and a real `elite demo` server on a free loopback port (one per session)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _register_helpers():
    """tests/register/conftest.py, loaded under its own name: its helpers for real servers (free port; start,
    wait for and stop a process group)."""
    path = Path(__file__).resolve().parents[1] / "register" / "conftest.py"
    spec = importlib.util.spec_from_file_location("register_server_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _register_helpers()
free_port, server = _helpers.free_port, _helpers.server

STEPS = 2  # serving default stored in the registered model: every generation of these tests is 2 steps


@pytest.fixture(scope="session")
def champion(params, smoke_models, session_tmp) -> str:
    """The smoke ELITE registered as `elite-demo` and promoted to champion (first version: only the "
    "gates' limits apply)."""
    from elite.registry.register import register_model

    metrics = session_tmp / "demo-metrics.json"
    metrics.write_text(json.dumps({"overall": {"clip_t": 0.3, "dino_i": 0.5}}))
    cfg = params.register.model_copy(
        update={
            "weights": str(smoke_models / "elite"),
            "base": str(smoke_models / "base"),
            "metrics": str(metrics),
            "report": str(session_tmp / "demo-register.json"),
            "verify": False,
            "steps": STEPS,
            "model_name": "elite-demo",
        }
    )
    record = register_model(params, cfg)
    assert record["decision"] == "promoted", record
    return "elite-demo"


@pytest.fixture(scope="session")
def demo_dir(session_tmp, concept_image) -> Path:
    """A folder with examples/concepts/: one example (image, mask, prompt)."""
    root = session_tmp / "demo"
    folder = root / "examples" / "concepts"
    folder.mkdir(parents=True, exist_ok=True)
    Image.open(concept_image).save(folder / "disc.png")
    Image.open(concept_image.with_name("concept_mask.png")).save(folder / "disc_mask.png")
    (folder / "disc.txt").write_text("a S* in the snow\n")
    return root


@pytest.fixture(scope="session")
def demo_url(repo_root, champion, smoke_models, demo_dir):
    """A real `elite demo` on the registered champion (one torch thread, as in the tests' own process)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(Path(sys.executable).parent / "elite"),
        "--params",
        str(repo_root / "params.yaml"),
        "--profile",
        "smoke",
        "demo",
        "--port",
        str(port),
        "--model-name",
        champion,
        "--sam",
        str(smoke_models / "sam"),
        "--examples",
        str(demo_dir / "examples" / "concepts"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    with server(cmd, f"{url}/gradio_api/info", demo_dir / "demo.log", env=env, timeout=240):
        yield url


@pytest.fixture(scope="session")
def servers():
    """(free_port, server): tests/register's helpers, for a test that starts its own demo."""
    return free_port, server


@pytest.fixture(scope="session")
def demo_log(demo_url, demo_dir) -> Path:
    """The running demo's log (stdout and stderr)."""
    return demo_dir / "demo.log"


@pytest.fixture(scope="session")
def bad_files(session_tmp) -> dict[str, Path]:
    """Inputs the demo must refuse with a message: not an image, over the pixel limit (from its header), an
    all-black mask."""
    from elite.images import MAX_PIXELS

    root = session_tmp / "bad"
    root.mkdir(exist_ok=True)
    (root / "notes.png").write_bytes(b"this is not an image\n")
    side = int(MAX_PIXELS**0.5) + 1
    Image.new("1", (side, side)).save(root / "huge.png")  # a few KB on disk, over the limit in pixels
    Image.fromarray(np.zeros((128, 96), np.uint8)).save(root / "black_mask.png")
    return {"not_image": root / "notes.png", "huge": root / "huge.png", "black_mask": root / "black_mask.png"}
