"""Per-object scoring of two-concept images in the toy world: a region probe and the pair scores.

The renderer's two-object scenes put the first object in the left half and the second in the right half,
and the base model's two-object captions name them in that order ("a red striped ball and a blue plain
star on the grass"), so a prompt "a S1* and a S2* ..." asks for concept 1 on the left and concept 2 on the
right. The region probe reads one half of an image: the identity probe's network (`Probe`: colour,
pattern, class), trained on the halves of fresh two-object renders with the labels of the object drawn
there. It never sees a generated image.

Per image: each concept's identity (colour and pattern) on its own half, both at once, the swap rate (the
share of the two halves showing the *other* concept's identity), each half's class, and the scene.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from elite.io import atomic_dir
from elite.pixels import signed_pixels
from elite.toy.bank import Bank
from elite.toy.probes import HEADS, Probe, accuracy, train_probe
from elite.toy.world import SceneSpec, render, sample_spec

REGION_HEADS = ["colour", "pattern", "cls"]
PAIR_SCORES = ("a_identity_acc", "b_identity_acc", "both_identity_acc", "swap_rate", "a_class_acc", "b_class_acc")


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) -> the left and right halves, (N, 3, H, W // 2) each."""
    w = x.shape[-1] // 2
    return x[..., :w], x[..., w : 2 * w]


def region_bank(scenes: int, size: int, seed: int, exclude: frozenset[tuple[str, str]] = frozenset()) -> Bank:
    """The halves of `scenes` two-object renders without an identity in `exclude`, each labelled with the object
    drawn in it."""
    rng = np.random.default_rng(seed)
    crops, specs = [], []
    while len(specs) < 2 * scenes:
        spec = sample_spec(rng, objects=2)
        if any(o.identity in exclude for o in spec.objects):
            continue
        image = signed_pixels(render(spec, size).image)
        for crop, obj in zip(halves(image), spec.objects):
            crops.append(crop)
            specs.append(SceneSpec(spec.scene, (obj,), spec.texture_seed))
    images = torch.stack(crops)
    return Bank(images, torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.bool), specs)


def region_probe(
    folder: Path, size: int, scenes: int, steps: int, seed: int, exclude: frozenset[tuple[str, str]], progress=None
) -> tuple[Probe, dict]:
    """The region probe kept in `folder` (trained there when missing or made with other settings), trained on
    renders without the `exclude` (held-out) identities, and its accuracy on the halves of fresh such renders."""
    folder = Path(folder)
    settings = {
        "size": size,
        "scenes": scenes,
        "steps": steps,
        "seed": seed,
        "heads": REGION_HEADS,
        "exclude": sorted(map(list, exclude)),
    }
    marker = folder / "region.json"
    kept = json.loads(marker.read_text()) if marker.is_file() else {}
    if kept.get("settings") == settings:
        probe = Probe(REGION_HEADS)
        probe.load_state_dict(load_file(str(folder / "region.safetensors")))
        return probe.eval(), kept["render_accuracy"]
    probe = train_probe(region_bank(scenes, size, seed, exclude), REGION_HEADS, steps, seed, progress=progress)
    held = accuracy(probe, region_bank(max(64, scenes // 10), size, seed + 1, exclude))
    with atomic_dir(folder) as tmp:
        save_file(probe.state_dict(), str(tmp / "region.safetensors"))
        (tmp / "region.json").write_text(json.dumps({"settings": settings, "render_accuracy": held}, indent=2) + "\n")
    return probe, held


def _identity(pred: dict[str, torch.Tensor], i: int) -> tuple[str, str, str]:
    return HEADS["cls"][pred["cls"][i]], HEADS["colour"][pred["colour"][i]], HEADS["pattern"][pred["pattern"][i]]


def score_pair(probe: Probe, x: torch.Tensor, a: dict, b: dict) -> list[dict]:
    """Per image of `x` ((N, 3, S, S) in [-1, 1]): the pair scores of concepts `a` (left) and `b` (right),
    each {colour, pattern, cls}; identity is joint (class, colour and pattern all right)."""
    left, right = (probe.predict(h) for h in halves(x))
    want_a, want_b = ((c["cls"], c["colour"], c["pattern"]) for c in (a, b))
    out = []
    for i in range(x.shape[0]):
        got_a, got_b = _identity(left, i), _identity(right, i)
        out.append(
            {
                "a_identity_acc": float(got_a == want_a),
                "b_identity_acc": float(got_b == want_b),
                "both_identity_acc": float(got_a == want_a and got_b == want_b),
                "swap_rate": ((got_a == want_b) + (got_b == want_a)) / 2,
                "a_class_acc": float(HEADS["cls"][left["cls"][i]] == a["cls"]),
                "b_class_acc": float(HEADS["cls"][right["cls"][i]] == b["cls"]),
            }
        )
    return out
