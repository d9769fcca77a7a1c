"""The base model's gate: does it draw a concept when told? Sample "a <colour> <pattern> <class> on the <scene>"
for seen and held-out concepts (and the bare class word, whose identity accuracy should sit near chance) with the
evaluation's sampler (the base folder's scheduler, its steps), read the images with the probes, report each
attribute and the joint score (class, colour and pattern all right).

Guidance is swept; the guidance with the best joint score on *seen* concepts is the one reported (the held-out
rows never choose it). Run after prepare_models: `python -m elite.toy.gate --models models/pretrained` (also
called by the toy prepare step)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from elite.toy.heldout import Concept, held_out_concepts
from elite.toy.probes import HEADS, load_probes
from elite.toy.world import CLASSES, SCENES, identities


def seen_concepts(held_out: list[Concept]) -> list[Concept]:
    """Every (class, identity) whose identity is not held out, classes cycling through the identities."""
    held = {c.identity for c in held_out}
    ids = [i for i in identities() if i not in held]
    return [Concept(CLASSES[k % len(CLASSES)], *ids[k]) for k in range(len(ids))]


def gate_rows(concepts: list[Concept], n: int, named: bool) -> list[dict]:
    rows = []
    for k in range(n):
        c, scene = concepts[k % len(concepts)], SCENES[(k // len(concepts)) % len(SCENES)]
        words = c.words if named else c.cls
        rows.append(
            {
                "cls": c.cls,
                "colour": c.colour,
                "pattern": c.pattern,
                "scene": scene,
                "prompt": f"a {words} on the {scene}",
            }
        )
    return rows


def accuracies(probes, images: torch.Tensor, rows: list[dict]) -> dict[str, float]:
    """Per attribute and joint (class, colour and pattern all right) accuracy of `images` ([-1, 1]) against rows."""
    ident, scene = probes["identity"].predict(images), probes["scene"].predict(images)
    hit = {
        h: np.array([HEADS[h][int(p)] == r[h] for p, r in zip(ident[h], rows)]) for h in ("colour", "pattern", "cls")
    }
    return {
        "joint": float((hit["colour"] & hit["pattern"] & hit["cls"]).mean()),
        "colour": float(hit["colour"].mean()),
        "pattern": float(hit["pattern"].mean()),
        "class": float(hit["cls"].mean()),
        "scene": float(np.mean([SCENES[int(p)] == r["scene"] for p, r in zip(scene["scene"], rows)])),
        "images": len(rows),
    }


@torch.no_grad()
def sample(pipe, prompts: list[str], guidance: float, steps: int, seed: int, batch: int = 48) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = [
        pipe(
            prompts[i : i + batch], guidance_scale=guidance, num_inference_steps=steps, generator=gen, output_type="pt"
        ).images
        for i in range(0, len(prompts), batch)
    ]
    return torch.cat(out) * 2 - 1


def measure_base(
    models: Path, held_out: list[Concept], guidances: list[float], steps: int, n: int = 96, seed: int = 0
) -> dict:
    pipe = StableDiffusionPipeline.from_pretrained(models / "base", safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    probes = load_probes(models / "probes")
    sets = {
        "seen_named": gate_rows(seen_concepts(held_out), n, named=True),
        "held_out_named": gate_rows(held_out, n, named=True),
        "class_word": gate_rows(held_out, n, named=False),
    }
    sweep = {
        f"{g:g}": {
            name: accuracies(probes, sample(pipe, [r["prompt"] for r in rows], g, steps, seed), rows)
            for name, rows in sets.items()
        }
        for g in guidances
    }
    best = max(sweep, key=lambda g: sweep[g]["seen_named"]["joint"])
    chance = 1 / (len(HEADS["colour"]) * len(HEADS["pattern"]) * len(HEADS["cls"]))
    return {
        "sampler": type(pipe.scheduler).__name__,
        "steps": steps,
        "guidance": float(best),
        **sweep[best],
        "sweep": sweep,
        "chance": {"joint": chance, "colour": 1 / len(HEADS["colour"])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models/pretrained"))
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--guidance", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    toy = json.loads((args.models / "base" / "toy_world.json").read_text())
    gate = measure_base(args.models, held_out_concepts(toy["held_out"]), args.guidance, args.steps, args.images)
    print(json.dumps(gate, indent=2))


if __name__ == "__main__":
    main()
