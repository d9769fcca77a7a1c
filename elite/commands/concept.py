"""`elite encode`: encode a concept once into a concept file that `elite generate --concept` reuses."""

from __future__ import annotations

import argparse
from pathlib import Path

from elite.commands.core import add_global_crop
from elite.config import load_params


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "encode",
        help="encode a concept image (or several) into a concept file (safetensors)",
        description="Run ELITE's mappers once on IMAGE (and its mask) and write the concept (its words, local "
        "tokens, and the hashes of the weights and images) to OUT; `elite generate --concept OUT` then samples "
        "from it without the images. Several IMAGEs of one concept are fused (elite.concepts).",
    )
    e.add_argument("image", nargs="+", metavar="IMAGE", help="concept image(s) (JPEG/PNG), object roughly centred")
    e.add_argument(
        "--mask",
        action="append",
        help="object mask (white = object), or `auto` (SAM, params mask.concept_*); one per IMAGE, in order, "
        "or one `auto` for all; without it the whole image is the object",
    )
    e.add_argument(
        "--image-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one weight per IMAGE (normalised; 0 leaves an image out): the words are their weighted mean and the "
        "local branch attends to each image's tokens in proportion (default: equal)",
    )
    e.add_argument("-o", "--out", required=True, help="output concept file (.safetensors)")
    e.add_argument("--weights", help="ELITE weights folder (default: params generate.weights)")
    e.add_argument("--image-encoder", help="CLIP vision tower (default: the one the weights' config names)")
    add_global_crop(e)
    e.set_defaults(func=encode_cmd)


def encode_cmd(args) -> None:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionModel

    from elite.commands.core import concept_mask, concept_masks
    from elite.concept_file import save_concept
    from elite.concepts import image_weights
    from elite.images import open_image
    from elite.models.elite_model import EliteModel
    from elite.pipeline import ConceptEncoder, _load, resolve_image_encoder

    params = load_params(args.params, args.profile)
    masks = concept_masks(args.mask, args.image, "--mask")
    image_weights(args.image_weights, len(args.image), "--image-weights")  # checked before loading models
    images = [open_image(path) for path in args.image]
    weights = Path(args.weights or params.generate.weights)
    elite = EliteModel.from_pretrained(weights)
    source = args.image_encoder or resolve_image_encoder(weights, elite.config.image_encoder)
    tower = _load("the image encoder", source, CLIPVisionModel.from_pretrained, dtype=torch.float32)
    processor = _load("the image processor", source, CLIPImageProcessor.from_pretrained)
    encoder = ConceptEncoder(elite, tower, processor, torch.device("cpu"), args.global_crop)
    with torch.no_grad():
        each = [concept_mask(m, i, params) if m else None for m, i in zip(masks, images)]
        concept = encoder(images, masks=each, weights=args.image_weights)
    print(f"wrote {save_concept(concept, args.out, elite)}")
