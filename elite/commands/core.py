"""Core commands: prepare-models, generate, import-official."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elite.config import load_params
from elite.errors import EliteError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-models", help="build (smoke) or fetch (paper) all models into models.dir")
    p.add_argument("--out", help="output folder (default: params models.dir)")
    p.set_defaults(func=prepare_models_cmd)
    _add_generate(sub)
    _add_import_official(sub)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "generate",
        help="generate images of a concept from one image (or several; or two concepts)",
        description="Encode IMG (and its mask) once, then sample PROMPT with S* standing for the concept. "
        "Repeat --image for several images of one concept; add --image2 for a second "
        "concept (the prompt then names them S1* and S2*).",
    )
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--image",
        action="append",
        help="concept image (JPEG/PNG), object roughly centred; repeat it for several images of the same concept",
    )
    src.add_argument("--concept", help="instead of an image: a concept file written by `elite encode`")
    src.add_argument(
        "--embeddings",
        help="instead of an image: words learned by `elite baseline ti|xti` (sampled on the base model)",
    )
    g.add_argument(
        "--mix-fine",
        help="with XTI --embeddings: style mixing, this XTI concept's words in the fine "
        "(high-resolution) layers, --embeddings' in the coarse ones",
    )
    g.add_argument(
        "--mask",
        action="append",
        help="object mask, white = object (RGB 0/255 or single-channel), or "
        "`auto`: SAM (models.dir/sam) masks the most salient object, by params mask.concept_*; without "
        "--mask the whole image is taken as the object; with several --image: one --mask per image, in "
        "order (or one `auto` for all)",
    )
    g.add_argument(
        "--image2",
        action="append",
        help="a second concept's image (repeatable); the prompt names the concepts S1* (--image) and S2* (--image2)",
    )
    g.add_argument("--mask2", action="append", help="masks of the --image2 images, as --mask")
    add_global_crop(g)
    g.add_argument(
        "--multi-concept",
        choices=["per_concept", "naive"],
        help="with two concepts: per_concept (each "
        "concept's local branch weighted by its own w0's attention) or naive (the baseline: one branch, "
        "summed maps) (params: generate.multi_concept)",
    )
    g.add_argument(
        "--prompt",
        required=True,
        help='prompt with one placeholder, e.g. "a S* on the beach" (two concepts: "a S1* next to a S2*")',
    )
    g.add_argument("--out", required=True, help="output PNG (with --num-images N: OUT_0.png ... OUT_{N-1}.png)")
    g.add_argument("--weights", help="ELITE weights folder (default: params generate.weights)")
    g.add_argument("--base", help="Stable Diffusion folder or hub id (default: <models.dir>/base)")
    g.add_argument(
        "--lam",
        type=lam_arg,
        help="local branch weight lambda (params: generate.lam), or per cross-attention block a JSON object as "
        'diffusers\' set_ip_adapter_scale, e.g. \'{"down": 0.8, "mid": 0, "up": {"block_1": 0.8}}\' (blocks left '
        "out: 0)",
    )
    g.add_argument(
        "--local-steps",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        default=(0.0, 1.0),
        help="fractions of the denoising with the local branch (default: 0 1, every step)",
    )
    g.add_argument("--steps", type=int, help="sampling steps (params: generate.steps)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (params: generate.guidance)")
    g.add_argument("--seed", type=int, help="random seed (params: generate.seed)")
    g.add_argument("--scheduler", help="lms | dpm++ | ddim | euler | pndm (params: generate.scheduler)")
    g.add_argument("--num-images", type=int, default=1, help="images to generate (default: 1)")
    g.add_argument(
        "--allow-bare-s", action="store_true", default=None, help="also accept a standalone 'S' as placeholder"
    )
    g.set_defaults(func=generate_cmd)


def _add_import_official(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("import-official", help="convert the authors' global_mapper.pt / local_mapper.pt")
    i.add_argument("--global", dest="global_path", required=True, help="the authors' global_mapper.pt")
    i.add_argument("--local", dest="local_path", help="the authors' local_mapper.pt (omit for a global-only model)")
    i.add_argument("--out", required=True, help="output folder for our safetensors weights")
    i.add_argument(
        "--image-encoder",
        default="openai/clip-vit-large-patch14",
        help="CLIP vision tower they were trained on (hub id or folder; default: %(default)s)",
    )
    i.add_argument("--vision-depth", type=int, default=24, help="layers of that tower (default: %(default)s)")
    i.set_defaults(func=import_official_cmd)


def prepare_models_cmd(args) -> None:
    from elite.prepare import prepare_models

    out = prepare_models(load_params(args.params, args.profile), Path(args.out) if args.out else None)
    print(f"models written to {out}")


def generate_cmd(args) -> None:
    # the arguments, params and input files are checked before torch, diffusers or a model loads: a bad input is
    # one line in well under a second (tests/core/test_cli.py checks that torch is not imported)
    from elite.images import open_image
    from elite.placeholders import find_placeholders
    from elite.schedulers import check_sampling

    params = load_params(args.params, args.profile)
    cfg = params.generate
    pick = lambda value, default: default if value is None else value  # noqa: E731

    allow_s = pick(args.allow_bare_s, cfg.allow_bare_s)
    groups = [args.image] + ([args.image2] if args.image2 else [])
    if (args.image2 or args.mask or args.mask2 or args.global_crop is not None) and not args.image:
        raise EliteError(
            "--mask, --image2, --mask2 and --global-crop go with --image (not with --embeddings or --concept)"
        )
    find_placeholders(args.prompt, len(groups) if args.image else 1, allow_s)
    if args.image:
        mask_groups = [
            concept_masks(args.mask, args.image, "--mask"),
            concept_masks(args.mask2, args.image2, "--mask2"),
        ]
    lam, steps, guidance = pick(args.lam, cfg.lam), pick(args.steps, cfg.steps), pick(args.guidance, cfg.guidance)
    scheduler = pick(args.scheduler, cfg.scheduler)
    check_sampling(lam, steps, guidance, args.num_images, scheduler, args.local_steps)
    base = pick(args.base, str(Path(params.models.dir) / "base"))
    if args.image:
        inputs = []
        for paths, masks in zip(groups, mask_groups):
            images = [open_image(path) for path in paths]
            inputs.append((images, [concept_mask(m, i, params) if m else None for m, i in zip(masks, images)]))
    import torch

    from elite.io import atomic_file
    from elite.pipeline import ElitePipeline

    if args.embeddings:
        from elite.baselines.inversion import Inversion, mix_styles

        learned = Inversion.load(args.embeddings)
        pipe = ElitePipeline.from_pretrained(base)
        levels = len(pipe.unet.config.block_out_channels)
        concept = mix_styles(learned, Inversion.load(args.mix_fine), levels) if args.mix_fine else learned.concept()
    elif args.concept:
        from elite.concept_file import load_concept

        concept = load_concept(args.concept)
        pipe = ElitePipeline.from_pretrained(base, pick(args.weights, cfg.weights))
    else:
        pipe = ElitePipeline.from_pretrained(base, pick(args.weights, cfg.weights))
        crop = args.global_crop
        concepts = [pipe.encode_concept(images, masks=masks, global_crop=crop) for images, masks in inputs]
        concept = concepts[0] if len(concepts) == 1 else concepts
    result = pipe(
        args.prompt,
        concept=concept,
        lam=lam,
        num_inference_steps=steps,
        guidance_scale=guidance,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(pick(args.seed, cfg.seed)),
        num_images_per_prompt=args.num_images,
        allow_bare_s=allow_s,
        multi_concept=pick(args.multi_concept, cfg.multi_concept),
        local_steps=tuple(args.local_steps),
    )
    out = Path(args.out)
    paths = (
        [out]
        if len(result.images) == 1
        else [out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}") for i in range(len(result.images))]
    )
    for img, path in zip(result.images, paths):
        with atomic_file(path, suffix=".png") as tmp:
            img.save(tmp, format="PNG")
        print(f"wrote {path}")


def add_global_crop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--global-crop",
        type=pixels_arg,
        metavar="PAD",
        help="M^g reads the mask's object box grown by PAD pixels instead of the whole image (stage 1 trains on "
        "such crops; the authors' inference, and the default, reads the whole image); needs --mask",
    )


def pixels_arg(text: str) -> int:
    """--global-crop: a whole number of pixels >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels >= 0, got {text!r}")
    return value


def lam_arg(text: str):
    """--lam: a number, or a JSON object of lambda per block (checked by check_sampling)."""
    import json

    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a number or a JSON object per block, got {text!r}")
    return value


def concept_masks(masks: list[str] | None, images: list[str] | None, flag: str) -> list[str | None]:
    """One mask argument per image: none, one per image in order, or a single `auto` for all of them."""
    from elite.automask import AUTO

    count = len(images or [])
    if not masks:
        return [None] * count
    if masks == [AUTO]:
        return masks * count
    if len(masks) != count:
        image_flag = flag.replace("mask", "image")
        raise EliteError(
            f"{flag}: got {len(masks)} masks for {count} {image_flag} image(s); give one {flag} per "
            f"{image_flag}, in order (or one `{flag} auto` for all)"
        )
    return masks


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

    model = convert_official(
        Path(args.global_path),
        Path(args.local_path) if args.local_path else None,
        args.image_encoder,
        args.vision_depth,
    )
    model.save_pretrained(Path(args.out))
    print(f"converted weights written to {args.out}")
