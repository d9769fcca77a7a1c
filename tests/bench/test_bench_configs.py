"""bench's SD-v1-sized models are built from the named configurations of elite/model_configs.py (on the meta
device: their configurations without their weights)."""

from __future__ import annotations

import json

import torch

from bench.models import sd_modules
from elite import model_configs as configs


def values(config, keys) -> dict:
    get = config.__getitem__ if hasattr(config, "__getitem__") else config.__getattribute__
    return json.loads(json.dumps({k: get(k) for k in keys}))


def test_sd_sized_models_use_the_named_configs():
    with torch.device("meta"):
        unet, vae, text_encoder, tower = sd_modules(resolution=256, seed=0)
    for model, named in (
        (unet, configs.SD_UNET),
        (vae, configs.SD_VAE),
        (text_encoder, configs.SD_TEXT),
        (tower, configs.VIT_L14),
    ):
        assert values(model.config, named) == json.loads(json.dumps(dict(named))), type(model).__name__
    assert unet.config.sample_size == 256 // 8 and vae.config.sample_size == 256
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size == 768
    assert tower.config.num_hidden_layers == 24 and tower.config.patch_size == 14
