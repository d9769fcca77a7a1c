"""`pipe.load_elite(weights)` on a diffusers Stable Diffusion pipeline (elite.loader), on the smoke models:
unloading gives back the plain pipeline bit for bit, and with ELITE loaded the images are ElitePipeline's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import LMSDiscreteScheduler, StableDiffusionPipeline
from PIL import Image

from elite.errors import EliteError
from elite.loader import EliteStableDiffusionPipeline
from elite.models.attention import EliteCrossAttnProcessor, KeepProcessor
from elite.models.elite_model import EliteModel

STEPS = 3


@pytest.fixture(scope="module")
def sd_pipe(smoke_models):
    """The smoke base as diffusers' own StableDiffusionPipeline (LMS, the paper's sampler), then the ELITE
    class made from it with `from_pipe` (same components, nothing reloaded)."""
    sd = StableDiffusionPipeline.from_pretrained(
        smoke_models / "base", safety_checker=None, requires_safety_checker=False
    )
    sd.scheduler = LMSDiscreteScheduler.from_config(sd.scheduler.config)
    sd.set_progress_bar_config(disable=True)
    pipe = EliteStableDiffusionPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _plain(pipe, **kw) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    return pipe("a photo of a ball", num_inference_steps=STEPS, generator=g, output_type="np", **kw).images


def _concept_image() -> Image.Image:
    return Image.fromarray((np.random.default_rng(3).random((64, 64, 3)) * 255).astype("uint8"))


def test_load_unload_round_trip_is_bit_identical(sd_pipe, smoke_models):
    # the smoke ELITE's K/V start as copies of the UNet's: scale them so that loading changes the plain images
    model = EliteModel.from_pretrained(smoke_models / "elite")
    with torch.no_grad():
        for weight in model.global_kv.parameters():
            weight.mul_(1.5)
    before_procs = dict(sd_pipe.unet.attn_processors)
    before = _plain(sd_pipe)
    sd_pipe.load_elite(model, image_encoder=smoke_models / "image_encoder")
    try:
        procs = sd_pipe.unet.attn_processors
        cross = [p for n, p in procs.items() if ".attn2." in n]
        assert cross and all(isinstance(p, EliteCrossAttnProcessor) for p in cross)
        assert all(isinstance(p, KeepProcessor) for n, p in procs.items() if ".attn1." in n)
        assert not np.array_equal(_plain(sd_pipe), before)  # ELITE's K/V now answer the plain prompt
    finally:
        sd_pipe.unload_elite()
    after_procs = sd_pipe.unet.attn_processors
    assert after_procs.keys() == before_procs.keys()
    assert all(after_procs[k] is before_procs[k] for k in before_procs)
    assert np.array_equal(_plain(sd_pipe), before)
    assert sd_pipe.elite_loaded is None


@pytest.mark.parametrize("lam, num_images", [(0.8, 1), (0.6, 2)])
def test_loaded_pipeline_matches_elite_pipeline(sd_pipe, smoke_pipeline, smoke_models, lam, num_images):
    image = _concept_image()
    sd_pipe.load_elite(smoke_models / "elite")
    try:
        concept = sd_pipe.encode_concept(image)
        g = torch.Generator().manual_seed(1)
        got = sd_pipe(
            "a S* on the beach",
            concept=concept,
            lam=lam,
            num_inference_steps=STEPS,
            num_images_per_prompt=num_images,
            generator=g,
            output_type="np",
        ).images
    finally:
        sd_pipe.unload_elite()
    ref_concept = smoke_pipeline.encode_concept(image)
    assert torch.equal(concept.words, ref_concept.words)
    assert torch.equal(concept.local_tokens, ref_concept.local_tokens)
    ref = smoke_pipeline(
        "a S* on the beach",
        concept=ref_concept,
        lam=lam,
        num_inference_steps=STEPS,
        num_images_per_prompt=num_images,
        generator=torch.Generator().manual_seed(1),
        output_type="pt",
    ).images
    assert np.array_equal(got, ref.permute(0, 2, 3, 1).numpy())


def test_two_concepts_match_elite_pipeline(sd_pipe, smoke_pipeline, smoke_models):
    a, b = _concept_image(), Image.new("RGB", (64, 64), (20, 200, 40))
    prompt = "a S1* next to a S2*"
    sd_pipe.load_elite(smoke_models / "elite")
    try:
        pair = [sd_pipe.encode_concept(a), sd_pipe.encode_concept(b)]
        got = sd_pipe(
            prompt,
            concept=pair,
            num_inference_steps=STEPS,
            generator=torch.Generator().manual_seed(2),
            output_type="np",
        ).images
    finally:
        sd_pipe.unload_elite()
    ref_pair = [smoke_pipeline.encode_concept(a), smoke_pipeline.encode_concept(b)]
    ref = smoke_pipeline(
        prompt,
        concept=ref_pair,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(2),
        output_type="pt",
    ).images
    assert np.array_equal(got, ref.permute(0, 2, 3, 1).numpy())


def test_loader_errors_are_one_line(sd_pipe, smoke_models):
    with pytest.raises(EliteError, match="not loaded"):
        sd_pipe.unload_elite()
    with pytest.raises(EliteError, match="load_elite"):
        sd_pipe.encode_concept(_concept_image())
    with pytest.raises(EliteError, match="no ELITE weights"):
        sd_pipe.load_elite(smoke_models / "no-such-weights")
    assert sd_pipe.elite_loaded is None
    sd_pipe.load_elite(smoke_models / "elite")
    try:
        with pytest.raises(EliteError, match="already loaded"):
            sd_pipe.load_elite(smoke_models / "elite")
        concept = sd_pipe.encode_concept(_concept_image())
        with pytest.raises(EliteError, match="S\\*"):
            sd_pipe("a photo of a dog", concept=concept, num_inference_steps=1)
    finally:
        sd_pipe.unload_elite()
