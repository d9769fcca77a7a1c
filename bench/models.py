"""The models the figures run on, all with random weights (nothing is downloaded).

- smoke: the smoke profile's models, built by the project's own builders into a temporary folder and
  loaded back through `from_pretrained` (`ElitePipeline.from_pretrained`, `load_sam`).
- sd: a UNet with Stable Diffusion v1-4's configuration, a 768-wide 12-layer CLIP text encoder (SD
  v1's), a CLIP vision tower the size of ViT-L/14 (hidden 1024, 24 layers, 16 heads, patch 14, 224
  px), SD's VAE (for the training figure; generation decodes with the smoke VAE, see build_sd), and
  ELITE weights for them from `EliteModel.from_models(unet, tower, text_dim=768)`.
  Their configurations are elite/model_configs.py's (SD_UNET, SD_VAE, SD_TEXT, VIT_L14).
  The tokenizer and the image processor are the smoke ones (CLIP's real BPE; CLIP's 224 px inputs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, LMSDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

from elite import model_configs as configs
from elite.models.elite_model import EliteModel
from elite.pipeline import ElitePipeline


def build_smoke(root: Path, params) -> Path:
    """The smoke profile's models (base, image_encoder, elite, sam) in `root`, by the project's builders."""
    from elite.data.sam import prepare_sam
    from elite.smoke_models import build_base, build_image_encoder, init_elite_weights

    cfg = params.models
    build_base(root / "base", cfg.seed)
    build_image_encoder(root / "image_encoder", cfg.seed + 1)
    init_elite_weights(
        root / "base", root / "image_encoder", root / "elite", cfg.seed + 2, cfg.feature_layers, cfg.reference_depth
    )
    prepare_sam(cfg.sam, cfg.sam_type, root / "sam", cfg.seed + 5)
    return root


@dataclass
class Models:
    """One size's models, as the two pipelines share them."""

    name: str
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    image_encoder: CLIPVisionModel
    image_processor: CLIPImageProcessor
    elite: EliteModel
    scheduler_config: dict
    resolution: int
    vae_dir: Path  # `vae` saved as a diffusers folder (the latent cache fingerprints it)
    decode_vae: AutoencoderKL  # the VAE of the two pipelines (see build_sd)

    def elite_pipeline(self) -> ElitePipeline:
        """The ELITE pipeline; building it attaches ELITE's processors to the UNet."""
        pipe = ElitePipeline(
            vae=self.decode_vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=LMSDiscreteScheduler.from_config(self.scheduler_config),
            image_encoder=self.image_encoder,
            image_processor=self.image_processor,
            elite=self.elite,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sd_pipeline(self) -> StableDiffusionPipeline:
        """diffusers' plain Stable Diffusion pipeline on the same modules and the same sampler (LMS)."""
        pipe = StableDiffusionPipeline(
            vae=self.decode_vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=LMSDiscreteScheduler.from_config(self.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def load_smoke(root: Path) -> Models:
    pipe = ElitePipeline.from_pretrained(root / "base", root / "elite")
    return Models(
        "smoke",
        pipe.vae,
        pipe.text_encoder,
        pipe.tokenizer,
        pipe.unet,
        pipe.image_encoder,
        pipe.image_processor,
        pipe.elite,
        dict(pipe.scheduler.config),
        pipe.unet.config.sample_size * pipe.vae_scale_factor,
        root / "base" / "vae",
        pipe.vae,
    )


def sd_modules(
    resolution: int, seed: int
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPVisionModel]:
    """SD v1's UNet, VAE and text encoder and a ViT-L/14-sized CLIP tower (elite/model_configs.py), seeded, in
    eval mode."""
    torch.manual_seed(seed)
    unet = configs.unet(configs.SD_UNET, sample_size=resolution // 8).eval()
    torch.manual_seed(seed + 1)
    vae = configs.vae(configs.SD_VAE, sample_size=resolution).eval()
    torch.manual_seed(seed + 2)
    text_encoder = configs.clip_text(configs.SD_TEXT).eval()
    torch.manual_seed(seed + 3)
    tower = configs.clip_vision(configs.VIT_L14).eval()
    return unet, vae, text_encoder, tower


def build_sd(smoke: Models, smoke_root: Path, resolution: int, params, work: Path) -> Models:
    """SD-v1-sized models with random weights (seeded), sharing the smoke tokenizer and image processor.

    SD's VAE is `vae` (the training figure encodes with it); the pipelines decode with the smoke VAE
    (`decode_vae`, the same in both pipelines), so that at the few steps this machine affords the
    decode does not hide the per-step difference between the pipelines (with SD's VAE it would add the
    same seconds to both and pull the ratio towards 1)."""
    seed = params.models.seed
    unet, vae, text_encoder, tower = sd_modules(resolution, seed)
    elite = EliteModel.from_models(
        unet,
        tower,
        text_dim=configs.SD_TEXT["hidden_size"],
        image_encoder_name="random-vit-l14-sized",
        feature_layers=params.models.feature_layers,
        reference_depth=params.models.reference_depth,
        seed=seed + 4,
    )
    tokenizer = CLIPTokenizer.from_pretrained(smoke_root / "base", subfolder="tokenizer")
    processor = CLIPImageProcessor.from_pretrained(smoke_root / "image_encoder")
    scheduler = LMSDiscreteScheduler.from_pretrained(smoke_root / "base", subfolder="scheduler")
    vae_dir = work / "sd_vae"
    vae.save_pretrained(vae_dir)
    for model in (unet, vae, text_encoder, tower):
        model.requires_grad_(False)
    return Models(
        "sd",
        vae,
        text_encoder,
        tokenizer,
        unet,
        tower,
        processor,
        elite,
        dict(scheduler.config),
        resolution,
        vae_dir,
        smoke.decode_vae,
    )


def concept_image(root: Path, size: tuple[int, int] = (192, 256)) -> tuple[Path, Path]:
    """A JPEG of a textured disc on a gradient and its mask (white = disc), as a user would pass them."""
    w, h = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.3 * min(w, h)) ** 2
    rgb = np.stack([xx * 200 // w, yy * 200 // h, np.full_like(xx, 120)], -1).astype(np.uint8)
    rgb[disc] = (rng.integers(150, 255, (int(disc.sum()), 3))).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(root / "concept.jpg", quality=95)
    Image.fromarray((disc * 255).astype(np.uint8)).save(root / "concept_mask.png")
    return root / "concept.jpg", root / "concept_mask.png"


def scene(rng: np.random.Generator, w: int, h: int, k: int) -> tuple[np.ndarray, list[list[int]]]:
    """(H, W, 3) uint8 picture with k filled rectangles and ellipses over noise, and their boxes."""
    img = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    boxes = []
    for i in range(k):
        bw, bh = int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 6, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        if i % 2:
            inside = ((xx - x0 - bw / 2) / (bw / 2)) ** 2 + ((yy - y0 - bh / 2) / (bh / 2)) ** 2 <= 1
        else:
            inside = (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
        img[inside] = rng.integers(100, 256, 3)
        boxes.append([x0, y0, x0 + bw, y0 + bh])
    return img, boxes


def train_manifest(root: Path, n: int, seed: int, masks: bool = False) -> Path:
    """A training manifest (data/curated/*.jsonl format) of n generated JPEG scenes, the first object's box
    each; `masks`: that box as a mask PNG too (stage 2 reads masks), else "mask": null (stage 1)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        w, h = int(rng.integers(320, 480)), int(rng.integers(320, 480))
        img, boxes = scene(rng, w, h, 3)
        Image.fromarray(img).save(root / f"{i:03d}.jpg", quality=90)
        row = {"image": str(root / f"{i:03d}.jpg"), "box": boxes[0], "label": "Thing", "image_id": f"{i:03d}"}
        if masks:
            x0, y0, x1, y1 = boxes[0]
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y1, x0:x1] = 255
            Image.fromarray(mask).save(root / f"{i:03d}_mask.png")
            row.update(mask=str(root / f"{i:03d}_mask.png"), mask_source="box")
        lines.append(json.dumps({"mask": None, **row}))
    manifest = root / "rows.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
