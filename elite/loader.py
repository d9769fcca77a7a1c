"""ELITE onto a diffusers Stable Diffusion pipeline you already have, the way diffusers loads IP-Adapter.

    pipe = EliteStableDiffusionPipeline.from_pretrained("CompVis/stable-diffusion-v1-4")  # or .from_pipe(sd_pipe)
    pipe.load_elite("models/elite")                       # ELITE's attention processors + CLIP image tower
    concept = pipe.encode_concept("dog.jpg", mask="dog_mask.png")
    image = pipe("a S* on the beach", concept=concept, lam=0.8, num_inference_steps=100).images[0]
    pipe.unload_elite()                                   # the pipeline's own processors back, exactly

`EliteLoaderMixin` gives any Stable-Diffusion-shaped pipeline class (one with `unet`, `text_encoder`,
`tokenizer`) `load_elite` / `encode_concept` / `unload_elite`, and a `__call__` that takes `concept=` and
passes the rest to the pipeline's own `__call__`: the concept's word w0 goes into `prompt_embeds` at S*, and
the local branch's inputs travel in `cross_attention_kwargs={"elite": ...}` to ELITE's processors (layers
ELITE leaves alone get `KeepProcessor`, which runs their own processor and drops the keyword). Without
`concept=` the call is the pipeline's own. `ElitePipeline` (elite.pipeline) stays the pipeline with ELITE
built in; both give the same images for the same seed, scheduler and settings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPImageProcessor, CLIPVisionModel

from elite.concept_file import check_weights
from elite.concepts import Concept, as_concepts, check_multi_concept
from elite.errors import EliteError
from elite.models.attention import EliteCrossAttnProcessor, KeepProcessor, KVProjections, cross_attention_layers
from elite.models.elite_model import EliteModel
from elite.models.local_control import Lam, check_lam, check_lam_blocks
from elite.pipeline import (
    ConceptEncoder,
    ImageInput,
    _load,
    encode_prompts,
    local_conditioning,
    resolve_image_encoder,
    unconditional_states,
)


@dataclass
class LoadedElite:
    """What `load_elite` installed: the weights, the CLIP tower with its processor, and the UNet's processors
    from before, which `unload_elite` puts back."""

    model: EliteModel
    image_encoder: CLIPVisionModel
    image_processor: CLIPImageProcessor
    saved_processors: dict[str, Any]

    def follow(self, device: torch.device) -> None:
        """ELITE (mappers and the K/V its processors call) and the CLIP tower to the device the pipeline runs
        on: `pipe.to(...)` and diffusers' offload move the pipeline's own components, which these are not."""
        self.model.to(device)
        self.image_encoder.to(device)


class EliteLoaderMixin:
    """`load_elite` / `encode_concept` / `unload_elite` for a Stable Diffusion pipeline (see the module doc)."""

    elite_loaded: LoadedElite | None = None

    def load_elite(
        self,
        weights: str | os.PathLike | EliteModel,
        image_encoder: str | os.PathLike | None = None,
        use_local: bool = True,
    ) -> None:
        """Install ELITE: `weights` is a folder with elite.safetensors + elite_config.json (as written by
        training or `ElitePipeline.save_pretrained`'s `elite/`) or an EliteModel; the CLIP vision tower is the
        one its config names (relative to the folder, or a hub id) unless `image_encoder` is given.
        `use_local=False` installs the global branch only."""
        if self.elite_loaded is not None:
            raise EliteError("ELITE is already loaded on this pipeline; call unload_elite() first")
        unet = self.unet  # type: ignore[attr-defined]
        if any(isinstance(p, (EliteCrossAttnProcessor, KeepProcessor)) for p in unet.attn_processors.values()):
            raise EliteError(
                "ELITE is already loaded on this pipeline's UNet by a pipeline sharing it (from_pipe); "
                "call unload_elite() on that one first"
            )
        if isinstance(weights, EliteModel):
            if image_encoder is None:
                raise EliteError("load_elite(EliteModel): pass image_encoder= (the CLIP vision tower's folder or id)")
            model = weights.to(unet.device, unet.dtype)
            source = str(image_encoder)
        else:
            model = EliteModel.from_pretrained(weights, dtype=unet.dtype).to(unet.device)
            source = (
                str(image_encoder)
                if image_encoder
                else resolve_image_encoder(Path(weights), model.config.image_encoder)
            )
        tower = _load("the image encoder", source, CLIPVisionModel.from_pretrained, dtype=unet.dtype).to(unet.device)
        processor = _load("the image processor", source, CLIPImageProcessor.from_pretrained)
        saved = dict(unet.attn_processors)
        model.attach(unet, use_local=use_local)
        unet.set_attn_processor(
            {
                name: proc if isinstance(proc, EliteCrossAttnProcessor) else KeepProcessor(proc)
                for name, proc in unet.attn_processors.items()
            }
        )
        self.elite_loaded = LoadedElite(model, tower, processor, saved)

    def unload_elite(self) -> None:
        """Put back the processors the UNet had before `load_elite` (the same objects) and drop ELITE."""
        if self.elite_loaded is None:
            raise EliteError("ELITE is not loaded on this pipeline; nothing to unload")
        self.unet.set_attn_processor(dict(self.elite_loaded.saved_processors))  # type: ignore[attr-defined]
        self.elite_loaded = None

    @torch.no_grad()
    def encode_concept(
        self,
        image: ImageInput | Sequence[ImageInput],
        mask: ImageInput | Sequence | None = None,
        masks: Sequence[ImageInput | None] | None = None,
        weights: Sequence[float] | None = None,
        global_crop: int | None = None,
    ) -> Concept:
        """As `ElitePipeline.encode_concept`: one image (or several of one concept, optionally weighted), an
        optional mask each; `global_crop` as there."""
        loaded = self._loaded()
        device = self._execution_device  # type: ignore[attr-defined]
        loaded.follow(device)
        encoder = ConceptEncoder(loaded.model, loaded.image_encoder, loaded.image_processor, device, global_crop)
        return encoder(image, mask, masks, weights)

    def elite_inputs(
        self,
        prompt: str | list[str],
        concept: Concept | Sequence[Concept],
        lam: Lam = 0.8,
        guidance_scale: float = 5.0,
        num_images_per_prompt: int = 1,
        multi_concept: str = "per_concept",
        allow_bare_s: bool = False,
    ) -> dict[str, Any]:
        """The keyword arguments that make the pipeline's own `__call__` generate with `concept`:
        `prompt_embeds` (w0 at S*), `negative_prompt_embeds` (the empty prompt) and, with ELITE's local
        branch, `cross_attention_kwargs={"elite": ...}`. `lam` may be a dict per block (elite.models.local_control)."""
        check_multi_concept(multi_concept)
        check_lam(lam)
        check_lam_blocks(lam, map(KVProjections.key, cross_attention_layers(self.unet)))  # type: ignore[attr-defined]
        concepts = as_concepts(concept)
        check_weights(concepts, self.elite_loaded.model if self.elite_loaded is not None else None)
        if any(c.layer_words is not None for c in concepts):
            raise EliteError("per-layer concepts (XTI) need ElitePipeline; load_elite takes one word per concept")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = self._execution_device  # type: ignore[attr-defined]
        if self.elite_loaded is not None:
            self.elite_loaded.follow(device)
        tokenizer, text_encoder = self.tokenizer, self.text_encoder  # type: ignore[attr-defined]
        text, slots = encode_prompts(tokenizer, text_encoder, device, prompts, concepts, allow_bare_s)
        uncond = unconditional_states(tokenizer, text_encoder, device).expand(len(prompts), -1, -1)
        inputs: dict[str, Any] = {"prompt_embeds": text, "negative_prompt_embeds": uncond}
        if self.elite_loaded is not None:
            cfg = guidance_scale > 1.0
            slots = slots.repeat_interleave(num_images_per_prompt, 0)
            local = local_conditioning(concepts, multi_concept, lam, slots, cfg, self.unet.dtype)  # type: ignore[attr-defined]
            if local.local_tokens is not None:
                inputs["cross_attention_kwargs"] = {"elite": local}
        return inputs

    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *args: Any,
        concept: Concept | Sequence[Concept] | None = None,
        lam: Lam = 0.8,
        multi_concept: str = "per_concept",
        allow_bare_s: bool = False,
        **kwargs: Any,
    ):
        """The pipeline's own call; with `concept=`, `prompt` holds S* (or S1*, S2*) and ELITE generates
        (guidance 5 unless given, as the paper; pass `num_inference_steps`, `generator`, ... as usual)."""
        if concept is None:
            return super().__call__(prompt, *args, **kwargs)  # type: ignore[misc]
        if prompt is None or args or "prompt_embeds" in kwargs:
            raise EliteError("with concept=, pass the prompt (with S*) and keyword options only, not prompt_embeds")
        if "local_steps" in kwargs:
            raise EliteError("local_steps: the step range needs ElitePipeline; load_elite pipelines take lam only")
        kwargs.setdefault("guidance_scale", 5.0)
        inputs = self.elite_inputs(
            prompt,
            concept,
            lam,
            kwargs["guidance_scale"],
            kwargs.get("num_images_per_prompt", 1),
            multi_concept,
            allow_bare_s,
        )
        extra = kwargs.pop("cross_attention_kwargs", None) or {}
        if "cross_attention_kwargs" in inputs:
            inputs["cross_attention_kwargs"] = extra | inputs["cross_attention_kwargs"]
        elif extra:
            inputs["cross_attention_kwargs"] = extra
        return super().__call__(**inputs, **kwargs)  # type: ignore[misc]

    def _loaded(self) -> LoadedElite:
        if self.elite_loaded is None:
            raise EliteError("ELITE is not loaded on this pipeline; call pipe.load_elite(weights_folder) first")
        return self.elite_loaded


class EliteStableDiffusionPipeline(EliteLoaderMixin, StableDiffusionPipeline):
    """diffusers' `StableDiffusionPipeline` with `load_elite` (EliteLoaderMixin): `from_pretrained` an SD
    folder or hub id, or `from_pipe(pipe)` to reuse the components of a pipeline you already have."""
