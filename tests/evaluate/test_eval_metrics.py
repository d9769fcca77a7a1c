"""CLIP-I / CLIP-T / DINO-I on the smoke metric models (saved and loaded like the real ones): known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from elite.errors import EliteError
from elite.evaluate.metrics import (
    ClipEmbedder,
    DinoEmbedder,
    Mean,
    cosine_to_set,
    mean_distinct_pair_cosine,
    mean_pair_cosine,
    paired_cosine,
)
from elite.evaluate.report import build_metrics


@pytest.fixture(scope="module")
def embedders(smoke_models):
    return ClipEmbedder(str(smoke_models / "clip_eval"), batch=2), DinoEmbedder(
        str(smoke_models / "dino_eval"), batch=2
    )


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    out = [Image.fromarray(rng.integers(0, 255, (40 + 8 * k, 48, 3), dtype=np.uint8)) for k in range(4)]
    out.append(Image.new("RGB", (64, 64), (250, 10, 10)))
    return out


def test_metric_models_have_the_real_layouts(smoke_models):
    import json

    clip = json.loads((smoke_models / "clip_eval" / "config.json").read_text())
    dino = json.loads((smoke_models / "dino_eval" / "config.json").read_text())
    assert (
        clip["model_type"] == "clip"
        and clip["vision_config"]["patch_size"] == 32
        and clip["vision_config"]["image_size"] == 224
    )
    assert dino["model_type"] == "vit" and dino["patch_size"] == 16 and dino["image_size"] == 224
    assert (smoke_models / "clip_eval" / "preprocessor_config.json").is_file()
    assert (smoke_models / "clip_eval" / "tokenizer_config.json").is_file()
    assert (smoke_models / "dino_eval" / "preprocessor_config.json").is_file()


def test_an_image_against_itself_scores_one(embedders, images):
    clip, dino = embedders
    for embed in (clip.images, dino.images):
        e = embed(images)
        assert torch.allclose(e.norm(dim=-1), torch.ones(len(images)), atol=1e-5)
        for i in range(len(images)):
            assert cosine_to_set(e[i : i + 1], e[i : i + 1]).item() == pytest.approx(1.0, abs=1e-5)
        # and a different image does not
        assert cosine_to_set(e[:1], e[-1:]).item() < 0.9999


def test_batching_does_not_change_embeddings(smoke_models, embedders, images):
    clip, dino = embedders
    one_by_one = DinoEmbedder(str(smoke_models / "dino_eval"), batch=1).images(images)
    assert torch.allclose(dino.images(images), one_by_one, atol=1e-5)


def test_order_of_pairs_does_not_matter(embedders, images):
    clip, _ = embedders
    e = clip.images(images)
    gen, real = e[:3], e[2:]
    value = mean_pair_cosine(gen, real)
    assert mean_pair_cosine(real, gen) == pytest.approx(value, abs=1e-6)
    assert mean_pair_cosine(gen[[2, 0, 1]], real[[1, 2, 0]]) == pytest.approx(value, abs=1e-6)
    assert float(cosine_to_set(gen, real).mean()) == pytest.approx(value, abs=1e-6)
    sims = [float(F.cosine_similarity(g, r, dim=0)) for g in gen for r in real]
    assert value == pytest.approx(sum(sims) / len(sims), abs=1e-5)


def test_clip_t_is_the_cosine_of_image_and_text_features(embedders, images, smoke_models):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    clip, _ = embedders
    texts = ["a dog in the jungle", "a red ball", "a photo of a box on top of pink fabric"]
    got = paired_cosine(clip.images(images[:3]), clip.texts(texts))
    model = CLIPModel.from_pretrained(smoke_models / "clip_eval").eval()
    proc = CLIPImageProcessor.from_pretrained(smoke_models / "clip_eval")
    tok = AutoTokenizer.from_pretrained(smoke_models / "clip_eval")
    with torch.no_grad():
        outputs = model(
            input_ids=tok(texts, padding=True, return_tensors="pt").input_ids,
            pixel_values=proc(images=images[:3], return_tensors="pt").pixel_values,
        )
    expected = F.cosine_similarity(outputs.image_embeds, outputs.text_embeds, dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert clip.texts(texts[:1])[0] @ clip.texts(texts[:1])[0] == pytest.approx(1.0, abs=1e-5)


def test_real_vs_real_known_answer():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert mean_distinct_pair_cosine(a) == pytest.approx(1 / 3)  # pairs (0,2) and (2,0) are 1, the rest 0
    assert mean_distinct_pair_cosine(a[:1]) is None
    assert mean_pair_cosine(a, a) == pytest.approx(5 / 9)
    with pytest.raises(ValueError):
        cosine_to_set(a, a[:0])


def test_aggregation_weights_clip_i_and_dino_i_by_real_pairs():
    rows = [
        {
            "variant": "elite",
            "subject": "a",
            "family": "f",
            "n_real": 2,
            "clip_i": 1.0,
            "dino_i": 1.0,
            "clip_t": 0.2,
            "generate_s": 1.0,
        },
        {
            "variant": "elite",
            "subject": "b",
            "family": "f",
            "n_real": 6,
            "clip_i": 0.0,
            "dino_i": 0.5,
            "clip_t": 0.4,
            "generate_s": 3.0,
        },
        {
            "variant": "baseline",
            "subject": "a",
            "family": "f",
            "n_real": 2,
            "clip_i": 0.5,
            "dino_i": 0.5,
            "clip_t": 0.3,
            "generate_s": 2.0,
        },
        {
            "variant": "sweep",
            "subject": "a",
            "family": "f",
            "lam": 0.0,
            "n_real": 2,
            "clip_i": 0.1,
            "dino_i": 0.1,
            "clip_t": 0.1,
            "generate_s": 1.0,
        },
        {
            "variant": "sweep",
            "subject": "a",
            "family": "f",
            "lam": 1.2,
            "n_real": 2,
            "clip_i": 0.9,
            "dino_i": 0.9,
            "clip_t": 0.0,
            "generate_s": 1.0,
        },
    ]
    real = {"a": {"clip_i": 0.9, "dino_i": 0.8, "pairs": 2}, "b": {"clip_i": 0.5, "dino_i": 0.4, "pairs": 30}}
    m = build_metrics(rows, real, {"a": 0.5, "b": 1.5})
    assert m["overall"] == pytest.approx({"clip_i": 0.25, "dino_i": 0.625, "clip_t": 0.3, "images": 2})
    assert m["subjects"]["b"]["clip_i"] == 0.0 and m["families"]["f"]["images"] == 2
    assert m["context"]["baseline"]["clip_t"] == pytest.approx(0.3)
    assert m["context"]["real"]["clip_i"] == pytest.approx((0.9 * 2 + 0.5 * 30) / 32)
    assert set(m["sweep"]) == {"lam_0", "lam_1.2"} and m["sweep"]["lam_1.2"]["clip_i"] == pytest.approx(0.9)
    assert m["timing"]["encode_s_mean"] == 1.0 and m["timing"]["generate_s_per_image_mean"] == 2.0
    assert m["timing"]["baseline_generate_s_per_image_mean"] == 2.0
    mean = Mean()
    mean.add(None)
    assert mean.value is None


def test_missing_metric_model_is_a_clear_error(tmp_path):
    with pytest.raises(EliteError, match="run `elite prepare-models`"):
        ClipEmbedder(str(tmp_path / "nothing"))
    with pytest.raises(EliteError, match="DINO metric model"):
        DinoEmbedder(str(tmp_path / "nothing"))


def test_prepare_fetches_metric_models_from_local_mirrors_incl_a_bin_only_dino(smoke_models, tmp_path, images):
    """The paper path of prepare-models (a folder in the hub layout; facebook/dino-vits16 has no safetensors)."""
    from types import SimpleNamespace

    from safetensors.torch import load_file

    from elite.prepare import prepare_eval_models

    mirror = tmp_path / "dino-vits16"
    mirror.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (mirror / name).write_bytes((smoke_models / "dino_eval" / name).read_bytes())
    torch.save(load_file(smoke_models / "dino_eval" / "model.safetensors"), mirror / "pytorch_model.bin")
    cfg = SimpleNamespace(clip_eval=str(smoke_models / "clip_eval"), dino_eval=str(mirror), seed=0)
    prepare_eval_models(cfg, tmp_path / "models")
    assert (tmp_path / "models" / "dino_eval" / "pytorch_model.bin").is_file()
    assert (tmp_path / "models" / "clip_eval" / "model.safetensors").is_file()
    fetched = DinoEmbedder(str(tmp_path / "models" / "dino_eval")).images(images)
    assert torch.allclose(fetched, DinoEmbedder(str(smoke_models / "dino_eval")).images(images), atol=1e-6)
    clip = ClipEmbedder(str(tmp_path / "models" / "clip_eval"))
    assert torch.allclose(
        clip.texts(["a dog"]), ClipEmbedder(str(smoke_models / "clip_eval")).texts(["a dog"]), atol=1e-6
    )


def test_several_image_and_two_concept_metrics_and_report():
    """`images`: k = 1 is the elite row, k > 1 its images<k> row; `pairs`: per variant the means of the pair
    scores over images, next to the single-concept identity accuracy; the report renders both tables."""
    from elite.evaluate.several import report_lines, several_metrics

    def single(variant, ident):
        return {"variant": variant, "clip_i": 0.5, "clip_t": 0.2, "dino_i": 0.4, "n_real": 2, "identity_acc": ident}

    scored = [single("elite", 1.0), single("elite", 0.0), single("images2", 1.0), single("images2", 1.0)]
    pairs = [
        {
            "variant": "pair",
            "a_identity_acc": 1.0,
            "b_identity_acc": 0.0,
            "both_identity_acc": 0.0,
            "swap_rate": 0.5,
            "a_class_acc": 1.0,
            "b_class_acc": 1.0,
            "scene_acc": 1.0,
            "clip_t": 0.3,
        },
        {
            "variant": "pair",
            "a_identity_acc": 1.0,
            "b_identity_acc": 1.0,
            "both_identity_acc": 1.0,
            "swap_rate": 0.0,
            "a_class_acc": 0.0,
            "b_class_acc": 1.0,
            "scene_acc": None,
            "clip_t": 0.1,
        },
        {
            "variant": "pair_naive",
            "a_identity_acc": 0.0,
            "b_identity_acc": 0.0,
            "both_identity_acc": 0.0,
            "swap_rate": 1.0,
            "a_class_acc": 0.0,
            "b_class_acc": 0.0,
            "scene_acc": 0.0,
            "clip_t": 0.2,
        },
    ]
    m = several_metrics(scored, pairs)
    assert (m["images"]["1"]["identity_acc"], m["images"]["2"]["identity_acc"]) == (0.5, 1.0)
    assert m["images"]["2"]["images"] == 2 and set(m["images"]) == {"1", "2"}
    p = m["pairs"]
    assert p["single_identity_acc"] == 0.5 and set(p) == {"single_identity_acc", "pair", "pair_naive"}
    assert p["pair"] == pytest.approx(
        {
            "a_identity_acc": 1.0,
            "b_identity_acc": 0.5,
            "both_identity_acc": 0.5,
            "swap_rate": 0.25,
            "a_class_acc": 0.5,
            "b_class_acc": 1.0,
            "scene_acc": 1.0,
            "clip_t": 0.2,
            "images": 2,
        }
    )
    assert p["pair_naive"]["swap_rate"] == 1.0
    text = "\n".join(report_lines(m))
    assert "## A concept from several images" in text and "| 2 | 1.0000 |" in text
    assert "Single-concept ELITE identity: 0.5000" in text and "| pair_naive | 0.0000 |" in text
    assert several_metrics(scored[:2], []) == {}
