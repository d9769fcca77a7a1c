"""Helpers of the toy-world tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from elite.config import parse_params

REPO = Path(__file__).resolve().parents[2]


def toy_raw() -> dict:
    """params.yaml of this checkout, as a mapping."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def toy_params(**toy):
    """The toy profile, with `toy` keys overridden."""
    raw = toy_raw()
    raw["toy"].update(toy)
    return parse_params(raw, "params.yaml", "toy")


def tiny_toy_params(repo_root: Path | None = None, **toy):
    """The toy profile with a 64-render bank and 2 training steps per stand-in (and `toy` keys overridden)."""
    return toy_params(
        **toy,
        bank=64,
        vae_steps=2,
        clip_steps=2,
        unet_steps=2,
        unet_batch=4,
        probe_steps=2,
        sam_steps=2,
        dino_steps=2,
        gate_images=4,
    )
