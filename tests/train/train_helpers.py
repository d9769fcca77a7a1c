"""Helpers of the training tests: tiny scenes with boxes and masks, params files, CLI runs.

The params come from the repository's params.yaml (smoke profile) with the training sections pointed at
a test folder and a few keys overridden, so the tests exercise the shipped configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def make_scenes(out: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    """`count` 120x160 JPEGs, each an ellipse of one colour on another with a gradient, its box and mask.
    Returns (global manifest, local manifest) with absolute paths."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    rows = []
    for i in range(count):
        x0, y0 = int(rng.integers(5, 60)), int(rng.integers(5, 40))
        bw, bh = int(rng.integers(60, 95)), int(rng.integers(50, 75))
        x1, y1 = min(w - 1, x0 + bw), min(h - 1, y0 + bh)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(0, 255, 3)
        img += (xx[..., None] / w) * rng.uniform(-60, 60, 3)
        img[inside] = rng.uniform(0, 255, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(out / f"scene{i}.jpg", quality=95)
        Image.fromarray((inside * 255).astype(np.uint8)).save(out / f"scene{i}_mask.png")
        rows.append(
            {
                "image": str(out / f"scene{i}.jpg"),
                "box": [x0, y0, x1, y1],
                "label": "Thing",
                "image_id": f"scene{i}",
                "mask": str(out / f"scene{i}_mask.png"),
                "mask_source": "release",
            }
        )
    glob, local = out / "global.jsonl", out / "local.jsonl"
    glob.write_text("".join(json.dumps({**r, "mask": None}) + "\n" for r in rows))
    local.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return glob, local


def write_params(
    folder: Path, smoke_models: Path, manifests: dict, overrides: dict | None = None, local_init: Path | None = None
) -> Path:
    """A params.yaml for `folder`: the repository's, with both training sections writing under `folder`.
    `overrides` = {"train_global": {...}, "train_local": {...}} go into the smoke maps."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "smoke"
    folder.mkdir(parents=True, exist_ok=True)
    for section, manifest in (("train_global", manifests["global"]), ("train_local", manifests["local"])):
        sec = raw[section]
        sec.update(
            base=str(smoke_models / "base"),
            manifest=str(manifest),
            out=str(folder / section / "weights"),
            metrics=str(folder / section / "metrics.json"),
            plot=str(folder / section / "plot.csv"),
            checkpoint_dir=str(folder / section / "checkpoints"),
        )
        if section == "train_global":
            sec.update(init=str(smoke_models / "elite"), cache_dir=str(folder / "latent-cache"))
        else:
            sec.update(init=str(local_init or folder / "train_global" / "weights"))
        sec.setdefault("smoke", {}).update((overrides or {}).get(section, {}))
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_cli(
    args: list[str],
    cwd: Path,
    launcher: list[str] | None = None,
    timeout: float = 600,
    env: dict | None = None,
    **popen,
) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run `elite ARGS` in a fresh interpreter (or under `launcher`, e.g. accelerate launch ... -m)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = (launcher or [sys.executable, "-m"]) + ["elite.cli", *args]
    if popen.pop("background", False):
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())
