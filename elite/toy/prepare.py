"""prepare_models for the toy profile: train every stand-in on the toy world and save it in the real layout.

`models.dir` gets the same folders as in the paper profile, loaded by the same `from_pretrained` calls:
base/ (Stable Diffusion layout: tokenizer, CLIP text encoder, VAE, UNet, scheduler), image_encoder/ (CLIP
vision tower), clip_eval/ (the whole CLIP), dino_eval/ (a ViT trained self-supervised), sam/ (SAM fine-tuned
on box prompts), probes/ (the evaluation classifiers) and elite/ (fresh ELITE weights for this base).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import LMSDiscreteScheduler, StableDiffusionPipeline
from tqdm import tqdm
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPVisionModel

from elite.config import Params
from elite.io import atomic_dir
from elite.smoke_models import CLIP_MEAN, CLIP_STD, init_elite_weights, write_clip_tokenizer
from elite.toy import standins
from elite.toy.bank import make_bank
from elite.toy.dino import train_dino
from elite.toy.probes import save_probes, train_probe
from elite.toy.sam_tune import finetune_sam

MAX_TOKENS = 20  # the toy captions are short; the text tower's positions and the tokenizer's max length


def _bar(name: str, total: int):
    bar = tqdm(total=total, desc=name, unit="step", mininterval=2.0)

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")
        if step == total - 1:
            bar.close()

    return progress


def held_out(params: Params) -> frozenset[tuple[str, str]]:
    return frozenset((c, p) for c, p in params.toy.held_out)


def prepare_toy(params: Params, out: Path) -> None:
    cfg, seed = params.toy, params.toy.seed
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    bank = make_bank(cfg.bank, cfg.size, seed, two_object_share=cfg.two_object_share)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_clip_tokenizer(Path(tmp))
    tokenizer.model_max_length = MAX_TOKENS

    vae = standins.train_vae(standins.build_vae(cfg.size), bank, cfg.vae_steps, seed, progress=_bar("VAE", cfg.vae_steps))
    clip = standins.train_clip(standins.build_clip(cfg.size, MAX_TOKENS), tokenizer, bank, cfg.clip_steps, seed + 1,
                               progress=_bar("CLIP", cfg.clip_steps))
    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.text_model.load_state_dict(clip.text_model.state_dict())
    latents = standins.encode_latents(vae, bank.images)
    unet = standins.train_unet(
        standins.build_unet(cfg.size // 4, clip.config.text_config.hidden_size), text_encoder.eval(), tokenizer, latents,
        bank, cfg.unet_steps, seed + 2, cfg.caption_modes, frozenset() if cfg.name_held_out else held_out(params),
        batch=cfg.unet_batch, lr=cfg.unet_lr, drop_p=cfg.caption_drop, template_p=cfg.template_p, scene_p=cfg.scene_p,
        progress=_bar("UNet", cfg.unet_steps),
    )
    scheduler = LMSDiscreteScheduler.from_config(standins.build_scheduler().config)
    with atomic_dir(out / "base") as tmp:
        StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(tmp)
        (Path(tmp) / "toy_world.json").write_text(json.dumps(params.toy.model_dump(), indent=2) + "\n")

    processor = CLIPImageProcessor(size={"shortest_edge": cfg.size}, crop_size={"height": cfg.size, "width": cfg.size},
                                   image_mean=CLIP_MEAN, image_std=CLIP_STD)
    with atomic_dir(out / "image_encoder") as tmp:
        vision = CLIPVisionModel(clip.config.vision_config)
        vision.vision_model.load_state_dict(clip.vision_model.state_dict())
        vision.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    with atomic_dir(out / "clip_eval") as tmp:
        clip.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    with atomic_dir(out / "dino_eval") as tmp:
        train_dino(bank, cfg.dino_steps, seed + 3, Path(tmp), progress=_bar("DINO", cfg.dino_steps))
    with atomic_dir(out / "sam") as tmp:
        finetune_sam(bank, cfg.sam_steps, seed + 4, Path(tmp), progress=_bar("SAM", cfg.sam_steps))
    probes_bank = make_bank(cfg.bank, cfg.size, seed + 5)
    with atomic_dir(out / "probes") as tmp:
        identity = train_probe(probes_bank, ["colour", "pattern", "cls"], cfg.probe_steps, seed + 6,
                               progress=_bar("identity probe", cfg.probe_steps))
        scene = train_probe(probes_bank, ["scene"], cfg.probe_steps // 2, seed + 7,
                            progress=_bar("scene probe", cfg.probe_steps // 2))
        save_probes(Path(tmp), identity=identity, scene=scene)
    with atomic_dir(out / "elite") as tmp:
        init_elite_weights(out / "base", out / "image_encoder", tmp, seed + 8, params.models.feature_layers,
                           params.models.reference_depth)
