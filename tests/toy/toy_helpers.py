"""Helpers of the toy-world tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from elite.config import parse_params


def tiny_toy_params(repo_root: Path):
    """The toy profile with a 64-render bank and 2 training steps per stand-in."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["toy"].update(
        bank=64, vae_steps=2, clip_steps=2, unet_steps=2, unet_batch=4, probe_steps=2, sam_steps=2, dino_steps=2
    )
    return parse_params(raw, "params.yaml", "toy")
