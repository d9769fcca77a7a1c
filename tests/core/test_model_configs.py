"""The smoke profile's models are built from the named configurations of elite/model_configs.py (the one home of
the architectures): each saved folder loads back with those settings, and the smoke UNet has SD v1's structure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPVisionConfig, ViTConfig, ViTImageProcessor

from elite import model_configs as configs


def settings(loaded: Any, named: configs.Config) -> tuple[dict, dict]:
    """(the loaded config's values of the named keys, the named values), tuples as lists as in a config.json."""
    get = loaded.__getitem__ if isinstance(loaded, Mapping) else loaded.__getattribute__
    return json.loads(json.dumps({k: get(k) for k in named})), json.loads(json.dumps(dict(named)))


BUILT = [
    ("base/unet", UNet2DConditionModel.load_config, configs.SMOKE_UNET),
    ("base/vae", AutoencoderKL.load_config, configs.SMOKE_VAE),
    ("base/scheduler", PNDMScheduler.load_config, configs.SD_SCHEDULER),
    ("base/text_encoder", CLIPTextConfig.from_pretrained, configs.SMOKE_TEXT),
    ("image_encoder", CLIPVisionConfig.from_pretrained, configs.SMOKE_VISION),
    ("dino_eval", ViTConfig.from_pretrained, configs.EVAL_DINO),
]


@pytest.mark.parametrize("folder, load, named", BUILT, ids=[folder for folder, _, _ in BUILT])
def test_smoke_models_are_built_from_the_named_configs(smoke_models, folder, load, named):
    got, want = settings(load(smoke_models / folder), named)
    assert got == want


def test_smoke_clip_eval_is_built_from_its_named_config(smoke_models):
    loaded = CLIPConfig.from_pretrained(smoke_models / "clip_eval")
    named = configs.EVAL_CLIP
    assert loaded.projection_dim == named["projection_dim"]
    for tower in ("text_config", "vision_config"):
        got, want = settings(getattr(loaded, tower), named[tower])
        assert got == want, tower


@pytest.mark.parametrize(
    "folder, processor",
    [
        ("image_encoder", lambda: configs.clip_processor(configs.SMOKE_VISION["image_size"])),
        ("clip_eval", lambda: configs.clip_processor(configs.EVAL_RESOLUTION)),
        ("dino_eval", lambda: configs.vit_processor(configs.EVAL_RESOLUTION)),
    ],
    ids=["image_encoder", "clip_eval", "dino_eval"],
)
def test_smoke_processors_are_the_named_ones(smoke_models, folder, processor):
    kind = ViTImageProcessor if folder == "dino_eval" else CLIPImageProcessor
    assert kind.from_pretrained(smoke_models / folder).to_dict() == processor().to_dict()


def cross_attention_layers(unet: UNet2DConditionModel) -> int:
    return sum(name.endswith("attn2") for name, _ in unet.named_modules())


def test_the_smoke_unet_has_sd_v1s_structure_at_a_tiny_width(smoke_models):
    smoke = UNet2DConditionModel.from_pretrained(smoke_models / "base" / "unet")
    with torch.device("meta"):  # SD v1's size, without allocating its weights
        sd = configs.unet(configs.SD_UNET, sample_size=8)
    assert cross_attention_layers(smoke) == cross_attention_layers(sd) == 16
    assert smoke.config.cross_attention_dim == configs.SMOKE_TEXT["hidden_size"]
    assert sd.config.cross_attention_dim == configs.SD_TEXT["hidden_size"]


def test_named_configs_are_read_only():
    with pytest.raises(TypeError):
        configs.SMOKE_UNET["block_out_channels"] = (64,)  # type: ignore[index]
    with pytest.raises(TypeError):
        configs.EVAL_CLIP["text_config"]["hidden_size"] = 64  # type: ignore[index]
