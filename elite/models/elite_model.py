"""All trainable ELITE weights in one module, saved as safetensors + a small JSON config."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save, save_file
from torch import nn

from elite.errors import EliteError
from elite.io import atomic_dir
from elite.models.attention import KVProjections, attach_processors
from elite.models.features import scaled_layers
from elite.models.mapping import GlobalMapper, LocalMapper

CONFIG_NAME = "elite_config.json"
WEIGHTS_NAME = "elite.safetensors"


@dataclass
class EliteModelConfig:
    vision_dim: int
    text_dim: int
    vision_depth: int
    feature_layers: list[int] = field(default_factory=lambda: [24, 4, 8, 12, 16])
    reference_depth: int = 24
    image_encoder: str = ""  # folder or hub id of the CLIP vision tower the mappers were trained on
    kv_shapes: dict[str, list[int]] = field(default_factory=dict)
    has_local: bool = True
    format_version: int = 1

    @property
    def layers(self) -> list[int]:
        """Hidden-state indices to read from the vision tower, in word order (w0 first)."""
        return scaled_layers(self.feature_layers, self.reference_depth, self.vision_depth)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> EliteModelConfig:
        """The config of an ELITE weights folder (without its weights)."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise EliteError(
                f"{directory}: no ELITE weights ({CONFIG_NAME} + {WEIGHTS_NAME}); build them with "
                "`elite prepare-models`, train them with `dvc repro`, or convert the authors' with "
                "`elite import-official`"
            )
        try:
            return cls(**json.loads((directory / CONFIG_NAME).read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise EliteError(f"{directory / CONFIG_NAME}: not a valid ELITE config ({exc})") from None


class EliteModel(nn.Module):
    def __init__(self, config: EliteModelConfig) -> None:
        super().__init__()
        self.config = config
        n = len(config.feature_layers)
        shapes = {k: (v[0], v[1], v[2]) for k, v in config.kv_shapes.items()}
        self.global_mapper = GlobalMapper(config.vision_dim, config.text_dim, n)
        self.global_kv = KVProjections(shapes)
        self.local_mapper = LocalMapper(config.vision_dim, config.text_dim, n) if config.has_local else None
        self.local_kv = KVProjections(shapes) if config.has_local else None
        self.weights_sha256: str | None = None  # of the weights file it was loaded from (from_pretrained)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @classmethod
    def from_models(
        cls,
        unet: nn.Module,
        image_encoder: nn.Module,
        text_dim: int,
        image_encoder_name: str,
        feature_layers: list[int] | None = None,
        reference_depth: int = 24,
        has_local: bool = True,
        seed: int = 0,
    ) -> EliteModel:
        """Fresh weights as training starts: mappers random (seeded), K/V copied from the UNet."""
        vcfg: Any = image_encoder.config  # a transformers config
        kv = KVProjections.from_unet(unet)
        config = EliteModelConfig(
            vision_dim=vcfg.hidden_size,
            text_dim=text_dim,
            vision_depth=vcfg.num_hidden_layers,
            feature_layers=list(feature_layers or [24, 4, 8, 12, 16]),
            reference_depth=reference_depth,
            image_encoder=image_encoder_name,
            kv_shapes={k: list(v) for k, v in kv.shapes().items()},
            has_local=has_local,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
        model.global_kv.load_state_dict(kv.state_dict())
        if model.local_kv is not None:
            model.local_kv.load_state_dict(kv.state_dict())
        return model.to(next(unet.parameters()).dtype)

    def add_local(self, unet: nn.Module, seed: int = 0) -> None:
        """Give a global-only (stage-1) model a fresh local branch, K_l/V_l from the UNet's original K/V."""
        if self.local_mapper is not None:
            return
        self.config.has_local = True
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.local_mapper = LocalMapper(
                self.config.vision_dim, self.config.text_dim, len(self.config.feature_layers)
            )
        self.local_kv = KVProjections.from_unet(unet)
        self.to(next(self.global_mapper.parameters()).dtype)

    def fingerprint(self) -> str:
        """SHA-256 of these weights: of the file they were loaded from (whatever dtype they run in now), else of
        the elite.safetensors that save_pretrained would write. Saved concepts record it (elite.concept_file)."""
        if self.weights_sha256 is None:
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            return hashlib.sha256(save(state)).hexdigest()
        return self.weights_sha256

    def attach(self, unet: nn.Module, use_local: bool = True) -> None:
        """Install ELITE processors on the UNet's cross-attention layers (self-attention is untouched)."""
        attach_processors(unet, self.global_kv, self.local_kv if use_local else None)

    def save_pretrained(self, directory: str | os.PathLike, image_encoder: str | None = None) -> None:
        """Weights + config; `image_encoder` replaces the tower named in the written config (not in this model's)."""
        config = asdict(self.config) | ({"image_encoder": image_encoder} if image_encoder is not None else {})
        with atomic_dir(Path(directory)) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, tmp / WEIGHTS_NAME)
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype: torch.dtype = torch.float32) -> EliteModel:
        directory = Path(directory)
        model = cls(EliteModelConfig.from_pretrained(directory))
        try:
            data = (directory / WEIGHTS_NAME).read_bytes()
            problems = model.load_state_dict(load(data), strict=False)
        except (SafetensorError, RuntimeError, OSError) as exc:  # a damaged file, or tensors of other shapes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise EliteError(
                f"{directory / WEIGHTS_NAME}: cannot load these weights ({first}); rebuild, retrain or re-convert them"
            ) from None
        if problems.missing_keys or problems.unexpected_keys:
            bad = (problems.missing_keys or problems.unexpected_keys)[0]
            raise EliteError(f"{directory / WEIGHTS_NAME}: weights do not match {CONFIG_NAME} (first mismatch: {bad})")
        model.weights_sha256 = hashlib.sha256(data).hexdigest()
        return model.to(dtype)
