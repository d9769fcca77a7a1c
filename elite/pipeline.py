"""ElitePipeline: encode a concept image once, then generate with S* in any prompt."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, LMSDiscreteScheduler, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

from elite.concept_file import check_weights, pixels_sha256
from elite.concepts import Concept, as_concepts, check_multi_concept, fuse_images, image_weights, local_inputs
from elite.errors import EliteError
from elite.images import binary_mask_at, full_mask, mask_box, open_image, open_mask, padded_box
from elite.io import atomic_dir
from elite.models.attention import EliteConditioning, KVProjections, attach_base_processors, cross_attention_layers
from elite.models.elite_model import EliteModel
from elite.models.features import clip_layer_features
from elite.models.local_control import Lam, active_steps, check_lam_blocks, lam_is_zero
from elite.models.text import encode_with_words, tokenize_plain, tokenize_with_placeholder
from elite.pixels import clip_inputs
from elite.schedulers import check_sampling, make_scheduler

ELITE_SUBFOLDER = "elite"  # the pipeline component, and its folder in a saved pipeline
ImageInput = Image.Image | str | os.PathLike


def _load(what: str, source: str, loader, **kwargs):
    if _is_local_path(source) and not Path(source).exists():
        raise EliteError(
            f"{source}: folder not found (for {what}); build or fetch the models with `elite prepare-models` "
            f"(params models.dir), or pass a hub id"
        )
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EliteError(f"cannot load {what} from {source!r}: {first[:300]}") from None


def _is_local_path(source: str) -> bool:
    """A folder path rather than a hub id ("org/name" or "name")."""
    return os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") >= 2


def resolve_image_encoder(weights_dir: Path, name: str) -> str:
    """The image encoder named in the ELITE config: a path relative to the weights folder, or a hub id."""
    candidate = (weights_dir / name).resolve()
    return str(candidate) if candidate.exists() else name


class ElitePipeline(DiffusionPipeline):
    # enable_model_cpu_offload() moves one model at a time to the accelerator, when its forward is called.
    # ELITE's weights are never called through a forward of their own: the mappers run inside
    # encode_concept and the processors call its K/V projections from inside every UNet call. They stay on
    # the accelerator instead (the mappers and 2 x 16 K/V layers: 96 M parameters, 11% of SD v1's UNet);
    # enable_sequential_cpu_offload() also keeps them there (diffusers' rule for excluded components).
    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"
    _exclude_from_cpu_offload = ["elite"]
    _optional_components = ["image_encoder", "image_processor", "elite"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        image_encoder: CLIPVisionModel | None = None,
        image_processor: CLIPImageProcessor | None = None,
        elite: EliteModel | None = None,
    ) -> None:
        """Without `elite` the pipeline is the plain base model that still takes injected words
        (concepts learned by the Textual Inversion baselines); `encode_concept` then needs weights."""
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            image_processor=image_processor,
            elite=elite,
        )
        if elite is not None:
            elite.attach(unet)
        else:
            attach_base_processors(unet)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(
        cls,
        base: str | os.PathLike,
        elite_weights: str | os.PathLike | None = None,
        image_encoder: str | None = None,
        torch_dtype: torch.dtype = torch.float32,
    ) -> ElitePipeline:
        """Load a Stable Diffusion folder or hub id plus ELITE weights (and the CLIP tower they name).

        With `elite_weights=None`: the base model alone, for concepts given as learned words, unless `base` is a
        folder written by `ElitePipeline.save_pretrained` with ELITE weights (then its `elite/` is used)."""
        base = str(base)
        saved = _saved_with_elite(base)
        if elite_weights is None and saved:
            elite_weights = Path(base) / ELITE_SUBFOLDER
        elite, encoder_src = None, image_encoder
        if elite_weights is not None:
            elite = EliteModel.from_pretrained(elite_weights, dtype=torch_dtype)
            encoder_src = image_encoder or resolve_image_encoder(Path(elite_weights), elite.config.image_encoder)
        # a saved pipeline keeps the processor in its own folder (the tower's folder has none)
        processor_src = str(Path(base) / "image_processor") if saved and not image_encoder else encoder_src
        kw = {"torch_dtype": torch_dtype}
        return cls(
            vae=_load("the VAE", base, AutoencoderKL.from_pretrained, subfolder="vae", **kw),
            text_encoder=_load(
                "the text encoder", base, CLIPTextModel.from_pretrained, subfolder="text_encoder", dtype=torch_dtype
            ),
            tokenizer=_load("the tokenizer", base, CLIPTokenizer.from_pretrained, subfolder="tokenizer"),
            unet=_load("the UNet", base, UNet2DConditionModel.from_pretrained, subfolder="unet", **kw),
            scheduler=_load("the scheduler", base, LMSDiscreteScheduler.from_pretrained, subfolder="scheduler"),
            image_encoder=_load("the image encoder", encoder_src, CLIPVisionModel.from_pretrained, dtype=torch_dtype)
            if encoder_src and processor_src
            else None,
            image_processor=_load("the image processor", processor_src, CLIPImageProcessor.from_pretrained)
            if encoder_src and processor_src
            else None,
            elite=elite,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """One folder that `ElitePipeline.from_pretrained(folder)` loads back: diffusers/transformers writes the
        standard components (model_index.json, vae/, text_encoder/, tokenizer/, unet/, scheduler/,
        image_encoder/, image_processor/), ELITE's weights go to elite/ naming ../image_encoder. Atomic."""
        entry = self.config.get(ELITE_SUBFOLDER)
        with atomic_dir(Path(save_directory)) as tmp:
            self.register_to_config(**{ELITE_SUBFOLDER: (None, None)})  # diffusers cannot save an nn.Module itself
            try:
                super().save_pretrained(tmp, **kwargs)
            finally:
                self.register_to_config(**{ELITE_SUBFOLDER: entry})
            if self.elite is not None:
                encoder = os.path.relpath(tmp / "image_encoder", tmp / ELITE_SUBFOLDER)
                self.elite.save_pretrained(tmp / ELITE_SUBFOLDER, image_encoder=encoder)
                index = json.loads((tmp / "model_index.json").read_text())
                index[ELITE_SUBFOLDER] = list(entry)
                (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    # --- the two mapping networks, as in the paper -------------------------------------------
    @property
    def global_mapper(self):
        return self.elite.global_mapper if self.elite is not None else None

    @property
    def local_mapper(self):
        return self.elite.local_mapper if self.elite is not None else None

    # --- concept encoding ------------------------------------------------------------------------
    @torch.no_grad()
    def encode_concept(
        self,
        image: ImageInput | Sequence[ImageInput],
        mask: ImageInput | Sequence | None = None,
        masks: Sequence[ImageInput | None] | None = None,
        weights: Sequence[float] | None = None,
        global_crop: int | None = None,
    ) -> Concept:
        """One forward pass: the global words from the whole image, the local tokens from the masked object.

        `mask="auto"`: SAM makes the mask (the most salient object; see elite.automask). Several images of
        one concept, `encode_concept([a, b], masks=[ma, None])` (None or "auto" per image; one `mask` applies
        to all): each is encoded alone, then the words are averaged and the local tokens concatenated
        (elite.concepts.fuse_images). A list of one image gives exactly that image's concept. `weights` (one per
        image, normalised) weight the images: words by weighted mean, local tokens by attention share.
        `global_crop` (pixels): M^g reads the mask's object box grown by this many pixels instead of the whole
        image, as stage 1 trains on box crops (the authors' inference reads the whole image: None, the default);
        the local branch is unchanged. Without a mask it is the whole image either way."""
        if self.elite is None or self.image_encoder is None:
            raise EliteError("this pipeline was loaded without ELITE weights; pass elite_weights to encode images")
        device = self._execution_device
        encoder = ConceptEncoder(self.elite, self.image_encoder, self.image_processor, device, global_crop)
        return encoder(image, mask, masks, weights)

    # --- generation ----------------------------------------------------------------------------------
    def encode_prompts(
        self,
        prompts: list[str],
        concept: Concept | Sequence[Concept],
        allow_bare_s: bool = False,
        all_words: bool = False,
    ):
        """Text states with w0 at each prompt's placeholder, and its positions (see `encode_prompts`)."""
        return encode_prompts(
            self.tokenizer, self.text_encoder, self._execution_device, prompts, concept, allow_bare_s, all_words
        )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        concept: Concept | Sequence[Concept],
        lam: Lam = 0.8,
        num_inference_steps: int = 100,
        guidance_scale: float = 5.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        scheduler: str | SchedulerMixin | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        allow_bare_s: bool = False,
        return_dict: bool = True,
        multi_concept: str = "per_concept",
        negative_prompt: str | None = None,
        local_steps: tuple[float, float] = (0.0, 1.0),
        all_words: bool = False,
    ) -> ImagePipelineOutput | tuple:
        """Generate images for `prompt` (which contains S*) with the encoded concept.

        Two (or more) concepts: `concept=[c1, c2]` and a prompt with S1* and S2*, once each.
        `multi_concept="per_concept"` weights each concept's local branch by its own w0's attention map
        (Eq. 8 per concept); "naive" (the baseline) puts all local tokens in one branch weighted by the sum
        of the w0 maps (elite.concepts). `negative_prompt` (plain text, no S*) replaces the empty prompt of
        classifier-free guidance's unconditional half.
        Defaults are the paper's: LMS, 100 steps, guidance 5, lambda 0.8 (0.6 suits editing prompts).
        `lam` may be a dict per cross-attention block ({"down": ..., "mid": ..., "up": ...}) and `local_steps`
        the (start, end) fractions of the denoising with the local branch (elite.models.local_control).
        `all_words=True` injects every global word at S* (w0 first), as stage 1 trains, instead of w0 alone:
        the paper's [v] rows (Table 1), a diagnostic of what the auxiliary words hold; one concept only.
        Classifier-free guidance runs both halves in one batched UNet call per step. A list of generators,
        one per image, makes each image the same as when it is generated alone with its generator.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        check_sampling(lam, num_inference_steps, guidance_scale, num_images_per_prompt, scheduler, local_steps)
        check_lam_blocks(lam, map(KVProjections.key, cross_attention_layers(self.unet)))
        check_multi_concept(multi_concept)
        concepts = as_concepts(concept)
        check_weights(concepts, self.elite)
        size = self.unet.config.sample_size * self.vae_scale_factor
        height, width = height or size, width or size
        if min(height, width) < 1 or height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise EliteError(
                f"height and width must be positive multiples of {self.vae_scale_factor}, got {height}x{width}"
            )
        sched = make_scheduler(scheduler or self.scheduler, self.scheduler.config)
        device, dtype = self._execution_device, self.unet.dtype

        text, slots = self.encode_prompts(prompts, concepts, allow_bare_s, all_words)
        text = _each(text, lambda t: t.repeat_interleave(num_images_per_prompt, 0))
        slots = slots.repeat_interleave(num_images_per_prompt, 0)
        n = len(slots)
        if isinstance(generator, list) and len(generator) != n:
            raise EliteError(f"got {len(generator)} generators for {n} images; pass one per image or a single one")
        cfg = guidance_scale > 1.0
        if cfg:
            uncond = unconditional_states(self.tokenizer, self.text_encoder, device, negative_prompt or "")
            text = _each(text, lambda t: torch.cat([uncond.expand(n, -1, -1), t]))
        cond = local_conditioning(concepts, multi_concept, lam, slots, cfg, dtype)._replace(
            text=_each(text, lambda t: t.to(dtype))
        )

        sched.set_timesteps(num_inference_steps, device=device)
        shape = (n, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype) * sched.init_noise_sigma
        active = active_steps(len(sched.timesteps), local_steps)
        off = cond._replace(local_tokens=None, local_scale=None, word_index=None, layer_scale=None)
        for i, t in enumerate(self.progress_bar(sched.timesteps)):
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = sched.scale_model_input(model_in, t)
            noise = self.unet(model_in, t, encoder_hidden_states=cond if active[i] else off).sample
            if cfg:
                uncond_noise, text_noise = noise.chunk(2)
                noise = uncond_noise + guidance_scale * (text_noise - uncond_noise)
            latents = sched.step(noise, t, latents).prev_sample
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        images = (images / 2 + 0.5).clamp(0, 1)
        self.maybe_free_model_hooks()  # with enable_model_cpu_offload: every model back on the CPU
        if output_type != "pt":
            arr = (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype("uint8")
            images = [Image.fromarray(a) for a in arr]
        return ImagePipelineOutput(images=images) if return_dict else (images,)


class ConceptEncoder:
    """Encodes concept images with ELITE's mappers (one forward pass each): what `ElitePipeline.encode_concept`
    and `EliteLoaderMixin.encode_concept` share."""

    def __init__(
        self,
        elite: EliteModel,
        image_encoder: CLIPVisionModel,
        processor: CLIPImageProcessor,
        device,
        global_crop: int | None = None,
    ):
        self.elite, self.image_encoder, self.processor, self.device = elite, image_encoder, processor, device
        self.global_crop = check_global_crop(global_crop)

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        mask: ImageInput | Sequence | None = None,
        masks: Sequence[ImageInput | None] | None = None,
        weights: Sequence[float] | None = None,
    ) -> Concept:
        images: list[Any] = list(image) if isinstance(image, (list, tuple)) else [image]
        if masks is not None and mask is not None:
            raise EliteError("encode_concept: pass mask= (one for every image) or masks= (one per image), not both")
        each: list[Any]
        if masks is not None:
            each = list(masks)
        else:
            each = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(images)
        if not images or len(each) != len(images):
            raise EliteError(
                f"encode_concept: got {len(images)} image(s) and {len(each)} mask(s); give at least one "
                f"image and one mask per image (None: the whole image)"
            )
        image_weights(weights, len(images))  # bad weights fail before any image is encoded
        concept = fuse_images([self.encode_one(i, m) for i, m in zip(images, each, strict=True)], weights)
        if self.global_crop is not None and concept.provenance is not None:
            concept.provenance["global_crop"] = self.global_crop
        return concept

    def clip_inputs(self, image: Image.Image, mask: Image.Image | None):
        proc = self.processor
        size = proc.crop_size["height"] if proc.crop_size else proc.size["shortest_edge"]
        return clip_inputs(
            image, mask if mask is not None else full_mask(image), size, proc.image_mean, proc.image_std
        )

    def encode_one(self, image: ImageInput, mask: ImageInput | None) -> Concept:
        if not isinstance(image, Image.Image):
            image = open_image(os.fspath(image))
        if isinstance(mask, str) and mask == "auto":
            from elite.automask import auto_mask

            mask = auto_mask(image)
        if mask is not None and not isinstance(mask, Image.Image):
            mask = open_mask(os.fspath(mask), image.size)
        full, masked, m = self.clip_inputs(image, mask)
        if self.global_crop is not None and mask is not None:
            full = self.clip_inputs(image.crop(object_box(image, mask, self.global_crop)), None)[0]
        device, dtype = self.device, self.image_encoder.dtype
        layers = self.elite.config.layers
        words = self.elite.global_mapper(clip_layer_features(self.image_encoder, full.to(device, dtype), layers))
        local = None
        if self.elite.local_mapper is not None:
            feats = clip_layer_features(self.image_encoder, masked.to(device, dtype), layers)
            local = self.elite.local_mapper(feats, m.to(device, dtype))
        provenance = {"images": [pixels_sha256(image)], "masks": [pixels_sha256(mask)]}
        return Concept(words=words, local_tokens=local, provenance=provenance)


def check_global_crop(global_crop: Any) -> int | None:
    """`global_crop`: None (M^g reads the whole image, as the authors' inference) or pixels >= 0 of padding."""
    if global_crop is None:
        return None
    if isinstance(global_crop, bool) or not isinstance(global_crop, int) or global_crop < 0:
        raise EliteError(
            f"global_crop: expected None (the whole image) or a padding in pixels >= 0, got {global_crop!r}"
        )
    return global_crop


def object_box(image: Image.Image, mask: Image.Image, pad: int) -> tuple[int, int, int, int]:
    """The mask's tight object box (as stage 1's `mask_box`) grown by `pad` px, clipped to the image."""
    binary = binary_mask_at(mask, image.size)
    if binary.getbbox() is None:
        raise EliteError("global_crop: the mask has no object pixels (white = object); give a mask of the object")
    return padded_box(mask_box(binary), image.size, pad)


def onload(model) -> None:
    """With enable_model_cpu_offload() a model moves to the accelerator in the accelerate hook of its forward.
    ELITE calls the text encoder's parts (to put w0 at the placeholder), not its forward, so it runs that hook
    itself first (which also sends the model before it in the chain back to the CPU). No offload hook: nothing."""
    hook = getattr(model, "_hf_hook", None)
    if hook is None:
        return
    from accelerate.hooks import CpuOffload  # a hook is there, so accelerate is installed

    if isinstance(hook, CpuOffload):
        hook.pre_forward(model)


def encode_prompts(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    device,
    prompts: list[str],
    concept: Concept | Sequence[Concept],
    allow_bare_s: bool = False,
    all_words: bool = False,
):
    """Text states with w0 injected at each prompt's placeholder, and the placeholder positions: (B,) for
    one concept (S*), (B, C) for C concepts (w0 of concept c at S{c}*).

    With `concept.layer_words` the states are a dict with one tensor per cross-attention layer. `all_words`:
    every global word of the one concept at S* (w0 first, the later tokens shifted), as stage 1 trains."""
    concepts = as_concepts(concept)
    onload(text_encoder)
    if all_words and (len(concepts) > 1 or concepts[0].layer_words is not None):
        raise EliteError("all_words injects one concept's global words: give one concept without per-layer words")
    slots_per = concepts[0].words.shape[1] if all_words else 1
    tokenized = [tokenize_with_placeholder(tokenizer, p, slots_per, allow_bare_s, len(concepts)) for p in prompts]
    ids = torch.stack([t.input_ids for t in tokenized]).to(device)
    if len(concepts) > 1:
        slots = torch.tensor([t.slots for t in tokenized], device=device)
        words = torch.stack([c.w0 for c in concepts], dim=1).to(device, text_encoder.dtype)  # (1, C, 1, D)
        return encode_with_words(text_encoder, ids, slots, words.expand(len(prompts), -1, -1, -1)), slots
    one = concepts[0]
    slots = torch.tensor([t.slot for t in tokenized], device=device)

    def encode(word: torch.Tensor) -> torch.Tensor:
        word = word.reshape(1, -1, word.shape[-1]).to(device, text_encoder.dtype).expand(len(prompts), -1, -1)
        return encode_with_words(text_encoder, ids, slots, word)

    if all_words:
        return encode(one.words), slots
    if one.layer_words is None:
        return encode(one.w0), slots
    return {key: encode(word) for key, word in one.layer_words.items()}, slots


def unconditional_states(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, device, negative_prompt: str = ""
) -> torch.Tensor:
    """(1, 77, D) text states of the negative prompt (default: the empty prompt): the unconditional half of
    classifier-free guidance."""
    return text_encoder(tokenize_plain(tokenizer, [negative_prompt]).to(device)).last_hidden_state


def local_conditioning(
    concepts: Sequence[Concept], multi_concept: str, lam: Lam, slots: torch.Tensor, cfg: bool, dtype: torch.dtype
) -> EliteConditioning:
    """The local-branch inputs for every row of a UNet batch (`text` left empty): the concepts' local tokens,
    lambda per row and w0's position. With classifier-free guidance the batch is [unconditional, conditional]
    and the unconditional half gets lambda 0. No local term for global-only concepts or lambda 0. A per-block
    lambda (a dict) gives the rows scale 1 and travels as `layer_scale` to each layer."""
    local, bias = local_inputs(as_concepts(concepts), multi_concept)
    if local is None or lam_is_zero(lam):
        return EliteConditioning(text=None)
    n = len(slots)
    per_block, scale = (lam, 1.0) if isinstance(lam, Mapping) else (None, float(lam))
    scales = torch.full((n,), scale, device=slots.device)
    if cfg:
        slots = torch.cat([torch.zeros_like(slots), slots])
        scales = torch.cat([torch.zeros_like(scales), scales])
    return EliteConditioning(
        text=None,
        local_tokens=_each_local(local, lambda t: t.to(slots.device, dtype).expand(len(slots), -1, -1)),
        local_bias=_each_local(bias, lambda t: t.to(slots.device, dtype).expand(len(slots), -1)),
        local_scale=scales,
        word_index=slots,
        layer_scale=per_block,
    )


def _saved_with_elite(folder: str) -> bool:
    """A folder written by ElitePipeline.save_pretrained that holds ELITE weights."""
    index = Path(folder) / "model_index.json"
    if not _is_local_path(folder) or not index.is_file():
        return False
    try:
        entry = json.loads(index.read_text()).get(ELITE_SUBFOLDER)
    except (json.JSONDecodeError, AttributeError):
        raise EliteError(f"{index}: not valid JSON; save the pipeline again") from None
    return bool(entry and entry[0])


def _each_local(tokens, fn):
    """Apply fn to the local tokens (or bias), or to each concept's (one local branch per concept); None stays."""
    if isinstance(tokens, tuple):
        return tuple(None if t is None else fn(t) for t in tokens)
    return None if tokens is None else fn(tokens)


def _each(text, fn):
    """Apply fn to the text states, or to each layer's states when they differ per layer."""
    return {k: fn(v) for k, v in text.items()} if isinstance(text, dict) else fn(text)
