"""The pyfunc model saved to a local folder (no server): request rows, defaults, errors, base reference."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

from elite.errors import EliteError
from elite.registry.codec import decode_image, decode_mask, decode_png, encode_file, encode_png


@pytest.fixture(scope="module")
def saved_model(params, smoke_models, tmp_path_factory):
    """The same pyfunc spec the register stage logs, saved with mlflow.pyfunc.save_model and loaded back."""
    import mlflow

    from elite.registry.pyfunc import serving_defaults
    from elite.registry.register import pyfunc_spec

    root = tmp_path_factory.mktemp("pyfunc")
    cfg = params.register.model_copy(
        update={"weights": str(smoke_models / "elite"), "base": str(smoke_models / "base")}
    )
    spec = pyfunc_spec(cfg, serving_defaults(params.generate, cfg.cuda_dtype), root / "code", "smoke")
    mlflow.pyfunc.save_model(str(root / "model"), **spec)
    return mlflow.pyfunc.load_model(str(root / "model")), params.generate, root / "model"


@pytest.fixture(scope="module")
def files(concept_image):
    return encode_file(concept_image), encode_file(concept_image.with_name("concept_mask.png"))


def _img(b64: str) -> np.ndarray:
    return np.asarray(decode_png(b64).convert("RGB")).astype(np.int16)


def _direct(pipe, concept_image, prompt, seed, steps, lam, guidance=5.0, scheduler="lms", mask=True):
    concept = pipe.encode_concept(concept_image, concept_image.with_name("concept_mask.png") if mask else None)
    out = pipe(
        prompt,
        concept=concept,
        lam=lam,
        num_inference_steps=steps,
        guidance_scale=guidance,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]
    return np.asarray(out).astype(np.int16)


def test_defaults_come_from_the_generate_params(saved_model, files, smoke_pipeline, concept_image):
    model, gen, _ = saved_model
    image, mask = files
    out = model.predict(pd.DataFrame([{"image": image, "mask": mask, "prompt": "a S* on the beach"}]))
    assert list(out.columns) == ["image"] and len(out) == 1
    expected = _direct(smoke_pipeline, concept_image, "a S* on the beach", gen.seed, gen.steps, gen.lam, gen.guidance)
    assert np.abs(_img(out["image"][0]) - expected).max() <= 2


def test_a_batch_mixes_bytes_base64_and_missing_options(saved_model, files, smoke_pipeline, concept_image):
    model, _, _ = saved_model
    image, mask = files
    rows = [
        {
            "image": concept_image.read_bytes(),
            "mask": base64.b64decode(mask),
            "prompt": "a S*",
            "steps": 2,
            "seed": 3,
            "guidance": 5,
            "lam": 1,
        },  # ints where numbers are meant
        {"image": image, "prompt": "a photo of a S*", "steps": 2.0, "seed": 3},
    ]
    out = model.predict(pd.DataFrame(rows), params={"scheduler": "ddim"})
    first, second = _img(out["image"][0]), _img(out["image"][1])
    assert np.abs(first - _direct(smoke_pipeline, concept_image, "a S*", 3, 2, 1.0, scheduler="ddim")).max() <= 2
    assert (
        np.abs(
            second - _direct(smoke_pipeline, concept_image, "a photo of a S*", 3, 2, 0.8, scheduler="ddim", mask=False)
        ).max()
        <= 2
    )


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"image": "***"}, "row 1: image: not valid base64"),
        ({"image": base64.b64encode(b"not an image").decode()}, "row 1: image: not a readable image"),
        ({"mask": encode_png(Image.new("L", (8, 8), 0))}, "row 1: mask: mask is all black"),
        ({"prompt": "a dog on the beach"}, "row 1: prompt 'a dog on the beach' has no placeholder"),
        ({"prompt": None}, "row 1: prompt: required"),
        ({"steps": 2.5}, "row 1: steps: expected an integer, got 2.5"),
        ({"lam": "high"}, "row 1: lam: expected a number"),
        ({"steps": 0}, "row 1: num_inference_steps must be an integer >= 1"),
        ({"height": 60}, "row 1: height and width must be positive multiples of 8, got 60x64"),
        ({"width": "wide"}, "row 1: width: expected an integer"),
    ],
)
def test_bad_rows_are_invalid_parameter_errors_naming_row_and_field(saved_model, files, bad, message):
    model, _, _ = saved_model
    image, mask = files
    good = {"image": image, "mask": mask, "prompt": "a S*", "steps": 1}
    with pytest.raises(MlflowException) as info:
        model.predict(pd.DataFrame([good, {**good, **bad}]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and message in info.value.message


def test_negative_prompt_and_output_size(saved_model, files, smoke_pipeline, concept_image):
    """The optional columns negative_prompt, height and width: the pipeline's image for them."""
    model, _, _ = saved_model
    image, mask = files
    row = {"image": image, "mask": mask, "prompt": "a S*", "steps": 2, "seed": 4}
    out = model.predict(pd.DataFrame([{**row, "negative_prompt": "blurry", "height": 48, "width": 80}, row]))
    concept = smoke_pipeline.encode_concept(concept_image, concept_image.with_name("concept_mask.png"))
    direct = smoke_pipeline(
        "a S*",
        concept=concept,
        num_inference_steps=2,
        negative_prompt="blurry",
        height=48,
        width=80,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert _img(out["image"][0]).shape == (48, 80, 3)
    assert np.abs(_img(out["image"][0]) - np.asarray(direct).astype(np.int16)).max() <= 2
    assert _img(out["image"][1]).shape == (64, 64, 3)  # without them: the model's size, no negative prompt


def test_loaders_override_the_stored_defaults(saved_model, files, smoke_pipeline, concept_image):
    import mlflow

    _, gen, path = saved_model
    model = mlflow.pyfunc.load_model(str(path), model_config={"steps": 1, "seed": 5, "device": "cpu"})
    out = model.predict(pd.DataFrame([{"image": files[0], "mask": files[1], "prompt": "a S*"}]))
    expected = _direct(smoke_pipeline, concept_image, "a S*", 5, 1, gen.lam, gen.guidance)
    assert np.abs(_img(out["image"][0]) - expected).max() <= 2


def test_unknown_scheduler_param(saved_model, files):
    model, _, _ = saved_model
    with pytest.raises(MlflowException, match="unknown scheduler 'heun'"):
        model.predict(pd.DataFrame([{"image": files[0], "prompt": "a S*", "steps": 1}]), params={"scheduler": "heun"})


def test_base_reference_instead_of_a_copy(params, smoke_models, tmp_path):
    from elite.registry.pyfunc import serving_defaults
    from elite.registry.register import model_inputs

    cfg = params.register.model_copy(
        update={
            "weights": str(smoke_models / "elite"),
            "base": str(smoke_models / "base"),
            "copy_base": False,
            "base_reference": None,
        }
    )
    serving = serving_defaults(params.generate, cfg.cuda_dtype)
    artifacts, config = model_inputs(cfg, serving)
    assert set(artifacts) == {"elite_weights", "image_encoder"} and config["base"] == str(
        (smoke_models / "base").resolve()
    )
    assert artifacts["image_encoder"] == str((smoke_models / "image_encoder").resolve())
    hub = model_inputs(cfg.model_copy(update={"base_reference": "CompVis/stable-diffusion-v1-4"}), serving)[1]
    assert hub["base"] == "CompVis/stable-diffusion-v1-4" and hub["steps"] == params.generate.steps


def test_codec_round_trip_and_errors(tmp_path):
    img = Image.new("RGB", (5, 3), (10, 200, 30))
    assert np.array_equal(np.asarray(decode_image(encode_png(img))), np.asarray(img))
    assert decode_image("data:image/png;base64," + encode_png(img)).size == (5, 3)
    buf = io.BytesIO()
    Image.new("L", (10, 10), 255).save(buf, format="PNG")
    assert decode_mask(buf.getvalue(), (20, 20)).size == (20, 20)
    with pytest.raises(EliteError, match="image: expected base64 text or bytes"):
        decode_image(3.5)
    with pytest.raises(EliteError, match="file not found"):
        encode_file(tmp_path / "none.png")


def test_version_2_rows_several_images_and_two_concepts(saved_model, files, smoke_pipeline, concept_image):
    """A version-2 row with one concept of one image gives the version-1 row's image; several images and two
    concepts (per concept and naive) give what the Python API gives."""
    from elite.registry.codec import encode_concepts

    model, _, _ = saved_model
    image, mask = files
    mask_path = concept_image.with_name("concept_mask.png")
    common = {"steps": 2, "seed": 4}
    rows = [
        {"image": image, "mask": mask, "prompt": "a S*", **common},  # version 1 (no version field)
        {"version": 2, "concepts": [{"images": [image], "masks": [mask]}], "prompt": "a S*", **common},
        {
            "version": 2,
            "concepts": encode_concepts([[(concept_image, mask_path), concept_image]]),
            "prompt": "a S*",
            **common,
        },
        {
            "version": 2,
            "concepts": encode_concepts([[(concept_image, mask_path)], [concept_image]]),
            "prompt": "a S1* next to a S2*",
            **common,
        },
        {
            "version": 2.0,
            "concepts": encode_concepts([[(concept_image, mask_path)], [concept_image]]),
            "prompt": "a S1* next to a S2*",
            "multi_concept": "naive",
            **common,
        },
    ]
    out = [_img(b64) for b64 in model.predict(pd.DataFrame(rows))["image"]]
    assert np.array_equal(out[0], out[1])

    pipe = smoke_pipeline
    with_mask, whole = pipe.encode_concept(concept_image, mask_path), pipe.encode_concept(concept_image)
    fused = pipe.encode_concept([concept_image, concept_image], masks=[mask_path, None])

    def direct(concept, prompt, **kw):
        img = pipe(
            prompt, concept=concept, num_inference_steps=2, lam=0.8, generator=torch.Generator().manual_seed(4), **kw
        )
        return np.asarray(img.images[0]).astype(np.int16)

    assert np.abs(out[0] - direct(with_mask, "a S*")).max() <= 2
    assert np.abs(out[2] - direct(fused, "a S*")).max() <= 2
    assert np.abs(out[3] - direct([with_mask, whole], "a S1* next to a S2*")).max() <= 2
    assert np.abs(out[4] - direct([with_mask, whole], "a S1* next to a S2*", multi_concept="naive")).max() <= 2
    assert not np.array_equal(out[3], out[4])


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"version": 3}, "row 1: version: this model reads request versions 1 and 2, got 3"),
        ({"concepts": [{"images": ["x"]}]}, 'row 1: concepts: a version-2 field; set "version": 2'),
        ({"version": 2}, "row 1: image: a version-1 field"),
        ({"version": 2, "image": None, "mask": None}, "row 1: concepts: required in a version-2 row"),
        (
            {"version": 2, "image": None, "mask": None, "concepts": [{"images": []}]},
            "row 1: concepts[0].images: expected a list",
        ),
        ({"version": 2, "image": None, "mask": None, "concepts": "IMG2"}, "row 1: concepts: expected a list"),
        (
            {"version": 2, "image": None, "mask": None, "concepts": [{"images": ["IMG"], "masks": ["MASK", "MASK"]}]},
            "row 1: concepts[0].masks: expected one mask (or null) per image",
        ),
        (
            {"version": 2, "image": None, "mask": None, "concepts": [{"images": ["IMG", "***"]}]},
            "row 1: concepts[0].images[1]: not valid base64",
        ),
        (
            {
                "version": 2,
                "image": None,
                "mask": None,
                "concepts": [{"images": ["IMG"]}],
                "prompt": "a S1* next to a S2*",
            },
            "row 1: prompt 'a S1* next to a S2*' uses S1*",
        ),
        (
            {
                "version": 2,
                "image": None,
                "mask": None,
                "concepts": [{"images": ["IMG"]}] * 2,
                "prompt": "a S1* and a S1*",
            },
            "row 1: prompt 'a S1* and a S1*' has S1* more than once",
        ),
        (
            {
                "version": 2,
                "image": None,
                "mask": None,
                "concepts": [{"images": ["IMG"]}] * 2,
                "prompt": "a S1* a S2*",
                "multi_concept": "both",
            },
            "row 1: multi_concept must be one of per_concept, naive",
        ),
    ],
)
def test_bad_version_2_rows_name_row_and_field(saved_model, files, bad, message):
    model, _, _ = saved_model
    image, mask = files
    fill = {"IMG": image, "MASK": mask, "IMG2": image}
    if isinstance(bad.get("concepts"), list):
        bad = {**bad, "concepts": [{k: [fill.get(v, v) for v in vs] for k, vs in c.items()} for c in bad["concepts"]]}
    elif "concepts" in bad:
        bad = {**bad, "concepts": fill[bad["concepts"]]}
    good = {"image": image, "mask": mask, "prompt": "a S*", "steps": 1}
    with pytest.raises(MlflowException) as info:
        model.predict(pd.DataFrame([good, {**good, **bad}]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and message in info.value.message, info.value.message


def test_a_concept_file_row_gives_the_images_row(
    saved_model, files, smoke_pipeline, smoke_models, concept_image, tmp_path
):
    """`concept` (a concept file's bytes, base64 or raw) in place of the images: the same image as the image row;
    a file of other weights, a non-concept file, or images beside it are errors naming row and field."""
    from elite.concept_file import save_concept
    from elite.models.elite_model import EliteModel

    model, _, _ = saved_model
    image, mask = files
    concept = smoke_pipeline.encode_concept(concept_image, concept_image.with_name("concept_mask.png"))
    path = save_concept(concept, tmp_path / "disc.safetensors", smoke_pipeline.elite)
    common = {"prompt": "a S* on the beach", "steps": 2, "seed": 6}
    rows = [
        {"image": image, "mask": mask, **common},
        {"concept": encode_file(path), **common},
        {"version": 2, "concept": path.read_bytes(), **common},
    ]
    out = [_img(b64) for b64 in model.predict(pd.DataFrame(rows))["image"]]
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])

    other = EliteModel.from_pretrained(smoke_models / "elite")
    with torch.no_grad():
        next(other.local_kv.parameters()).mul_(1.5)
    other.weights_sha256 = None
    foreign = save_concept(concept, tmp_path / "foreign.safetensors", other)
    for bad, message in [
        ({"concept": encode_file(foreign)}, "row 0: concept: encoded with other ELITE weights"),
        ({"concept": encode_file(smoke_models / "elite" / "elite.safetensors")}, "row 0: concept: a safetensors"),
        ({"concept": image}, "row 0: concept: not a safetensors file"),
        ({"concept": encode_file(path), "image": image}, "row 0: image: a row with a concept file"),
    ]:
        with pytest.raises(MlflowException) as info:
            model.predict(pd.DataFrame([{**common, "steps": 1, **bad}]))
        assert info.value.error_code == "INVALID_PARAMETER_VALUE" and message in info.value.message, info.value.message


def test_lambda_per_block_and_step_range_rows(saved_model, files, smoke_pipeline, concept_image):
    """`lam` as an object per block and `local_steps` give what the pipeline gives; bad ones name row and field."""
    model, _, _ = saved_model
    image, mask = files
    common = {"image": image, "mask": mask, "prompt": "a S*", "steps": 2, "seed": 1}
    rows = [
        {**common, "lam": 0.8},
        {**common, "lam": {"down": 0.8, "mid": 0.8, "up": 0.8}, "local_steps": [0, 1]},
        {**common, "lam": {"up": 0.8}, "local_steps": [0.5, 1.0]},
    ]
    out = [_img(b64) for b64 in model.predict(pd.DataFrame(rows))["image"]]
    assert np.array_equal(out[0], out[1])
    concept = smoke_pipeline.encode_concept(concept_image, concept_image.with_name("concept_mask.png"))
    direct = smoke_pipeline(
        "a S*",
        concept=concept,
        lam={"up": 0.8},
        local_steps=(0.5, 1.0),
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(1),
    ).images[0]
    assert np.abs(out[2] - np.asarray(direct).astype(np.int16)).max() <= 2
    for bad, message in [
        ({"lam": {"middle": 1}}, "row 0: lam: unknown block 'middle'"),
        ({"local_steps": [0.8, 0.2]}, "row 0: local_steps: expected 0 <= start <= end <= 1"),
        ({"local_steps": "all"}, "row 0: local_steps: expected (start, end)"),
    ]:
        with pytest.raises(MlflowException) as info:
            model.predict(pd.DataFrame([{**common, "steps": 1, **bad}]))
        assert info.value.error_code == "INVALID_PARAMETER_VALUE" and message in info.value.message, info.value.message


def test_global_crop_rows(saved_model, files, smoke_pipeline, concept_image, tmp_path):
    """`global_crop`: the concept encoded with M^g on the mask's padded object box, as encode_concept(global_crop=)
    does; a negative value, or one beside a concept file, is an error naming row and field."""
    model, _, _ = saved_model
    image, mask = files
    common = {"prompt": "a S* on the beach", "steps": 2, "seed": 4, "lam": 0.8, "guidance": 5.0}
    out = [_img(b64) for b64 in model.predict(pd.DataFrame([{"image": image, "mask": mask, "global_crop": g, **common}
                                                               for g in (3, None)]))["image"]]  # fmt: skip
    concept = smoke_pipeline.encode_concept(concept_image, concept_image.with_name("concept_mask.png"), global_crop=3)
    direct = smoke_pipeline("a S* on the beach", concept=concept, lam=0.8, num_inference_steps=2,
                            generator=torch.Generator().manual_seed(4)).images[0]  # fmt: skip
    assert np.abs(out[0] - np.asarray(direct).astype(np.int16)).max() <= 2
    assert not np.array_equal(out[0], out[1])
    path = tmp_path / "c.safetensors"
    from elite.concept_file import save_concept

    save_concept(concept, path, smoke_pipeline.elite)
    for bad, message in [
        ({"image": image, "mask": mask, "global_crop": -1}, "row 0: global_crop: expected None"),
        ({"concept": encode_file(path), "global_crop": 2}, "row 0: global_crop: a row with a concept file"),
    ]:
        with pytest.raises(MlflowException) as info:
            model.predict(pd.DataFrame([{**common, "steps": 1, **bad}]))
        assert info.value.error_code == "INVALID_PARAMETER_VALUE" and message in info.value.message, info.value.message
