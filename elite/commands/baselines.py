"""`elite baseline ti|xti`: per-concept optimisation baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from elite.config import load_params


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "baseline",
        help="learn a concept by optimisation: Textual Inversion (ti) or Extended TI (xti)",
        description="Optimise the word(s) for S* on one image with the LDM loss. Defaults come from "
        "params.yaml `baselines.<method>`. Sample with `elite generate --embeddings OUT`.",
    )
    b.add_argument("method", choices=["ti", "xti"])
    b.add_argument("--image", required=True, help="the concept image")
    b.add_argument("--mask", help="object mask (white = object): the loss is taken inside it")
    b.add_argument("--class-word", required=True, help="initialisation, e.g. 'dog'")
    b.add_argument("--steps", type=int, help="optimisation steps (params: baselines.<method>.steps)")
    b.add_argument("--lr", type=float, help="learning rate (params: baselines.<method>.lr)")
    b.add_argument("--base", help="Stable Diffusion folder (default: <models.dir>/base)")
    b.add_argument("--seed", type=int, help="params: baselines.seed")
    b.add_argument("--out", required=True, help="output folder (learned_embeds.safetensors + inversion.json)")
    b.set_defaults(func=baseline_cmd)


def baseline_cmd(args) -> None:
    from elite.baselines.inversion import invert
    from elite.images import open_image, open_mask

    params = load_params(args.params, args.profile)
    cfg = getattr(params.baselines, args.method)
    cfg = cfg.model_copy(update={k: v for k, v in {"steps": args.steps, "lr": args.lr}.items() if v is not None})
    image = open_image(args.image)
    mask = open_mask(args.mask, image.size) if args.mask else None
    base = args.base or str(Path(params.models.dir) / "base")
    seed = params.baselines.seed if args.seed is None else args.seed
    result = invert(base, image, mask, args.method, cfg, args.class_word, seed, params.baselines.flip_p)
    result.save(args.out)
    print(
        f"{args.method}: {result.steps} steps in {result.seconds:.1f} s, final loss "
        f"{result.losses[-1]:.4f}; wrote {args.out}"
    )
