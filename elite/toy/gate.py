"""The base model's gate: does it draw an identity when told? Sample "a <colour> <pattern> <class> on the
<scene>" for seen and held-out identities (and the bare class word, whose identity accuracy should sit near
chance), read the images with the probes, report accuracies. Run after prepare_models:
`python -m elite.toy.gate --models models/pretrained` (also called by the toy prepare step)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from elite.toy.probes import HEADS, load_probes
from elite.toy.world import CLASSES, SCENES, identities


def _rows(ids: list[tuple[str, str]], n: int, named: bool) -> list[dict]:
    rows = []
    for k in range(n):
        colour, pattern = ids[k % len(ids)]
        cls, scene = CLASSES[k % len(CLASSES)], SCENES[(k // len(CLASSES)) % len(SCENES)]
        words = f"{colour} {pattern} {cls}" if named else cls
        rows.append(
            {"colour": colour, "pattern": pattern, "cls": cls, "scene": scene, "prompt": f"a {words} on the {scene}"}
        )
    return rows


@torch.no_grad()
def measure_base(
    models: Path, held_out: set[tuple[str, str]], n: int = 96, guidance: float = 4.0, steps: int = 25, seed: int = 0
) -> dict:
    pipe = StableDiffusionPipeline.from_pretrained(models / "base", safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    probes = load_probes(models / "probes")
    seen = [i for i in identities() if i not in held_out]
    out = {}
    for name, ids, named in (
        ("seen_named", seen, True),
        ("held_out_named", sorted(held_out), True),
        ("class_word", seen, False),
    ):
        rows = _rows(ids, n, named)
        gen = torch.Generator().manual_seed(seed)
        images = (
            torch.cat(
                [
                    pipe(
                        [r["prompt"] for r in rows[i : i + 32]],
                        guidance_scale=guidance,
                        num_inference_steps=steps,
                        generator=gen,
                        output_type="pt",
                    ).images
                    for i in range(0, n, 32)
                ]
            )
            * 2
            - 1
        )
        ident, scene = probes["identity"].predict(images), probes["scene"].predict(images)
        hit = {
            h: np.array([HEADS[h][int(p)] == r[h] for p, r in zip(ident[h], rows)])
            for h in ("colour", "pattern", "cls")
        }
        out[name] = {
            "colour": float(hit["colour"].mean()),
            "pattern": float(hit["pattern"].mean()),
            "identity": float((hit["colour"] & hit["pattern"]).mean()),
            "class": float(hit["cls"].mean()),
            "scene": float(np.mean([SCENES[int(p)] == r["scene"] for p, r in zip(scene["scene"], rows)])),
            "images": n,
        }
    out["chance"] = {
        "identity": 1 / (len(HEADS["colour"]) * len(HEADS["pattern"])),
        "colour": 1 / len(HEADS["colour"]),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models/pretrained"))
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()
    toy = json.loads((args.models / "base" / "toy_world.json").read_text())
    print(json.dumps(measure_base(args.models, {tuple(h) for h in toy["held_out"]}, args.images), indent=2))


if __name__ == "__main__":
    main()
