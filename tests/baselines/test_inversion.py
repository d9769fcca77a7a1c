"""Textual Inversion / XTI baselines on the smoke base model."""

import numpy as np
import pytest
import torch
from PIL import Image

from elite.baselines.inversion import Inversion, InversionObjective, invert, mix_styles
from elite.config.baselines import InversionConfig
from elite.errors import EliteError
from elite.models.attention import layer_level
from elite.pipeline import ElitePipeline


@pytest.fixture(scope="module")
def base_pipe(smoke_models):
    pipe = ElitePipeline.from_pretrained(smoke_models / "base")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_base_pipeline_without_elite_is_plain_stable_diffusion(base_pipe, smoke_models):
    """With learned words equal to a real token's embedding, sampling equals diffusers' own pipeline."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(
        smoke_models / "base", safety_checker=None, requires_safety_checker=False
    )
    sd.scheduler = DDIMScheduler.from_config(sd.scheduler.config)
    sd.set_progress_bar_config(disable=True)
    dog = sd.tokenizer("dog", add_special_tokens=False).input_ids[0]
    word = sd.text_encoder.get_input_embeddings().weight[dog].detach()
    inv = Inversion("ti", "dog", {"S*": word}, 0, 0.0)
    ours = base_pipe(
        "a photo of a S*",
        concept=inv.concept(),
        scheduler="ddim",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    theirs = sd(
        "a photo of a dog",
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    with pytest.raises(EliteError, match="without ELITE weights"):
        base_pipe.encode_concept(Image.new("RGB", (32, 32)))


@pytest.fixture(scope="module")
def disc_image():
    yy, xx = np.mgrid[:64, :64]
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[(yy - 32) ** 2 + (xx - 32) ** 2 < 18**2] = (230, 40, 40)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("method, count", [("ti", 1), ("xti", 16)])
def test_inversion_learns_and_lowers_the_loss(smoke_models, disc_image, method, count, tmp_path):
    """The learned word(s) fit the image better than the class word: the loss on the same fixed draws
    (noise, timesteps, templates) is lower after optimisation."""
    objective = InversionObjective(smoke_models / "base", disc_image, None, method, "dog", flip_p=0.0)
    cfg = InversionConfig(lr=5e-2, steps=20, batch_size=2, weight_decay=0.0)
    result = invert(
        smoke_models / "base", disc_image, None, method, cfg, "dog", seed=0, progress=False, objective=objective
    )
    assert len(result.embeddings) == count and result.steps == 20 and result.seconds > 0
    learned = torch.stack([result.embeddings[k] for k in objective.keys])
    with torch.no_grad():
        before = objective.loss(objective.initial_words(), 16, torch.Generator().manual_seed(123)).item()
        after = objective.loss(learned, 16, torch.Generator().manual_seed(123)).item()
    assert after < before, (before, after)
    result.save(tmp_path / method)
    loaded = Inversion.load(tmp_path / method)
    assert loaded.method == method and set(loaded.embeddings) == set(result.embeddings)
    for k in result.embeddings:
        assert torch.equal(loaded.embeddings[k], result.embeddings[k].float())
    if method == "xti":  # words start equal (the class word) and move apart per layer
        assert (learned - learned[0]).abs().amax() > 0


def test_style_mixing_uses_coarse_and_fine_layers(smoke_models):
    keys = [
        "down_blocks_0_attentions_0_transformer_blocks_0_attn2",
        "down_blocks_2_attentions_1_transformer_blocks_0_attn2",
        "mid_block_attentions_0_transformer_blocks_0_attn2",
        "up_blocks_3_attentions_2_transformer_blocks_0_attn2",
    ]
    a = Inversion("xti", "dog", {k: torch.full((4,), 1.0) for k in keys}, 1, 0.0)
    b = Inversion("xti", "cat", {k: torch.full((4,), 2.0) for k in keys}, 1, 0.0)
    mixed = mix_styles(a, b, num_levels=4).layer_words
    assert [float(mixed[k].flatten()[0]) for k in keys] == [2.0, 1.0, 1.0, 2.0]
    assert [layer_level(k, 4) for k in keys] == [0, 2, 3, 0]
    with pytest.raises(EliteError, match="two XTI"):
        mix_styles(Inversion("ti", "dog", {"S*": torch.zeros(4)}, 1, 0.0), b, 4)


def test_cli_baseline_then_generate_with_embeddings(smoke_models, tmp_path, repo_root, disc_image, elite_cli):
    disc_image.save(tmp_path / "c.png")

    def run(*a):
        return elite_cli(*a, cwd=repo_root)

    for method in ("xti",):
        r = run(
            "baseline",
            method,
            "--image",
            tmp_path / "c.png",
            "--class-word",
            "ball",
            "--steps",
            2,
            "--base",
            smoke_models / "base",
            "--out",
            tmp_path / method,
        )
        assert r.returncode == 0, r.stderr
    r = run(
        "generate",
        "--embeddings",
        tmp_path / "xti",
        "--mix-fine",
        tmp_path / "xti",
        "--base",
        smoke_models / "base",
        "--prompt",
        "a S* on the beach",
        "--steps",
        2,
        "--out",
        tmp_path / "g.png",
    )
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "g.png").size == (64, 64)
    r = run("generate", "--embeddings", tmp_path / "missing", "--prompt", "a S*", "--out", tmp_path / "h.png")
    assert r.returncode == 2 and "elite baseline" in r.stderr
