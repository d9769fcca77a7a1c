"""The toy world's scorer for the evaluate stage (registered under the `elite.scorers` entry point, see
elite/evaluate/scorers.py): the evaluation probes (models/pretrained/probes) read each generated image; identity is
scored against the subject's attributes (toy_concepts.json of the toy DreamBench set), the scene against the scene
the prompt names ("... on the grass"). Two-concept images are read half by half by the region probe (trained on
first use, kept beside the evaluation's outputs). `context` adds what the probes read on clean and autoencoded
held-out renders and the single-attribute oracle rows (elite/toy/oracles.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from elite.pixels import signed_pixels
from elite.toy.heldout import held_out_concepts, held_out_identities
from elite.toy.probes import HEADS, load_probes
from elite.toy.world import SCENES

SCENE_RE = re.compile(r"on the (" + "|".join(SCENES) + r")\b")


def prompt_scene(text: str) -> str | None:
    found = SCENE_RE.search(text)
    return found.group(1) if found else None


class ToyScorer:
    def __init__(
        self,
        probes_dir: Path,
        concepts_file: Path,
        size: int,
        toy=None,
        base: Path | None = None,
        out: Path | None = None,
    ):
        """`toy`: the params' toy section, `base`: the base model folder (its autoencoder), `out`: where the
        region probe is kept; all three only for the two-concept rows and `context`."""
        probes = load_probes(probes_dir)
        self.probes = probes
        self.identity, self.scene = probes["identity"], probes["scene"]
        self.concepts = json.loads(Path(concepts_file).read_text())
        self.size, self.toy, self.base, self.out = size, toy, base, out
        self._region = None

    @classmethod
    def find(cls, probes_dir: str | Path, subjects_file: str | Path, **kw) -> ToyScorer | None:
        """The scorer when both the probes and the toy concept attributes exist (toy profile), else None."""
        probes_dir, concepts = Path(probes_dir), Path(subjects_file).parent / "toy_concepts.json"
        if not concepts.is_file() or not (probes_dir / "probes.json").is_file():
            return None
        if "identity" not in json.loads((probes_dir / "probes.json").read_text()):
            return None
        with Image.open(next(p for p in sorted(Path(subjects_file).parent.glob("*/00.jpg")))) as im:
            size = im.width
        return cls(probes_dir, concepts, size, **kw)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BICUBIC)) for im in images])
        return signed_pixels(arr)

    def words(self) -> dict[str, str]:
        return {name: f"{c['colour']} {c['pattern']}" for name, c in self.concepts.items()}

    def _scene(self, x: torch.Tensor, text: str) -> list[float | None]:
        named = prompt_scene(text)
        if named is None:
            return [None] * len(x)
        return [float(HEADS["scene"][int(s)] == named) for s in self.scene.predict(x)["scene"]]

    def score(self, images: list[Image.Image], subject: str, text: str) -> list[dict]:
        """Per image: colour/pattern/class accuracy against the subject and the joint identity (class, colour and
        pattern all right), scene accuracy against the prompt's scene (None when the prompt names none)."""
        x = self._pixels(images)
        ident, want = self.identity.predict(x), self.concepts[subject]
        out = []
        for i, scene in enumerate(self._scene(x, text)):
            hit = {h: HEADS[h][ident[h][i]] == want[h] for h in ("colour", "pattern", "cls")}
            out.append(
                {
                    "colour_acc": float(hit["colour"]),
                    "pattern_acc": float(hit["pattern"]),
                    "identity_acc": float(all(hit.values())),
                    "class_acc": float(hit["cls"]),
                    "scene_acc": scene,
                }
            )
        return out

    def _region_probe(self):
        if self._region is None:
            from elite.toy.regions import region_probe

            t = self.toy
            self._region, render_acc = region_probe(
                self.out / "probes", t.size, t.bank // 2, t.probe_steps, t.seed + 7, held_out_identities(t.held_out)
            )
            print(f"region probe on fresh two-object renders: {render_acc}")
        return self._region

    def score_pair(self, images: list[Image.Image], pair: tuple[str, str], text: str) -> list[dict]:
        from elite.toy.regions import score_pair

        x = self._pixels(images)
        scores = score_pair(self._region_probe(), x, *(self.concepts[s] for s in pair))
        return [{**s, "scene_acc": scene} for s, scene in zip(scores, self._scene(x, text))]

    def context(self) -> dict:
        from diffusers import AutoencoderKL

        from elite.toy.oracles import oracle_rows, probe_check

        concepts = held_out_concepts(self.toy.held_out)
        vae = AutoencoderKL.from_pretrained(self.base, subfolder="vae")
        return {
            "probes": probe_check(self.probes, vae, concepts, self.size),
            "oracles": oracle_rows(self.probes, concepts, self.size),
        }


def toy_scorer(cfg, params) -> ToyScorer | None:
    """The `elite.scorers` entry point: the toy scorer when the evaluation set is the toy world's."""
    return ToyScorer.find(cfg.probes, cfg.subjects_file, toy=params.toy, base=Path(cfg.base), out=Path(cfg.out))
