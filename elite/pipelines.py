"""ELITE on diffusers' other Stable Diffusion pipelines: img2img, inpainting and ControlNet.

Each class is diffusers' own pipeline with `EliteLoaderMixin` (elite.loader): `load_elite` / `encode_concept`
/ `unload_elite`, and `concept=` in the call. The pipeline's inputs pass through as keywords:

    pipe = EliteStableDiffusionInpaintPipeline.from_pipe(sd_pipe)
    pipe.load_elite("models/elite")
    concept = pipe.encode_concept("dog.jpg", mask="dog_mask.png")
    image = pipe("a S* on a sofa", concept=concept, image=scene, mask_image=where).images[0]

The concept's word goes into `prompt_embeds` and the local branch into the UNet's cross-attention, as with
`EliteStableDiffusionPipeline`; a ControlNet sees the prompt with the concept's word (its own attention, trained
on the base model, is left as it is).
"""

from __future__ import annotations

from diffusers import (
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
)

from elite.loader import EliteLoaderMixin

__all__ = [
    "EliteStableDiffusionImg2ImgPipeline",
    "EliteStableDiffusionInpaintPipeline",
    "EliteStableDiffusionControlNetPipeline",
]


class EliteStableDiffusionImg2ImgPipeline(EliteLoaderMixin, StableDiffusionImg2ImgPipeline):
    """diffusers' `StableDiffusionImg2ImgPipeline` with `load_elite`: pass `image=` and `strength=` as keywords."""


class EliteStableDiffusionInpaintPipeline(EliteLoaderMixin, StableDiffusionInpaintPipeline):
    """diffusers' `StableDiffusionInpaintPipeline` with `load_elite`: pass `image=` and `mask_image=` (white =
    repaint) as keywords. With a 4-channel UNet diffusers keeps the latents outside the mask at each step;
    `padding_mask_crop=` pastes the original pixels back outside the mask."""


class EliteStableDiffusionControlNetPipeline(EliteLoaderMixin, StableDiffusionControlNetPipeline):
    """diffusers' `StableDiffusionControlNetPipeline` with `load_elite`: pass the control image as `image=`
    (and `controlnet_conditioning_scale=`, ...) as keywords; `from_pipe(sd_pipe, controlnet=controlnet)`."""
