"""The toy world's evaluation set in DreamBench's folder layout (dreambench.source: toy).

One subject per held-out concept (elite/toy/heldout.py), named like DreamBench's (`red_checkered_ball`), with
renders of that object in several scenes at several sizes and positions (00.jpg is the concept image ELITE sees),
`prompts_and_classes.txt` in the published format with the toy world's prompt list, and `toy_concepts.json`:
subject -> colour, pattern, class, which the evaluation's probes score against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from elite.toy.heldout import held_out_concepts
from elite.toy.world import SCENES, SceneSpec, render, sample_object

CONCEPTS_FILE = "toy_concepts.json"
PROMPTS = [f"a {{0}} {{1}} on the {scene}" for scene in SCENES] + ["a photo of a {0} {1}"]


def write_toy_dreambench(out: Path, held_out: list[list[str]], size: int, seed: int, images_per_subject: int) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    concepts = {}
    for k, concept in enumerate(held_out_concepts(held_out)):
        name = concept.name
        concepts[name] = {"colour": concept.colour, "pattern": concept.pattern, "cls": concept.cls}
        (out / name).mkdir(exist_ok=True)
        for i in range(images_per_subject):
            obj = sample_object(rng, cls=concept.cls, identity=concept.identity)
            spec = SceneSpec(SCENES[(k + i) % len(SCENES)], (obj,), int(rng.integers(2**31)))
            Image.fromarray(render(spec, size).image).save(out / name / f"{i:02d}.jpg", quality=95)
    rows = "\n".join(f"{name},{c['cls']}" for name, c in concepts.items())
    entries = ",\n".join(f"'{p}'.format(unique_token, class_token)" for p in PROMPTS)
    lists = "\n".join(
        f"{heading}\n\nprompt_list = [\n{entries}\n]\n" for heading in ("Object Prompts", "Live Subject Prompts")
    )
    (out / "prompts_and_classes.txt").write_text(
        f"Classes\n\nsubject_name,class\n{rows}\n\nPrompts\n\n{lists}", encoding="utf-8"
    )
    (out / CONCEPTS_FILE).write_text(json.dumps(concepts, indent=2) + "\n")
    return out


def toy_dreambench(params, out: Path) -> Path:
    """Plug-in `toy` of `elite.dreambench` (dreambench.source: toy): the held-out concepts in DreamBench's layout."""
    cfg, toy = params.dreambench, params.toy
    return write_toy_dreambench(out, toy.held_out, toy.size, cfg.seed, cfg.toy_images)
