"""Helpers of the core tests on concept files, per-block lambda and weighted images."""

from __future__ import annotations

import torch


def gen(pipe, concept, prompt="a photo of a S*", **kw) -> torch.Tensor:
    """ElitePipeline's images as a float tensor: lambda 0.8, 3 steps, seed 0 unless given."""
    kw = {"lam": 0.8, "num_inference_steps": 3, "generator": torch.Generator().manual_seed(0), **kw}
    return pipe(prompt, concept=concept, output_type="pt", **kw).images


def loaded_sd_pipeline(smoke_models):
    """diffusers' StableDiffusionPipeline of the smoke base (LMS) as EliteStableDiffusionPipeline, ELITE loaded."""
    from diffusers import LMSDiscreteScheduler, StableDiffusionPipeline

    from elite.loader import EliteStableDiffusionPipeline

    sd = StableDiffusionPipeline.from_pretrained(
        smoke_models / "base", safety_checker=None, requires_safety_checker=False
    )
    sd.scheduler = LMSDiscreteScheduler.from_config(sd.scheduler.config)
    pipe = EliteStableDiffusionPipeline.from_pipe(sd)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_elite(smoke_models / "elite")
    return pipe
