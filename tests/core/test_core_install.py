"""`pip install elite-pipeline` without extras is enough to load a saved model and generate: the package's
wheel goes into a fresh virtual environment (no system site-packages, no extras; its dependencies from the
machine's package sources, as `make setup` installs them), which then loads a saved smoke pipeline, generates
the same image as this environment, and runs `elite generate`. About 2 minutes, most of it installing torch.

pip installs without byte-compiling (`--no-compile`: compiling all of torch cost 45 s of the test's 85 s install),
and the venv's processes may write bytecode (PYTHONDONTWRITEBYTECODE unset), so what they import is compiled once,
by the first of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXTRAS = ["dvc", "prefect", "mlflow", "fiftyone", "segment_anything", "gradio", "accelerate", "open_clip", "mkdocs"]

SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    import numpy as np, torch
    present = [m for m in sys.argv[3].split(",") if importlib.util.find_spec(m) is not None]
    assert not present, f"extras installed with the core: {present}"
    from elite import ElitePipeline
    from elite.loader import EliteStableDiffusionPipeline  # noqa: F401 (the diffusers loader imports with the core)
    pipe = ElitePipeline.from_pretrained(sys.argv[1])
    pipe.set_progress_bar_config(disable=True)
    concept = pipe.encode_concept(sys.argv[2])
    out = pipe("a S* on the beach", concept=concept, num_inference_steps=3,
               generator=torch.Generator().manual_seed(0), output_type="pt").images.numpy()
    np.save(sys.argv[4], out)
    print("generated", out.shape)
    """
)


VENV_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=VENV_ENV, **kw)


def test_core_install_loads_and_generates(tmp_path, smoke_pipeline, concept_image):
    saved = tmp_path / "saved"
    smoke_pipeline.save_pretrained(saved)
    expected = smoke_pipeline(
        "a S* on the beach",
        concept=smoke_pipeline.encode_concept(concept_image),
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images.numpy()

    src = tmp_path / "src"  # build from a copy: setuptools writes build/ next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "elite", src / "elite", ignore=shutil.ignore_patterns("__pycache__"))
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ]
    )
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("elite_pipeline-*.whl"))

    venv = tmp_path / "venv"  # ~5.5 GB with torch: removed as soon as the test ends, passed or failed
    try:
        _check_core_venv(venv, wheel, saved, concept_image, expected, tmp_path)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def _check_core_venv(
    venv: Path, wheel: Path, saved: Path, concept_image, expected: np.ndarray, tmp_path: Path
) -> None:
    made = run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr[-2000:]
    python, elite = venv / "bin" / "python", venv / "bin" / "elite"
    installed = run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(wheel)])
    assert installed.returncode == 0, installed.stderr[-3000:]

    got_file = tmp_path / "core.npy"
    script = tmp_path / "core_generate.py"
    script.write_text(SCRIPT)
    generated = run([str(python), str(script), str(saved), str(concept_image), ",".join(EXTRAS), str(got_file)])
    assert generated.returncode == 0, generated.stderr[-3000:]
    # the same image as with every extra installed, up to float rounding (another process and thread count: measured
    # 1e-7 at most; a missing component or other weights would move it by far more)
    np.testing.assert_allclose(np.load(got_file), expected, rtol=0, atol=1e-5)

    out = tmp_path / "beach.png"
    common = ["--params", str(REPO / "params.yaml"), "--profile", "smoke", "generate", "--image", str(concept_image)]
    cli = run([str(elite), *common, "--prompt", "a S* on the beach", "--out", str(out), "--base", str(saved),
               "--weights", str(saved / "elite"), "--steps", "2"], cwd=tmp_path)  # fmt: skip
    assert cli.returncode == 0 and out.is_file(), cli.stderr[-3000:]
    auto = run([str(elite), *common, "--mask", "auto", "--prompt", "a S*", "--out", str(tmp_path / "x.png"),
                "--base", str(saved), "--weights", str(saved / "elite")], cwd=tmp_path)  # fmt: skip
    assert auto.returncode == 2
    lines = auto.stderr.strip().splitlines()
    assert len(lines) == 1 and "--mask auto needs segment-anything: pip install 'elite-pipeline[pipeline]'" in lines[0]
