"""Write tests/fixtures/toy: the toy profile's frozen models in fp16, for the learning tests.

    python tests/toy/make_fixture.py models/pretrained    # after `dvc repro prepare_models` with profile: toy

Copies base/ (Stable Diffusion folder), image_encoder/ (CLIP vision tower) and elite/ (the untrained ELITE
weights the stages start from) from a toy prepare_models output, with every floating-point tensor stored as
fp16 (half the size; the tests load them in fp32), and records where they came from in PROVENANCE.json.
Training them takes prepare_models about 40 CPU-minutes, more than the test suite's budget, so the suite
trains only what it tests (the mappers) and takes the frozen base from here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "toy"
PARTS = ("base", "image_encoder", "elite")


def halve(folder: Path) -> None:
    for path in folder.rglob("*.safetensors"):
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(path).items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def main(src: Path) -> None:
    if not (src / "base" / "toy_world.json").is_file():
        sys.exit(f"{src}: not a toy prepare_models output (no base/toy_world.json); run it with profile: toy")
    tmp = OUT.with_name("toy.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in PARTS:
        shutil.copytree(src / part, tmp / part)
    halve(tmp)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
    gate = src / "base" / "toy_gate.json"
    provenance = {
        "made_by": "tests/toy/make_fixture.py",
        "source": src.name,  # the folder's name only: no machine path in the repository
        "commit": commit,
        "torch": torch.__version__,
        "gate": json.loads(gate.read_text()) if gate.is_file() else None,
    }
    (tmp / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/toy/make_fixture.py MODELS_DIR   (a toy prepare_models output)")
    main(Path(sys.argv[1]))
