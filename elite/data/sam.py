"""Segment Anything: building, fetching and loading the model, and box-prompted masks.

`models/pretrained/sam/` holds `sam_config.json` ({"type": "vit_h" | "vit_l" | "vit_b" | "tiny",
"checkpoint": file name, "arch": sizes for "tiny"}) and the checkpoint, a plain state dict as Meta
publishes it (`sam_vit_h_4b8939.pth`). Both profiles load it the same way: build the architecture
from `segment_anything` (its registry for the ViT types, its modeling classes for the tiny one),
`torch.load(weights_only=True)`, `load_state_dict(strict=True)`.

The smoke profile's tiny SAM is the real architecture (ViT image encoder with windowed and global
attention, prompt encoder, two-way transformer mask decoder) at a tiny size with random weights
(under 100k parameters, 64 px input): its masks are not meaningful, the code path is.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from tqdm import tqdm

from elite.errors import EliteError
from elite.io import atomic_dir, read_json

CONFIG = "sam_config.json"
SAM_TYPES = ("vit_h", "vit_l", "vit_b", "tiny")
TINY_ARCH = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "window_size": 4,
    "global_attn_indexes": [1],
    "prompt_embed_dim": 32,
    "mask_in_chans": 8,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_heads": 2,
    "iou_head_hidden_dim": 32,
}
PIXEL_MEAN = [123.675, 116.28, 103.53]  # SAM's ImageNet normalisation, as in segment_anything.build_sam
PIXEL_STD = [58.395, 57.12, 57.375]


def build_tiny_sam(arch: dict):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    size, patch, dim = arch["img_size"], arch["patch_size"], arch["prompt_embed_dim"]
    encoder = ImageEncoderViT(
        img_size=size,
        patch_size=patch,
        embed_dim=arch["embed_dim"],
        depth=arch["depth"],
        num_heads=arch["num_heads"],
        mlp_ratio=arch["mlp_ratio"],
        out_chans=dim,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=arch["window_size"],
        global_attn_indexes=tuple(arch["global_attn_indexes"]),
    )
    prompt = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(size // patch, size // patch),
        input_image_size=(size, size),
        mask_in_chans=arch["mask_in_chans"],
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=arch["decoder_depth"],
            embedding_dim=dim,
            mlp_dim=arch["decoder_mlp_dim"],
            num_heads=arch["decoder_heads"],
        ),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=arch["iou_head_hidden_dim"],
    )
    return Sam(
        image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD
    )


def build_sam_model(config: dict):
    """The SAM architecture named by a sam_config.json, with untrained weights."""
    kind = config.get("type")
    if kind == "tiny":
        return build_tiny_sam({**TINY_ARCH, **config.get("arch", {})})
    if kind in SAM_TYPES:
        from segment_anything import sam_model_registry

        return sam_model_registry[kind](checkpoint=None)
    raise EliteError(f"{CONFIG}: type must be one of {', '.join(SAM_TYPES)}, got {kind!r}")


def write_tiny_sam(out: Path, seed: int, model=None) -> None:
    """Save the tiny SAM (`model`, else random weights from `seed`) like the released checkpoints."""
    if model is None:
        torch.manual_seed(seed)
        model = build_tiny_sam(TINY_ARCH)
    torch.save(model.state_dict(), out / "sam_tiny.pth")
    (out / CONFIG).write_text(
        json.dumps({"type": "tiny", "checkpoint": "sam_tiny.pth", "arch": TINY_ARCH}, indent=2) + "\n"
    )


def prepare_sam(source: str, sam_type: str, out: Path, seed: int) -> None:
    """models.sam: "builtin" builds the tiny SAM; a path or http(s) URL of a checkpoint is copied/fetched."""
    if source == "builtin":
        if sam_type != "tiny":
            raise EliteError(f"params.yaml: models.sam is builtin, so models.sam_type must be tiny (got {sam_type})")
        with atomic_dir(out) as tmp:
            write_tiny_sam(tmp, seed)
        return
    is_url = urlparse(source).scheme in ("http", "https")
    name = Path(urlparse(source).path).name if is_url else Path(source).name
    with atomic_dir(out) as tmp:
        if is_url:
            _download(source, tmp / name)
        elif Path(source).expanduser().is_file():
            shutil.copyfile(Path(source).expanduser(), tmp / name)
        else:
            raise EliteError(f"params.yaml: models.sam: {source} is not a file or an http(s) URL of a SAM checkpoint")
        (tmp / CONFIG).write_text(json.dumps({"type": sam_type, "checkpoint": name}, indent=2) + "\n")


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise EliteError(
            f"cannot fetch {url} ({getattr(exc, 'reason', exc)}); without internet, download it elsewhere "
            f"and set models.sam in params.yaml to the file"
        ) from None


def load_sam(sam_dir: Path, device: str):
    """The SAM saved in `sam_dir` (sam_config.json + checkpoint), on `device`, in eval mode."""
    sam_dir = Path(sam_dir)
    config = read_json(sam_dir / CONFIG, dict, "SAM config", "run `elite prepare-models` first")
    model = build_sam_model(config)
    ckpt = sam_dir / str(config.get("checkpoint"))
    if not ckpt.is_file():
        raise EliteError(f"{ckpt}: SAM checkpoint missing; run `elite prepare-models` again")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise EliteError(f"{ckpt}: not a {config['type']} SAM state dict ({str(exc).splitlines()[0][:160]})") from None
    return model.to(device).eval()


def sam_fingerprint(sam_dir: Path) -> str:
    """SHA-256 of sam_config.json and the checkpoint it names (what the masks were made with)."""
    sam_dir = Path(sam_dir)
    digest = hashlib.sha256((sam_dir / CONFIG).read_bytes())
    with open(sam_dir / json.loads((sam_dir / CONFIG).read_text())["checkpoint"], "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EliteError("params.yaml: mask.device is cuda but no CUDA device is visible; use auto or cpu")
    return device


class BoxMasker:
    """SAM masks for boxes: one image-encoder pass per image, all its boxes in one batched prompt call."""

    def __init__(self, model, multimask: bool):
        from segment_anything import SamPredictor

        self.model = model
        self.predictor = SamPredictor(model)
        self.multimask = multimask

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, boxes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """image: (H, W, 3) uint8 RGB; boxes: [[x0, y0, x1, y1], ...] pixels. Returns masks (K, H, W) bool
        and SAM's predicted IoU (K,) of each kept mask."""
        self.predictor.set_image(image)
        b = torch.as_tensor(boxes, dtype=torch.float32, device=self.predictor.device)
        b = self.predictor.transform.apply_boxes_torch(b, image.shape[:2])
        masks, iou, _ = self.predictor.predict_torch(None, None, boxes=b, multimask_output=self.multimask)
        best = iou.argmax(dim=1)
        pick = torch.arange(len(boxes), device=masks.device)
        return masks[pick, best].cpu().numpy(), iou[pick, best].float().cpu().numpy()

    def dominant_box(
        self, image: np.ndarray, points_per_side: int, pred_iou: float, stability: float, max_area: float
    ) -> list[int] | None:
        """Box of the largest automatic mask covering at most `max_area` of the image, or None."""
        from segment_anything import SamAutomaticMaskGenerator

        gen = SamAutomaticMaskGenerator(
            self.model, points_per_side=points_per_side, pred_iou_thresh=pred_iou, stability_score_thresh=stability
        )
        h, w = image.shape[:2]
        found = [m for m in gen.generate(image) if m["area"] <= max_area * h * w]
        if not found:
            return None
        x, y, bw, bh = max(found, key=lambda m: m["area"])["bbox"]
        return [int(x), int(y), int(x + bw), int(y + bh)]
