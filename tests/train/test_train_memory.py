"""Training for smaller cards (elite/train/memory.py): gradient checkpointing recomputes the frozen UNet's
activations and takes the same steps; the 8-bit optimiser is a one-line error without bitsandbytes."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import write_params

from elite.config import load_params
from elite.errors import EliteError
from elite.train.memory import checkpoint_unet, make_optimizer


def _train(params_path: Path, folder: Path) -> dict:
    from elite.train.loop import train
    from elite.train.stages import GlobalStage

    with contextlib.chdir(folder):
        return train(GlobalStage(load_params(params_path, profile="smoke").train_global), "smoke")


def test_checkpointing_recomputes_the_unet_in_backward(smoke_models):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(smoke_models / "base" / "unet").requires_grad_(False)
    calls = []
    resnet = unet.up_blocks[-1].resnets[0]  # after cross-attention: its input depends on the tokens
    forward = resnet.forward

    def counted(*args, **kwargs):  # torch's recomputation calls forward without the module's hooks
        calls.append(1)
        return forward(*args, **kwargs)

    resnet.forward = counted
    latents = torch.randn(1, unet.config.in_channels, 8, 8)
    for enabled in (False, True):
        checkpoint_unet(unet, enabled)
        calls.clear()
        tokens = torch.randn(1, 4, unet.config.cross_attention_dim, requires_grad=True)  # stands in for ELITE's
        unet(latents, 10, encoder_hidden_states=tokens).sample.square().mean().backward()
        assert len(calls) == (2 if enabled else 1), enabled  # forward, then again in backward when checkpointing
        assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_checkpointing_takes_the_same_steps(smoke_models, scenes, session_tmp):
    weights = []
    for on in (False, True):
        folder = session_tmp / f"train-checkpointing-{on}"
        update = {"max_steps": 3, "batch_size": 2, "sample_every": 0, "gradient_checkpointing": on}
        params = write_params(folder, smoke_models, scenes, {"train_global": update})
        metrics = _train(params, folder)
        weights.append((metrics["final_loss"], load_file(folder / "train_global" / "weights" / "elite.safetensors")))
    (loss_a, a), (loss_b, b) = weights
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    init = load_file(smoke_models / "elite" / "elite.safetensors")
    update = max((a[k] - init[k]).abs().max().item() for k in a)
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    assert update > 1e-3 and gap < 0.01 * update  # float rounding only


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_8bit_adam_without_bitsandbytes_is_one_line(params):
    cfg = params.train_global.model_copy(update={"optimizer": "adamw8bit"})
    with pytest.raises(EliteError) as err:
        make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))], 1e-4, "train_global")
    assert "\n" not in str(err.value) and str(err.value).startswith(
        "train_global.optimizer: adamw8bit needs bitsandbytes"
    )


def test_adamw_is_torchs(params):
    opt = make_optimizer(params.train_global, [torch.nn.Parameter(torch.zeros(2))], 1e-4, "train_global")
    assert type(opt) is torch.optim.AdamW and opt.defaults["eps"] == params.train_global.adam_epsilon
