"""Identity and scene accuracy of generated toy-world images: the evaluation probes (models/pretrained/probes)
read each image; identity is scored against the subject's attributes (toy_concepts.json of the toy
DreamBench set), the scene against the scene the prompt names ("... on the grass")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from elite.images import signed_pixels
from elite.toy.probes import HEADS, load_probes
from elite.toy.world import SCENES

ACCURACIES = ("colour_acc", "pattern_acc", "identity_acc", "class_acc", "scene_acc")
SCENE_RE = re.compile(r"on the (" + "|".join(SCENES) + r")\b")


def prompt_scene(text: str) -> str | None:
    found = SCENE_RE.search(text)
    return found.group(1) if found else None


class ToyScorer:
    def __init__(self, probes_dir: Path, concepts_file: Path, size: int):
        probes = load_probes(probes_dir)
        self.identity, self.scene = probes["identity"], probes["scene"]
        self.concepts = json.loads(Path(concepts_file).read_text())
        self.size = size

    @classmethod
    def find(cls, probes_dir: str | Path, subjects_file: str | Path) -> ToyScorer | None:
        """The scorer when both the probes and the toy concept attributes exist (toy profile), else None."""
        probes_dir, concepts = Path(probes_dir), Path(subjects_file).parent / "toy_concepts.json"
        if not concepts.is_file() or not (probes_dir / "probes.json").is_file():
            return None
        if "identity" not in json.loads((probes_dir / "probes.json").read_text()):
            return None
        with Image.open(next(p for p in sorted(Path(subjects_file).parent.glob("*/00.jpg")))) as im:
            size = im.width
        return cls(probes_dir, concepts, size)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)) for im in images])
        return signed_pixels(arr)

    def score(self, images: list[Image.Image], subject: str, text: str) -> list[dict]:
        """Per image: colour/pattern/identity (both)/class accuracy against the subject, scene accuracy
        against the prompt's scene (None when the prompt names none)."""
        x = self._pixels(images)
        ident, scene = self.identity.predict(x), self.scene.predict(x)
        want, named_scene = self.concepts[subject], prompt_scene(text)
        out = []
        for i in range(len(images)):
            colour = HEADS["colour"][ident["colour"][i]] == want["colour"]
            pattern = HEADS["pattern"][ident["pattern"][i]] == want["pattern"]
            out.append(
                {
                    "colour_acc": float(colour),
                    "pattern_acc": float(pattern),
                    "identity_acc": float(colour and pattern),
                    "class_acc": float(HEADS["cls"][ident["cls"][i]] == want["cls"]),
                    "scene_acc": None
                    if named_scene is None
                    else float(HEADS["scene"][scene["scene"][i]] == named_scene),
                }
            )
        return out
