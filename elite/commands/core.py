"""Core commands: prepare-models, generate, import-official."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elite.config import load_params


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-models", help="build (smoke) or fetch (paper) all models into models.dir")
    p.add_argument("--out", help="output folder (default: params models.dir)")
    p.set_defaults(func=prepare_models_cmd)

    g = sub.add_parser("generate", help="generate images of a concept from one image",
                       description="Encode IMG (and its mask) once, then sample PROMPT with S* standing for the concept.")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="concept image (JPEG/PNG), object roughly centred")
    src.add_argument("--embeddings", help="instead of an image: words learned by `elite baseline ti|xti` (sampled "
                                          "on the base model)")
    g.add_argument("--mix-fine", help="with XTI --embeddings: style mixing, this XTI concept's words in the fine "
                                      "(high-resolution) layers, --embeddings' in the coarse ones")
    g.add_argument("--mask", help="object mask, white = object (RGB 0/255 or single-channel), or `auto`: SAM "
                                  "(models.dir/sam) masks the most salient object, by params mask.concept_*; "
                                  "without --mask the whole image is taken as the object")
    g.add_argument("--prompt", required=True, help='prompt with one placeholder, e.g. "a S* on the beach"')
    g.add_argument("--out", required=True, help="output PNG (with --num-images N: OUT_0.png ... OUT_{N-1}.png)")
    g.add_argument("--weights", help="ELITE weights folder (default: params generate.weights)")
    g.add_argument("--base", help="Stable Diffusion folder or hub id (default: <models.dir>/base)")
    g.add_argument("--lam", type=float, help="local branch weight lambda (params: generate.lam)")
    g.add_argument("--steps", type=int, help="sampling steps (params: generate.steps)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (params: generate.guidance)")
    g.add_argument("--seed", type=int, help="random seed (params: generate.seed)")
    g.add_argument("--scheduler", help="lms | dpm++ | ddim | euler | pndm (params: generate.scheduler)")
    g.add_argument("--num-images", type=int, default=1, help="images to generate (default: 1)")
    g.add_argument("--allow-bare-s", action="store_true", default=None, help="also accept a standalone 'S' as placeholder")
    g.set_defaults(func=generate_cmd)

    i = sub.add_parser("import-official", help="convert the authors' global_mapper.pt / local_mapper.pt")
    i.add_argument("--global", dest="global_path", required=True, help="the authors' global_mapper.pt")
    i.add_argument("--local", dest="local_path", help="the authors' local_mapper.pt (omit for a global-only model)")
    i.add_argument("--out", required=True, help="output folder for our safetensors weights")
    i.add_argument("--image-encoder", default="openai/clip-vit-large-patch14",
                   help="CLIP vision tower they were trained on (hub id or folder; default: %(default)s)")
    i.add_argument("--vision-depth", type=int, default=24, help="layers of that tower (default: %(default)s)")
    i.set_defaults(func=import_official_cmd)


def prepare_models_cmd(args) -> None:
    from elite.prepare import prepare_models

    out = prepare_models(load_params(args.params, args.profile), Path(args.out) if args.out else None)
    print(f"models written to {out}")


def generate_cmd(args) -> None:
    import torch

    from elite.io import atomic_file
    from elite.pipeline import ElitePipeline, check_sampling

    params = load_params(args.params, args.profile)
    cfg = params.generate
    pick = lambda value, default: default if value is None else value  # noqa: E731
    # inputs are validated before any model is loaded
    from elite.images import open_image
    from elite.models.text import find_placeholder

    allow_s = pick(args.allow_bare_s, cfg.allow_bare_s)
    find_placeholder(args.prompt, allow_s)
    lam, steps, guidance = pick(args.lam, cfg.lam), pick(args.steps, cfg.steps), pick(args.guidance, cfg.guidance)
    scheduler = pick(args.scheduler, cfg.scheduler)
    check_sampling(lam, steps, guidance, args.num_images, scheduler)
    base = pick(args.base, str(Path(params.models.dir) / "base"))
    if args.embeddings:
        from elite.baselines.inversion import Inversion, mix_styles

        learned = Inversion.load(args.embeddings)
        pipe = ElitePipeline.from_pretrained(base)
        levels = len(pipe.unet.config.block_out_channels)
        concept = mix_styles(learned, Inversion.load(args.mix_fine), levels) if args.mix_fine else learned.concept()
    else:
        image = open_image(args.image)
        mask = concept_mask(args.mask, image, params) if args.mask else None
        pipe = ElitePipeline.from_pretrained(base, pick(args.weights, cfg.weights))
        concept = pipe.encode_concept(image, mask)
    result = pipe(args.prompt, concept=concept, lam=lam, num_inference_steps=steps, guidance_scale=guidance, scheduler=scheduler,
                  generator=torch.Generator().manual_seed(pick(args.seed, cfg.seed)), num_images_per_prompt=args.num_images,
                  allow_bare_s=allow_s)
    out = Path(args.out)
    paths = [out] if len(result.images) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}") for i in range(len(result.images))]
    for img, path in zip(result.images, paths):
        with atomic_file(path, suffix=".png") as tmp:
            img.save(tmp, format="PNG")
        print(f"wrote {path}")


def concept_mask(mask: str, image, params):
    """--mask: a mask file, or `auto` (SAM's mask of the most salient object)."""
    import numpy as np

    from elite.automask import AUTO, auto_mask
    from elite.images import open_mask

    if mask != AUTO:
        return open_mask(mask, image.size)
    result = auto_mask(image, Path(params.models.dir) / "sam", params.mask)
    share = (np.asarray(result) > 0).mean()
    print(f"mask: SAM, most salient object ({share:.0%} of the image)", file=sys.stderr)
    return result


def import_official_cmd(args) -> None:
    from elite.models.official import convert_official

    model = convert_official(Path(args.global_path), Path(args.local_path) if args.local_path else None,
                             args.image_encoder, args.vision_depth)
    model.save_pretrained(Path(args.out))
    print(f"converted weights written to {args.out}")
