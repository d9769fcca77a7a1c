"""ELITE as an MLflow pyfunc model.

Artifacts: the ELITE weights, the CLIP vision tower they name and, when the register params ask for
it, a copy of the Stable Diffusion base model (otherwise `model_config["base"]` holds a path or hub
id). `load_context` loads the pipeline once; `predict` takes one request per row. The request schema is
versioned by the row's `version` (absent = 1, so requests written before version 2 work unchanged):

| column        | type   | version | meaning                                                          |
|---------------|--------|---------|------------------------------------------------------------------|
| version       | number | -       | 1 (default) or 2                                                 |
| image         | string | 1, req. | the concept image file (JPEG, PNG ...), base64                   |
| mask          | string | 1       | object mask file, base64, white = object (default: all image)    |
| concepts      | list   | 2, req. | one `{"images": [base64, ...], "masks": [base64 or null, ...]}` per   |
|               |        |         | concept (masks optional): several images of a concept are fused;  |
|               |        |         | two concepts are S1*, S2*                                        |
| multi_concept | string | 2       | per_concept (default; Eq. 8 per concept) or naive (the baseline)  |
| concept       | string | 1, 2    | instead of image/mask/concepts: a concept file (`elite encode`),  |
|               |        |         | base64; made with the model's own ELITE weights                  |
| prompt        | string | req.    | prompt with S* (one concept) or S1*, S2* (two concepts)          |
| lam           | number | no      | local-branch weight lambda, or per block an object               |
|               | object |         | {"down": .., "mid": .., "up": ..} (elite.models.local_control)    |
| local_steps   | list   | no      | [start, end] fractions of the denoising with the local branch    |
| global_crop   | number | no      | M^g reads the mask's object box + this many px, not the whole     |
|               |        |         | image (ElitePipeline.encode_concept; default: the whole image)   |
| steps         | number | no      | sampling steps (a whole number)                                  |
| guidance      | number | no      | classifier-free guidance scale                                   |
| seed          | number | no      | random seed (a whole number)                                     |
| negative_prompt | string | no    | plain text that guidance steers away from (default: none)        |
| height, width | number | no      | output size in pixels, multiples of 8 (default: the model's)     |

The output is one column `image`: the generated PNG, base64. Python callers may also pass the image
and mask files' bytes (a `string` column lets bytes through; `binary` would make MLflow's REST
parser fail on a row without a mask). Missing values take the defaults stored in `model_config` at
registration (params.yaml `register`); the inference param `scheduler` switches the sampler for one
call. The four numbers are declared `any` in the signature and checked here: MLflow's typed columns
refuse a JSON integer for a double (`"guidance": 5`) and a missing value in an integer column (a
batch that sets `steps` on some rows only). Bad input raises an MLflow INVALID_PARAMETER_VALUE error
naming the row and the field (HTTP 400 from `mlflow models serve`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image

from elite.concepts import Concept
from elite.config.models import GenerateConfig
from elite.errors import EliteError
from elite.registry.codec import decode_concept, decode_concepts, decode_image, decode_mask, encode_png

WEIGHTS = "elite_weights"  # artifact keys
IMAGE_ENCODER = "image_encoder"
BASE = "base"
REQUEST_VERSIONS = (1, 2)  # 2: several images per concept and several concepts (`concepts`, `multi_concept`)


def signature(scheduler: str) -> ModelSignature:
    inputs = Schema(
        [
            ColSpec(AnyType(), "version", required=False),
            ColSpec("string", "image", required=False),  # required in version 1, checked here
            ColSpec("string", "mask", required=False),
            ColSpec(AnyType(), "concepts", required=False),
            ColSpec("string", "multi_concept", required=False),
            ColSpec("string", "concept", required=False),
            ColSpec("string", "prompt"),
            ColSpec(AnyType(), "lam", required=False),
            ColSpec(AnyType(), "local_steps", required=False),
            ColSpec(AnyType(), "global_crop", required=False),
            ColSpec(AnyType(), "steps", required=False),
            ColSpec(AnyType(), "guidance", required=False),
            ColSpec(AnyType(), "seed", required=False),
            ColSpec("string", "negative_prompt", required=False),
            ColSpec(AnyType(), "height", required=False),
            ColSpec(AnyType(), "width", required=False),
        ]
    )
    return ModelSignature(
        inputs=inputs,
        outputs=Schema([ColSpec("string", "image")]),
        params=ParamSchema([ParamSpec("scheduler", "string", scheduler)]),
    )


def serving_defaults(generate: GenerateConfig, cuda_dtype: str) -> dict:
    """The model_config a model is stored with: params.yaml `generate` (what `elite generate` uses) and the GPU
    dtype; a loader may override any key (load_model(model_config=...) or MLFLOW_PYFUNC_INFERENCE_CONFIG), e.g.
    device "cpu" / "cuda:1" instead of "auto", and a request row lam/steps/guidance/seed."""
    return {
        "lam": generate.lam,
        "steps": generate.steps,
        "guidance": generate.guidance,
        "seed": generate.seed,
        "scheduler": generate.scheduler,
        "allow_bare_s": generate.allow_bare_s,
        "cuda_dtype": cuda_dtype,
        "device": "auto",
    }


def example_images(size: int = 64) -> tuple[Image.Image, Image.Image]:
    """A small synthetic concept (a red disc on blue) and its mask, for the stored input example."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.3) ** 2
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[..., 2] = 160
    rgb[disc] = (220, 30, 30)
    return Image.fromarray(rgb), Image.fromarray((disc * 255).astype(np.uint8), mode="L")


def input_example(prompt: str, steps: int, lam: float, guidance: float, seed: int) -> pd.DataFrame:
    image, mask = example_images()
    return pd.DataFrame(
        [
            {
                "image": encode_png(image),
                "mask": encode_png(mask),
                "prompt": prompt,
                "lam": float(lam),
                "steps": int(steps),
                "guidance": float(guidance),
                "seed": int(seed),
            }
        ]
    )


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict)) or np.ndim(value) != 0:
        return False
    return bool(pd.isna(value))


def _integer(value: Any, field: str) -> int:
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
        or int(value) != value
    ):
        raise EliteError(f"{field}: expected an integer, got {value!r}")
    return int(value)


def _number(value: Any, field: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EliteError(f"{field}: expected a number, got {value!r}")
    return float(value)


def _lam(value: Any):
    """lam: a number, or an object of lambda per cross-attention block."""
    from elite.models.local_control import check_lam

    if not isinstance(value, dict):
        return _number(value, "lam")
    check_lam(value)
    return value


def _steps(value: Any) -> tuple[float, float]:
    from elite.models.local_control import check_local_steps

    value = value.tolist() if isinstance(value, np.ndarray) else value
    return check_local_steps(list(value) if isinstance(value, (list, tuple)) else value)


class ElitePyfunc(PythonModel):
    """Loads ElitePipeline once per process; one generated image per input row."""

    def load_context(self, context) -> None:
        import torch

        from elite.pipeline import ElitePipeline

        cfg = dict(context.model_config or {})
        base = context.artifacts.get(BASE) or cfg.get("base")
        encoder = context.artifacts.get(IMAGE_ENCODER) or cfg.get("image_encoder")
        if not base:
            raise MlflowException("model has neither a base artifact nor model_config['base']")
        device = cfg.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = getattr(torch, cfg.get("cuda_dtype", "float32")) if device.startswith("cuda") else torch.float32
        try:
            pipe = ElitePipeline.from_pretrained(
                base, context.artifacts[WEIGHTS], image_encoder=encoder, torch_dtype=dtype
            )
        except EliteError as exc:
            raise MlflowException(f"cannot load the ELITE model: {exc}") from None
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(device)
        self.config = cfg

    def _row_inputs(self, row: dict) -> dict:
        from elite.placeholders import find_placeholders

        def pick(column: str):  # the row's value, else the default stored at registration
            value = row.get(column)
            return self.config[column] if _missing(value) else value

        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise EliteError("prompt: required, with one placeholder S* (e.g. 'a S* on the beach')")
        version = 1 if _missing(row.get("version")) else _integer(row["version"], "version")
        if version not in REQUEST_VERSIONS:
            raise EliteError(
                f"version: this model reads request versions {' and '.join(map(str, REQUEST_VERSIONS))}, got {version}"
            )
        if not _missing(row.get("concept")):
            concepts, mode = [self._file_concept(row)], "per_concept"
        else:
            concepts, mode = self._v2_concepts(row) if version == 2 else (self._v1_concept(row), "per_concept")
        find_placeholders(prompt, len(concepts), bool(self.config.get("allow_bare_s", False)))
        return {
            "prompt": prompt,
            "concepts": concepts,
            "multi_concept": mode,
            "lam": _lam(pick("lam")),
            "local_steps": (0.0, 1.0) if _missing(row.get("local_steps")) else _steps(row["local_steps"]),
            "global_crop": None if _missing(row.get("global_crop")) else _integer(row["global_crop"], "global_crop"),
            "steps": _integer(pick("steps"), "steps"),
            "guidance": _number(pick("guidance"), "guidance"),
            "seed": _integer(pick("seed"), "seed"),
            "negative_prompt": None if _missing(row.get("negative_prompt")) else str(row["negative_prompt"]),
            **{side: None if _missing(row.get(side)) else _integer(row[side], side) for side in ("height", "width")},
        }

    @staticmethod
    def _v1_concept(row: dict) -> list:
        """Version 1: one image (and mask) of one concept."""
        for field in ("concepts", "multi_concept"):
            if not _missing(row.get(field)):
                raise EliteError(f'{field}: a version-2 field; set "version": 2 in this row')
        if _missing(row.get("image")):
            raise EliteError("image: required (the concept image file, base64)")
        image = decode_image(row["image"], "image")
        mask = None if _missing(row.get("mask")) else decode_mask(row["mask"], image.size, "mask")
        return [([image], [mask])]

    @staticmethod
    def _file_concept(row: dict):
        """`concept`: a concept file's bytes, in place of the images (either version)."""
        for field in ("image", "mask", "concepts", "global_crop"):
            if not _missing(row.get(field)):
                raise EliteError(f"{field}: a row with a concept file (concept) has no images; send one or the other")
        return decode_concept(row["concept"], "concept")

    @staticmethod
    def _v2_concepts(row: dict) -> tuple[list, str]:
        """Version 2: `concepts` (images and masks of one or more concepts) and `multi_concept`."""
        from elite.concepts import check_multi_concept

        for field in ("image", "mask"):
            if not _missing(row.get(field)):
                raise EliteError(f"{field}: a version-1 field; a version-2 row puts its images and masks in concepts")
        if _missing(row.get("concepts")):
            raise EliteError('concepts: required in a version-2 row, e.g. [{"images": [base64, ...]}]')
        mode = "per_concept" if _missing(row.get("multi_concept")) else row["multi_concept"]
        check_multi_concept(mode)
        return decode_concepts(row["concepts"]), mode

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import torch

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        scheduler = (params or {}).get("scheduler") or self.config.get("scheduler")
        allow_bare_s = bool(self.config.get("allow_bare_s", False))
        out = []
        for i, row in enumerate(frame.to_dict("records")):
            try:
                args = self._row_inputs(row)
                concepts = [
                    c
                    if isinstance(c, Concept)
                    else self.pipe.encode_concept(c[0], masks=c[1], global_crop=args["global_crop"])
                    for c in args["concepts"]
                ]
                result = self.pipe(
                    args["prompt"],
                    concept=concepts[0] if len(concepts) == 1 else concepts,
                    lam=args["lam"],
                    num_inference_steps=args["steps"],
                    guidance_scale=args["guidance"],
                    scheduler=scheduler,
                    allow_bare_s=allow_bare_s,
                    multi_concept=args["multi_concept"],
                    negative_prompt=args["negative_prompt"],
                    height=args["height"],
                    width=args["width"],
                    local_steps=args["local_steps"],
                    generator=torch.Generator().manual_seed(args["seed"]),
                )
            except EliteError as exc:
                raise MlflowException.invalid_parameter_value(f"row {i}: {exc}") from None
            out.append(encode_png(result.images[0]))
        return pd.DataFrame({"image": out})
