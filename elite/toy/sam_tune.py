"""The SAM stand-in: segment-anything's architecture at the tiny size of the smoke profile, trained here on
box prompts against the renderer's exact masks, and saved like a released checkpoint (sam_config.json +
state dict), so the mask stage loads it through the same code as SAM ViT-H."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from elite.data.sam import TINY_ARCH, build_tiny_sam, write_tiny_sam
from elite.toy.bank import Bank
from elite.toy.fit import fit


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool -> (B, 4) boxes x0, y0, x1, y1 in pixels (end exclusive)."""
    rows, cols = masks.any(2), masks.any(1)
    idx = torch.arange(masks.shape[-1])
    big = masks.shape[-1] + 1
    x0 = torch.where(cols, idx, big).min(1).values
    x1 = torch.where(cols, idx, -1).max(1).values + 1
    y0 = torch.where(rows, idx, big).min(1).values
    y1 = torch.where(rows, idx, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], 1).float()


def sam_logits(sam, images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 3, S, S) in [-1, 1], boxes (B, 4) pixels -> mask logits (B, 3, S, S) and IoU predictions (B, 3)."""
    size = sam.image_encoder.img_size
    scale = size / images.shape[-1]
    x = sam.preprocess(F.interpolate((images + 1) * 127.5, size=(size, size), mode="bilinear", align_corners=False))
    emb = sam.image_encoder(x)
    logits, ious = [], []
    for i in range(len(images)):
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes[i : i + 1] * scale, masks=None)
        low, iou = sam.mask_decoder(
            image_embeddings=emb[i : i + 1],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        logits.append(F.interpolate(low, size=images.shape[-2:], mode="bilinear", align_corners=False))
        ious.append(iou)
    return torch.cat(logits), torch.cat(ious)


def finetune_sam(bank: Bank, steps: int, seed: int, out: Path, batch: int = 16, lr: float = 1e-3, progress=None):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sam = build_tiny_sam(TINY_ARCH)

    def step_loss() -> torch.Tensor:
        idx = torch.randint(len(bank), (batch,), generator=gen)
        target = bank.masks[idx].float()[:, None]
        logits, iou_pred = sam_logits(sam, bank.images[idx], mask_boxes(bank.masks[idx]))
        bce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none").mean((2, 3))
        prob = logits.sigmoid()
        inter, union = (prob * target).sum((2, 3)), (prob + target - prob * target).sum((2, 3))
        loss_each = bce + (1 - (inter + 1) / (union + 1))
        best = loss_each.argmin(1)
        with torch.no_grad():
            hard = (logits > 0).float()
            true_iou = (hard * target).sum((2, 3)) / (hard + target - hard * target).sum((2, 3)).clamp_min(1)
        return loss_each.gather(1, best[:, None]).mean() + F.mse_loss(iou_pred, true_iou)

    sam.train()
    fit(sam.parameters(), steps, step_loss, lr, weight_decay=1e-4, pct_start=0.1, progress=progress)
    sam.eval()
    write_tiny_sam(out, seed, model=sam)
    return sam
