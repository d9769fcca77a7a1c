"""Identity retrieval: does the concept ELITE encodes from one render carry its identity into *another* render
of that concept (new scene, position, size, rotation, pattern phase)?

A diffusion-classifier measure: the denoising loss of a target render conditioned on "a photo of a S*", with
S* encoded from each concept's reference render, averaged over fixed (noise, timestep) draws shared by all
concepts; the target is retrieved when its own concept gives the lowest loss. It needs no sampling and no
probe, so it is exact and cheap enough for the learning tests (tests/toy/test_toy_learning.py); chance is 1/K
for K concepts. `lam` > 0 adds the local branch (Eq. 8) with the reference's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from elite.models.attention import EliteConditioning
from elite.models.text import tokenize_plain
from elite.pixels import signed_pixels
from elite.toy.heldout import Concept, held_out_concepts
from elite.toy.world import SCENES, SceneSpec, render, sample_object
from elite.train.losses import diffusion_target


@dataclass
class Shot:
    image: Image.Image
    mask: Image.Image


def concept_shots(concept: Concept, count: int, size: int, seed: int) -> list[Shot]:
    """`count` renders of one concept, each on its own scene and pose."""
    rng = np.random.default_rng(seed)
    shots = []
    for _ in range(count):
        obj = sample_object(rng, cls=concept.cls, identity=concept.identity)
        spec = SceneSpec(str(rng.choice(SCENES)), (obj,), int(rng.integers(2**31)))
        r = render(spec, size)
        shots.append(Shot(Image.fromarray(r.image), Image.fromarray(r.masks[0].astype(np.uint8) * 255)))
    return shots


@torch.no_grad()
def target_latents(pipe, shots: list[Shot]) -> torch.Tensor:
    pixels = torch.stack([signed_pixels(s.image) for s in shots]).to(pipe.device, pipe.vae.dtype)
    return pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor


@dataclass
class Condition:
    text: torch.Tensor  # (1, L, D)
    slots: torch.Tensor | None = None  # (1,) position of w0, for the local branch
    local: torch.Tensor | None = None  # (1, P, D) local tokens


def concept_conditions(pipe, refs: list[list[Shot]], lam: float, prompt: str) -> list[Condition]:
    """S* encoded from each concept's reference renders (several: fused by encode_concept), in `prompt`;
    with the local tokens when `lam` > 0."""
    conds = []
    for shots in refs:
        concept = pipe.encode_concept([s.image for s in shots], masks=[s.mask for s in shots])
        text, slots = pipe.encode_prompts([prompt], concept)
        local = concept.local_tokens if lam > 0 else None
        conds.append(Condition(text, slots if local is not None else None, local))
    return conds


def named_conditions(pipe, concepts: list[Concept], prompt: str) -> list[Condition]:
    """The concept named in words ("a photo of a red checkered ball"): what the base's text path can do."""
    conds = []
    for concept in concepts:
        ids = tokenize_plain(pipe.tokenizer, [prompt.replace("S*", concept.words)]).to(pipe.device)
        conds.append(Condition(pipe.text_encoder(ids).last_hidden_state))
    return conds


@torch.no_grad()
def retrieval_losses(pipe, conds: list[Condition], targets: list[list[Shot]], lam: float, draws: int, seed: int):
    """(K concepts, T targets, K conditions) mean denoising loss, every condition on the same draws."""
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(targets), len(targets[0]), len(conds))
    for i, shots in enumerate(targets):
        for k, lat in enumerate(target_latents(pipe, shots)):
            noise = torch.randn((draws, *lat.shape), generator=gen).to(lat)
            t = torch.randint(0, sched.config.num_train_timesteps, (draws,), generator=gen).to(lat.device)
            x0 = lat.expand(draws, -1, -1, -1)
            noisy, target = sched.add_noise(x0, noise, t), diffusion_target(sched, x0, noise, t)
            for j, c in enumerate(conds):
                cond = EliteConditioning(
                    text=c.text.expand(draws, -1, -1),
                    local_tokens=None if c.local is None else c.local.expand(draws, -1, -1),
                    local_scale=None if c.local is None else torch.full((draws,), float(lam), device=lat.device),
                    word_index=None if c.local is None else c.slots.expand(draws),
                )
                pred = pipe.unet(noisy, t, encoder_hidden_states=cond).sample
                out[i, k, j] = (pred.float() - target.float()).pow(2).mean()
    return out


def identity_retrieval(
    pipe,
    held_out: list[list[str]],
    size: int,
    lam: float = 0.0,
    targets: int = 4,
    draws: int = 16,
    seed: int = 0,
    prompt: str = "a photo of a S*",
    named: bool = False,
    references: int = 1,
) -> float:
    """Share of target renders whose own concept denoises them best among the held-out concepts: S* encoded
    from `references` renders of each (or, `named`, the identity written in the prompt). The targets do
    not depend on `references`, so 1, 2, 3 references are compared on the same targets and draws."""
    concepts = held_out_concepts(held_out)
    shots = [
        concept_shots(concept, targets, size, seed + 1000 * n)
        + concept_shots(concept, references, size, seed + 1000 * n + 500)
        for n, concept in enumerate(concepts)
    ]
    if named:
        conds = named_conditions(pipe, concepts, prompt)
    else:
        conds = concept_conditions(pipe, [s[targets:] for s in shots], lam, prompt)
    losses = retrieval_losses(pipe, conds, [s[:targets] for s in shots], lam, draws, seed)
    own = torch.arange(len(concepts)).view(-1, 1).expand(-1, targets)
    return float((losses.argmin(dim=2) == own).float().mean())


def main(argv: list[str] | None = None) -> int:
    """`python -m elite.toy.retrieval`: held-out retrieval of trained weights, per lambda and reference count."""
    import argparse
    import json
    import sys

    from elite.config import load_params
    from elite.errors import EliteError
    from elite.pipeline import ElitePipeline

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--base", default="models/pretrained/base")
    parser.add_argument("--weights", default="models/elite")
    parser.add_argument("--lam", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--references", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--targets", type=int, default=16)
    parser.add_argument("--draws", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        toy = load_params(args.params, "toy").toy
        pipe = ElitePipeline.from_pretrained(args.base, elite_weights=args.weights)
    except EliteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pipe.set_progress_bar_config(disable=True)
    kw = {"targets": args.targets, "draws": args.draws}
    scores = {"named": identity_retrieval(pipe, toy.held_out, toy.size, named=True, **kw)}
    for lam in args.lam:
        for refs in args.references:
            score = identity_retrieval(pipe, toy.held_out, toy.size, lam=lam, references=refs, **kw)
            scores[f"lambda {lam:g}, {refs} image(s)"] = score
            print(f"lambda {lam:g}, {refs} image(s): {score:.3f}", flush=True)
    print(json.dumps({k: round(v, 4) for k, v in scores.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
