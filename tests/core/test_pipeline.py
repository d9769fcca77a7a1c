import numpy as np
import pytest
import torch
from PIL import Image

from elite.errors import EliteError
from elite.pipeline import Concept


def _gen(pipe, concept, prompt="a photo of a S*", **kw):
    kw = {"lam": 0.8, "num_inference_steps": 3, "generator": torch.Generator().manual_seed(0), **kw}
    return pipe(prompt, concept=concept, output_type="pt", **kw).images


def test_encode_concept_shapes(smoke_pipeline, concept_image, session_tmp):
    concept = smoke_pipeline.encode_concept(concept_image, mask=session_tmp / "concept_mask.png")
    assert concept.words.shape == (1, 5, 32)
    assert concept.local_tokens.shape == (1, 256, 32)
    assert concept.w0.shape == (1, 1, 32)
    # background patches are zero, object patches are not
    zero = concept.local_tokens[0].abs().sum(-1) == 0
    assert 0 < zero.sum() < 256
    whole = smoke_pipeline.encode_concept(Image.open(concept_image))
    assert (whole.local_tokens[0].abs().sum(-1) > 0).all()


def test_generation_is_deterministic_and_lambda_zero_is_global_only(smoke_pipeline, concept_image):
    concept = smoke_pipeline.encode_concept(concept_image)
    a, b = _gen(smoke_pipeline, concept), _gen(smoke_pipeline, concept)
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
    global_only = Concept(words=concept.words, local_tokens=None)
    assert torch.equal(_gen(smoke_pipeline, concept, lam=0.0), _gen(smoke_pipeline, global_only))
    assert not torch.equal(a, _gen(smoke_pipeline, concept, lam=0.0))


def test_cfg_is_one_batched_unet_call_per_step_and_equals_two_calls(smoke_pipeline, concept_image):
    concept = smoke_pipeline.encode_concept(concept_image)
    calls = []
    hook = smoke_pipeline.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        batched = _gen(smoke_pipeline, concept, num_inference_steps=4, scheduler="ddim")
    finally:
        hook.remove()
    assert calls == [2, 2, 2, 2]

    # the same sampling written the authors' way: separate unconditional and conditional UNet calls
    from elite.models.attention import EliteConditioning
    from elite.models.text import tokenize_plain
    from elite.schedulers import make_scheduler

    pipe = smoke_pipeline
    sched = make_scheduler("ddim", pipe.scheduler.config)
    sched.set_timesteps(4)
    with torch.no_grad():
        text, slots = pipe.encode_prompts(["a photo of a S*"], concept)
        uncond = pipe.text_encoder(tokenize_plain(pipe.tokenizer, [""])).last_hidden_state
        cond = EliteConditioning(text, concept.local_tokens, torch.tensor([0.8]), slots)
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * sched.init_noise_sigma
        for t in sched.timesteps:
            e_u = pipe.unet(sched.scale_model_input(latents, t), t, encoder_hidden_states=uncond).sample
            e_c = pipe.unet(sched.scale_model_input(latents, t), t, encoder_hidden_states=cond).sample
            latents = sched.step(e_u + 5.0 * (e_c - e_u), t, latents).prev_sample
        image = (pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(batched, image, rtol=1e-4, atol=1e-4)


def test_all_words_puts_every_global_word_at_the_placeholder(smoke_pipeline, concept_image):
    """The paper's [v] (Table 1): the five global words at S*, in order, the prompt's later tokens shifted."""
    from elite.models.text import encode_with_words, tokenize_with_placeholder

    pipe = smoke_pipeline
    concept = pipe.encode_concept(concept_image)
    with torch.no_grad():
        text, slots = pipe.encode_prompts(["a photo of a S* on the beach"], concept, all_words=True)
        tok = tokenize_with_placeholder(pipe.tokenizer, "a photo of a S* on the beach", 5)
        expected = encode_with_words(pipe.text_encoder, tok.input_ids[None], torch.tensor([tok.slot]), concept.words)
        primary, _ = pipe.encode_prompts(["a photo of a S* on the beach"], concept)
    torch.testing.assert_close(text, expected)
    assert slots.tolist() == [tok.slot] and not torch.allclose(text, primary)
    with_all = _gen(pipe, concept, lam=0.0, all_words=True)
    assert with_all.shape == (1, 3, 64, 64) and not torch.equal(with_all, _gen(pipe, concept, lam=0.0))
    with pytest.raises(EliteError, match="one concept"):
        _gen(pipe, [concept, concept], prompt="a S1* and a S2*", all_words=True)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lam": -0.1}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"scheduler": "magic"}, "lms, dpm\\+\\+"),
        ({"prompt": "no placeholder"}, "placeholder"),
    ],
)
def test_bad_arguments_are_clear_errors(smoke_pipeline, concept_image, kw, match):
    concept = smoke_pipeline.encode_concept(concept_image)
    with pytest.raises(EliteError, match=match):
        _gen(smoke_pipeline, concept, **kw)


def test_pil_output_and_multiple_images(smoke_pipeline, concept_image):
    concept = smoke_pipeline.encode_concept(concept_image)
    images = smoke_pipeline(
        ["a S* on the beach", "a S*, oil painting"],
        concept=concept,
        num_inference_steps=2,
        num_images_per_prompt=2,
        scheduler="dpm++",
        generator=torch.Generator().manual_seed(1),
    ).images
    assert len(images) == 4 and all(isinstance(i, Image.Image) and i.size == (64, 64) for i in images)
    assert np.asarray(images[0]).std() > 0
