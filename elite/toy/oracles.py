"""What the probes can read, and what one attribute alone can score, on the held-out concepts.

- `probe_check`: the probes' accuracy on fresh clean renders of the held-out concepts and on the same renders
  passed through the base model's autoencoder (what any generated image goes through). A score on generated
  images is only as good as these two.
- `oracle_rows`: a generator that knows one attribute of the concept (its colour, pattern or class) and nothing
  else can do no better than draw one of the held-out concepts that share it; these rows are exactly that
  (renders of a sharing concept, in turn), scored by the same probes against the concept. They sit beside every
  identity score: ELITE must beat the best of them to show that it carries more than one attribute.
"""

from __future__ import annotations

import numpy as np
import torch

from elite.pixels import signed_pixels
from elite.toy.gate import accuracies
from elite.toy.heldout import ATTRIBUTES, Concept, single_attribute_oracles
from elite.toy.world import SCENES, SceneSpec, render, sample_object


def concept_renders(
    concepts: list[Concept], per_concept: int, size: int, seed: int
) -> tuple[torch.Tensor, list[dict]]:
    """`per_concept` fresh renders of each concept (scene, pose, pattern phase drawn) and their label rows."""
    rng = np.random.default_rng(seed)
    images, rows = [], []
    for c in concepts:
        for _ in range(per_concept):
            scene = str(rng.choice(SCENES))
            spec = SceneSpec(scene, (sample_object(rng, cls=c.cls, identity=c.identity),), int(rng.integers(2**31)))
            images.append(signed_pixels(render(spec, size).image))
            rows.append({"cls": c.cls, "colour": c.colour, "pattern": c.pattern, "scene": scene})
    return torch.stack(images), rows


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    out = [
        vae.decode(vae.encode(images[i : i + batch]).latent_dist.mean).sample.clamp(-1, 1)
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


def probe_check(probes, vae, concepts: list[Concept], size: int, per_concept: int = 40, seed: int = 11) -> dict:
    """{clean: {...}, reconstructed: {...}}: each attribute, the joint score and the scene, on held-out renders."""
    images, rows = concept_renders(concepts, per_concept, size, seed)
    return {
        "clean": accuracies(probes, images, rows),
        "reconstructed": accuracies(probes, reconstruct(vae, images), rows),
    }


def oracle_rows(probes, concepts: list[Concept], size: int, per_concept: int = 40, seed: int = 12) -> dict:
    """Per attribute: the joint score of renders of the held-out concepts that share only that attribute's value
    with the concept (in turn), and the bound it cannot pass (elite/toy/heldout.py)."""
    bounds = single_attribute_oracles(concepts)
    out = {}
    for attr in ATTRIBUTES:
        shown, wanted = [], []
        for c in concepts:
            sharing = [d for d in concepts if getattr(d, attr) == getattr(c, attr)]
            shown += [sharing[i % len(sharing)] for i in range(per_concept)]
            wanted += [c] * per_concept
        images = torch.cat([concept_renders([d], 1, size, seed + i)[0] for i, d in enumerate(shown)])
        rows = [{"cls": c.cls, "colour": c.colour, "pattern": c.pattern, "scene": None} for c in wanted]
        score = accuracies(probes, images, rows)
        out[f"{attr}_only"] = {"identity_acc": score["joint"], "bound": bounds[attr], "images": len(rows)}
    return out
