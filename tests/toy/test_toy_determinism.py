"""The stand-ins built twice from the same params, in two processes with different hash seeds, are the same bytes:
what makes two cold `dvc repro` runs on one machine kind give the same dvc.lock hashes for prepare_models."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

BUILD = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from toy_helpers import toy_params
from elite.toy.prepare import prepare_toy
params = toy_params(bank=64, vae_steps=3, clip_steps=3, unet_steps=3, unet_batch=4, probe_steps=3, sam_steps=2,
                    dino_steps=3, gate_images=2, gate_guidance=[4.0], gate_steps=2)
prepare_toy(params, Path(sys.argv[1]))
"""


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_stand_ins_are_bit_identical_when_built_twice(tmp_path):
    code = BUILD.format(tests=str(Path(__file__).parent))
    digests = []
    for run, hash_seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], check=True, env=env, capture_output=True)
        digests.append(tree_digest(tmp_path / run))
    assert digests[0].keys() == digests[1].keys() and len(digests[0]) > 20
    assert {k.split("/")[0] for k in digests[0]} >= {
        "base",
        "image_encoder",
        "clip_eval",
        "dino_eval",
        "sam",
        "probes",
    }
    differ = sorted(k for k in digests[0] if digests[0][k] != digests[1][k])
    assert not differ, differ
