"""The DINO-I stand-in: a transformers `ViTModel` in dino-vits16's layout (CLS features, ImageNet
normalisation), trained self-supervised on toy renders with a contrastive objective between two augmented
views of a render (crop, flip, blur, noise; no colour jitter: colour is what identity is made of). No
labels are used, as for DINO."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTModel

from elite import model_configs as configs
from elite.toy.bank import Bank
from elite.toy.fit import fit

MEAN = torch.tensor(configs.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(configs.IMAGENET_STD).view(1, 3, 1, 1)

# dino-vits16's layout at the toy size: a 4-layer ViT, 4 px patches (64 tokens at 32 px)
TOY_DINO = configs.tower(64, 128, 4, 4)


def build_dino(size: int) -> ViTModel:
    return configs.vit(configs.EVAL_DINO, **TOY_DINO, image_size=size, patch_size=4)


def _view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b, _, s, _ = x.shape
    scale = 0.7 + 0.3 * torch.rand(b, generator=gen)
    shift = (1 - scale)[:, None] * (2 * torch.rand(b, 2, generator=gen) - 1)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale * flip, scale, shift
    out = F.grid_sample(
        x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False, padding_mode="reflection"
    )
    soft = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    out = torch.where(torch.rand(b, 1, 1, 1, generator=gen) < 0.3, soft, out)
    return out + 0.03 * torch.randn(out.shape, generator=gen)


def dino_pixels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> ImageNet-normalised pixel values."""
    return ((images + 1) / 2 - MEAN) / STD


def train_dino(
    bank: Bank,
    steps: int,
    seed: int,
    out: Path,
    batch: int = 128,
    lr: float = 1e-3,
    temperature: float = 0.2,
    progress=None,
) -> ViTModel:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    size = bank.images.shape[-1]
    model = build_dino(size)
    head = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))

    def step_loss() -> torch.Tensor:
        x = bank.images[torch.randint(len(bank), (batch,), generator=gen)]
        a, b = (F.normalize(head(model(dino_pixels(_view(x, gen))).last_hidden_state[:, 0]), dim=-1) for _ in range(2))
        logits = a @ b.T / temperature
        labels = torch.arange(batch)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

    model.train()
    params = list(model.parameters()) + list(head.parameters())
    fit(params, steps, step_loss, lr, weight_decay=0.05, pct_start=0.1, progress=progress)
    model.eval().save_pretrained(out)
    configs.vit_processor(size).save_pretrained(out)
    return model
