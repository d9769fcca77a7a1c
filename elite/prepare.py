"""The prepare_models stage: put every model the pipeline needs into `models.dir`, loadable offline.

A world plug-in named by `models.base` (entry-point group `elite.models`, elite/plugins.py) builds every model
itself: `toy` trains every stand-in on the toy world (elite/toy/prepare.py). smoke: builds the tiny models.
paper: fetches the pinned pretrained models once (hub id), or copies a
local folder in the same layout (a pre-downloaded mirror). Either way later stages only ever read
`models.dir`, through the same `from_pretrained` calls. Every folder gets a `prepared.json` stamp
(profile + params hash) that the train, evaluate and register commands check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from elite.config import Params
from elite.config.prepared import STAMP, stamp
from elite.data.sam import prepare_sam
from elite.errors import EliteError
from elite.io import atomic_dir, write_json
from elite.plugins import MODELS, plugin
from elite.smoke_models import build_base, build_image_encoder, init_elite_weights

BUILTIN = "builtin"
BASE_FILES = [
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
ENCODER_FILES = ["config.json", "model.safetensors", "preprocessor_config.json"]
EVAL_FILES = [
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
]  # + weights: model.safetensors, else pytorch_model.bin


def fetch(source: str, dest: Path, patterns: list[str]) -> None:
    """Copy a local folder, or download the listed files of a hub repository, to `dest` atomically."""
    with atomic_dir(dest) as tmp:
        if Path(source).is_dir():
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            return
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(repo_id=source, local_dir=tmp, allow_patterns=patterns)
        except Exception as exc:  # network, auth and missing-repo errors all end here
            raise EliteError(
                f"cannot fetch {source!r} ({type(exc).__name__}); without internet, download it elsewhere and "
                f"set the models key to that folder in params.yaml"
            ) from None


FOLDERS = ("base", "image_encoder", "elite", "sam", "clip_eval", "dino_eval", "probes")  # the stage's outs


def prepare_models(params: Params, out: Path | None = None) -> Path:
    """Every model of the profile into `out` (default models.dir), each folder stamped with the profile and
    the hash of the params that built it (elite.config.prepared: later stages check it)."""
    out = Path(out or params.models.dir)
    build_models(params, out)
    for name in FOLDERS:
        if (out / name).is_dir():
            write_json(out / name / STAMP, stamp(params))
    return out


def build_models(params: Params, out: Path) -> None:
    cfg = params.models
    world = plugin(MODELS, cfg.base, "models.base") if cfg.base != BUILTIN else None
    if world is not None:  # a world plug-in builds every model of its profile (the toy world: elite/toy/prepare.py)
        world(params, out)
        return
    if cfg.base == BUILTIN:
        with atomic_dir(out / "base") as tmp:
            build_base(tmp, cfg.seed)
    else:
        fetch(cfg.base, out / "base", BASE_FILES)
    if cfg.image_encoder == BUILTIN:
        with atomic_dir(out / "image_encoder") as tmp:
            build_image_encoder(tmp, cfg.seed + 1)
    else:
        fetch(cfg.image_encoder, out / "image_encoder", ENCODER_FILES)
    init_elite_weights(
        out / "base", out / "image_encoder", out / "elite", cfg.seed + 2, cfg.feature_layers, cfg.reference_depth
    )
    prepare_eval_models(cfg, out)
    with atomic_dir(out / "probes") as tmp:  # the toy world's evaluation probes; none for real images
        write_json(tmp / "probes.json", {})
    prepare_sam(cfg.sam, cfg.sam_type, out / "sam", cfg.seed + 5)  # the mask stage's SAM


def prepare_eval_models(cfg, out: Path) -> None:
    """The metric models of the evaluate stage: out/clip_eval (CLIP-I, CLIP-T) and out/dino_eval (DINO-I)."""
    from elite.evaluate.eval_models import build_clip_eval, build_dino_eval

    for name, source, build, seed in (
        ("clip_eval", cfg.clip_eval, build_clip_eval, cfg.seed + 3),
        ("dino_eval", cfg.dino_eval, build_dino_eval, cfg.seed + 4),
    ):
        if source == BUILTIN:
            with atomic_dir(out / name) as tmp:
                build(tmp, seed)
            continue
        fetch(source, out / name, EVAL_FILES + ["model.safetensors"])
        if not (out / name / "model.safetensors").is_file():  # e.g. facebook/dino-vits16 ships only the .bin
            fetch(source, out / name, EVAL_FILES + ["pytorch_model.bin"])
