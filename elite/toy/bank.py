"""A bank of toy-world renders held in memory, with their labels, for training the stand-in models.

Rendering costs about 2 ms per 32 px scene, so each training run draws a fixed bank once (seeded) and
samples captions per draw. Held-out identities are kept out of the bank altogether (`exclude`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elite.pixels import signed_pixels
from elite.toy.world import CLASSES, COLOURS, PATTERNS, SCENES, SceneSpec, render, sample_spec
from elite.train.templates import TEMPLATES

COLOUR_NAMES = list(COLOURS)


@dataclass
class Bank:
    images: torch.Tensor  # (N, 3, S, S) float in [-1, 1]
    masks: torch.Tensor  # (N, S, S) bool, the first object's visible pixels
    specs: list[SceneSpec]

    def __len__(self) -> int:
        return len(self.specs)

    def labels(self, attr: str) -> torch.Tensor:
        """Integer labels of the first object (colour, pattern, cls) or of the scene."""
        if attr == "scene":
            return torch.tensor([SCENES.index(s.scene) for s in self.specs])
        vocab = {"colour": COLOUR_NAMES, "pattern": PATTERNS, "cls": CLASSES}[attr]
        return torch.tensor([vocab.index(getattr(s.objects[0], attr)) for s in self.specs])


def make_bank(
    n: int,
    size: int,
    seed: int,
    two_object_share: float = 0.0,
    exclude: frozenset[tuple[str, str]] = frozenset(),
    only: frozenset[tuple[str, str]] | None = None,
) -> Bank:
    """`n` renders; a share of two-object scenes; scenes with an identity in `exclude` (or outside `only`)
    are skipped."""
    rng = np.random.default_rng(seed)
    specs, images, masks = [], [], []
    while len(specs) < n:
        spec = sample_spec(rng, objects=2 if rng.random() < two_object_share else 1)
        ids = {o.identity for o in spec.objects}
        if ids & set(exclude) or (only is not None and not ids <= set(only)):
            continue
        r = render(spec, size)
        specs.append(spec)
        images.append(torch.from_numpy(r.image))
        masks.append(torch.from_numpy(r.masks[0]))
    img = signed_pixels(torch.stack(images).numpy())
    return Bank(img, torch.stack(masks), specs)


def identity_words(colour: str, pattern: str, mode: str) -> str:
    """'both' -> 'red striped', 'colour' -> 'red', 'pattern' -> 'striped', 'none' -> ''."""
    words = {"both": [colour, pattern], "colour": [colour], "pattern": [pattern], "none": []}[mode]
    return " ".join(words)


def caption(
    spec: SceneSpec,
    rng: np.random.Generator,
    p_modes: dict[str, float],
    drop_p: float = 0.0,
    template_p: float = 0.0,
    scene_p: float = 1.0,
) -> str:
    """A base-model caption: the class always, the identity's attributes by `p_modes`, the scene with
    probability `scene_p`; a single object is written with one of ELITE's training templates ("a photo of a
    red ball") with probability `template_p`, so the base knows
    the words ELITE's captions put around S*."""
    if drop_p and rng.random() < drop_p:
        return ""
    phrases = []
    for obj in spec.objects:
        mode = str(rng.choice(list(p_modes), p=list(p_modes.values())))
        phrases.append(" ".join(w for w in [identity_words(obj.colour, obj.pattern, mode), obj.cls] if w))
    if len(phrases) == 1 and rng.random() < template_p:
        text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(phrases[0])
    else:
        text = " and ".join(f"a {p}" for p in phrases)
    return f"{text} on the {spec.scene}" if rng.random() < scene_p else text


def full_caption(spec: SceneSpec) -> str:
    """Every attribute named: what the contrastive CLIP stand-in is trained on."""
    objs = " and ".join(f"a {o.colour} {o.pattern} {o.cls}" for o in spec.objects)
    return f"{objs} on the {spec.scene}"
