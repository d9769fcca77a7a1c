"""`--mask auto`: SAM makes the concept's object mask when the user has none.

The rule is the DreamBench concept-mask rule of the mask stage (`elite.data.masking.concept_mask`, settings
from params.yaml `mask`): the most salient object, i.e. SAM prompted with the box of the largest automatic
mask that covers at most `mask.auto_max_area` of the image (`mask.concept_box: image` prompts with the
whole image instead; so does the fallback when the automatic generator finds nothing).
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from elite.errors import EliteError

AUTO = "auto"  # the value of --mask / encode_concept(mask=...) that asks for a SAM mask
_lock = threading.Lock()  # one SamPredictor holds one image at a time


@lru_cache(maxsize=2)
def box_masker(sam_dir: str, device: str, multimask: bool):
    """The SAM in `sam_dir` as a BoxMasker, loaded once per process (ViT-H is 2.4 GB)."""
    from elite.data.sam import BoxMasker, load_sam, resolve_device

    return BoxMasker(load_sam(Path(sam_dir), resolve_device(device)), multimask)


def mask_config(params_path: str | Path = "params.yaml", profile: str | None = None):
    from elite.config import load_params

    return load_params(params_path, profile).mask


def auto_mask(image: Image.Image, sam_dir: str | Path | None = None, cfg=None) -> Image.Image:
    """The object mask of `image` ('L', 255 = object) by the rule above. `sam_dir`: a folder with
    sam_config.json + checkpoint (default models/pretrained/sam, made by `elite prepare-models`); `cfg`: a
    MaskConfig (default: params.yaml's `mask` section)."""
    if importlib.util.find_spec("segment_anything") is None:  # SAM is in the pipeline extra, not the core
        raise EliteError(
            "--mask auto needs segment-anything: pip install 'elite-pipeline[pipeline]', or pass a mask file"
        )
    from elite.data.masking import concept_mask
    from elite.data.paths import SAM_DIR

    cfg = cfg or mask_config()
    sam_dir = Path(sam_dir or SAM_DIR)
    if not (sam_dir / "sam_config.json").is_file():
        raise EliteError(
            f"{sam_dir}: no SAM model (sam_config.json) for --mask auto; run `elite prepare-models` "
            "or pass a mask file"
        )
    masker = box_masker(str(sam_dir.resolve()), cfg.device, cfg.multimask)
    with _lock:
        mask, _, _ = concept_mask(masker, np.asarray(image.convert("RGB")), cfg)
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
