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
from elite.pipeline import ElitePipeline

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


def _generate(pipe, prompt, concepts, seed, **kw) -> np.ndarray:
    out = pipe(
        prompt,
        concept=concepts if len(concepts) > 1 else concepts[0],
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt" if isinstance(pipe, ElitePipeline) else "np",  # float tensors vs diffusers arrays
        **kw,
    ).images
    return out.permute(0, 2, 3, 1).numpy() if isinstance(out, torch.Tensor) else out


def _assert_same_as_elite_pipeline(sd_pipe, smoke_pipeline, weights, prompt, images, **kw):
    sd_pipe.load_elite(weights)
    try:
        concepts = [sd_pipe.encode_concept(i) for i in images]
        got = _generate(sd_pipe, prompt, concepts, seed=1, **kw)
    finally:
        sd_pipe.unload_elite()
    ref_concepts = [smoke_pipeline.encode_concept(i) for i in images]
    for c, ref in zip(concepts, ref_concepts, strict=True):
        assert torch.equal(c.words, ref.words) and torch.equal(c.local_tokens, ref.local_tokens)
    assert np.array_equal(got, _generate(smoke_pipeline, prompt, ref_concepts, seed=1, **kw))


@pytest.mark.parametrize("lam, num_images", [(0.8, 1), (0.6, 2)])
def test_loaded_pipeline_matches_elite_pipeline(sd_pipe, smoke_pipeline, smoke_models, lam, num_images):
    _assert_same_as_elite_pipeline(
        sd_pipe,
        smoke_pipeline,
        smoke_models / "elite",
        "a S* on the beach",
        [_concept_image()],
        lam=lam,
        num_images_per_prompt=num_images,
    )


def test_two_concepts_match_elite_pipeline(sd_pipe, smoke_pipeline, smoke_models):
    images = [_concept_image(), Image.new("RGB", (64, 64), (20, 200, 40))]
    _assert_same_as_elite_pipeline(sd_pipe, smoke_pipeline, smoke_models / "elite", "a S1* next to a S2*", images)


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
