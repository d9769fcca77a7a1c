"""Lambda per cross-attention block and the local branch's step range (elite.models.local_control), through
ElitePipeline, the loader mixin and the CLI, on the smoke models (SD v1's block layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from core_helpers import gen, loaded_sd_pipeline
from PIL import Image

from elite.concepts import Concept
from elite.errors import EliteError
from elite.models.local_control import active_steps, layer_lambda

EVERY = {"down": 0.8, "mid": 0.8, "up": 0.8}


def _gen(pipe, concept, **kw):
    return gen(pipe, concept, **{"num_inference_steps": 4, **kw})


@pytest.fixture(scope="module")
def concept(smoke_pipeline, concept_image):
    return smoke_pipeline.encode_concept(concept_image, concept_image.with_name("concept_mask.png"))


def test_a_dict_of_one_number_everywhere_is_that_number(smoke_pipeline, concept):
    plain = _gen(smoke_pipeline, concept)
    assert torch.equal(_gen(smoke_pipeline, concept, lam=EVERY), plain)
    per_block = {"down": {f"block_{b}": [0.8, 0.8] for b in range(3)}, "mid": 0.8, "up": {"block_1": 0.8}}
    per_block["up"] |= {"block_2": [0.8] * 3, "block_3": 0.8}
    assert torch.equal(_gen(smoke_pipeline, concept, lam=per_block), plain)


def test_lambda_zero_on_every_block_is_no_local_branch(smoke_pipeline, concept):
    without = _gen(smoke_pipeline, Concept(words=concept.words, local_tokens=None))
    assert torch.equal(_gen(smoke_pipeline, concept, lam={"down": 0, "mid": 0, "up": 0}), without)
    assert torch.equal(_gen(smoke_pipeline, concept, lam={"mid": 0.0}), without)  # blocks left out are 0
    # one block's lambda changes the images, and differently from another's
    down, up = _gen(smoke_pipeline, concept, lam={"down": 0.8}), _gen(smoke_pipeline, concept, lam={"up": 0.8})
    assert not torch.equal(down, without) and not torch.equal(up, without) and not torch.equal(down, up)
    assert not torch.equal(down, _gen(smoke_pipeline, concept))


def test_the_step_range(smoke_pipeline, concept):
    plain = _gen(smoke_pipeline, concept)
    assert torch.equal(_gen(smoke_pipeline, concept, local_steps=(0.0, 1.0)), plain)
    assert torch.equal(_gen(smoke_pipeline, concept, local_steps=(0.0, 0.0)), _gen(smoke_pipeline, concept, lam=0.0))
    late = _gen(smoke_pipeline, concept, local_steps=(0.5, 1.0))
    assert not torch.equal(late, plain) and not torch.equal(late, _gen(smoke_pipeline, concept, lam=0.0))
    assert torch.equal(_gen(smoke_pipeline, concept, lam=EVERY, local_steps=(0.5, 1.0)), late)
    assert active_steps(4, (0.5, 1.0)) == [False, False, True, True]
    assert active_steps(4, (0.0, 0.6)) == [True, True, False, False]  # ControlNet's rule: whole steps only


def test_layer_lambda_follows_the_unet_layout():
    lam = {"down": {"block_1": [0.1, 0.2]}, "mid": 0.3, "up": 0.4}
    assert layer_lambda(lam, "down_blocks_1_attentions_1_transformer_blocks_0_attn2") == 0.2
    assert layer_lambda(lam, "down_blocks_0_attentions_0_transformer_blocks_0_attn2") == 0.0
    assert layer_lambda(lam, "mid_block_attentions_0_transformer_blocks_0_attn2") == 0.3
    assert layer_lambda(lam, "up_blocks_3_attentions_2_transformer_blocks_0_attn2") == 0.4


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lam": {"middle": 0.8}}, "lam: unknown block 'middle'; the keys are down, mid, up"),
        ({"lam": {}}, "lam: unknown block None"),
        ({"lam": {"down": -1}}, "lam.down: expected a finite number >= 0, got -1"),
        ({"lam": {"mid": {"block_0": 1}}}, "lam.mid: expected a finite number >= 0"),
        ({"lam": {"up": {"first": 0.8}}}, "lam.up.first: blocks are named block_0, block_1"),
        ({"lam": {"up": {"block_1": [0.8, float("nan"), 0.8]}}}, "lam.up.block_1[1]: expected a finite number"),
        ({"lam": {"up": {"block_0": 0.8}}}, "lam.up.block_0: this UNet has no cross-attention there; its up blocks"),
        ({"lam": {"down": {"block_0": [0.8]}}}, "lam.down.block_0: 1 numbers for 2 attentions"),
        ({"lam": -0.5}, "lam must be a finite number >= 0"),
        ({"local_steps": (0.6, 0.2)}, "local_steps: expected 0 <= start <= end <= 1"),
        ({"local_steps": (0.0, 1.5)}, "local_steps: expected 0 <= start <= end <= 1"),
        ({"local_steps": (0.5,)}, "local_steps: expected (start, end)"),
        ({"local_steps": (-0.1, 1)}, "local_steps: expected a finite number >= 0"),
    ],
)
def test_bad_blocks_and_ranges_are_one_line_errors(smoke_pipeline, concept, kw, message):
    with pytest.raises(EliteError) as err:
        _gen(smoke_pipeline, concept, num_inference_steps=1, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_loader_mixin_takes_lambda_per_block(smoke_pipeline, smoke_models):
    pipe = loaded_sd_pipeline(smoke_models)
    image = Image.fromarray((np.random.default_rng(4).random((64, 64, 3)) * 255).astype("uint8"))
    concept = pipe.encode_concept(image)

    def run(lam):
        g = torch.Generator().manual_seed(1)
        return pipe("a S*", concept=concept, lam=lam, num_inference_steps=3, generator=g, output_type="np").images

    assert np.array_equal(run(EVERY), run(0.8))
    assert not np.array_equal(run({"up": 0.8}), run(0.8))
    with pytest.raises(EliteError, match="lam.up.block_0: this UNet has no cross-attention there"):
        run({"up": {"block_0": 1.0}})
    with pytest.raises(EliteError, match="local_steps: the step range needs ElitePipeline"):
        pipe("a S*", concept=concept, local_steps=(0.0, 0.5), num_inference_steps=1)


def test_cli_lambda_per_block_and_step_range(smoke_models, concept_image, tmp_path, repo_root, elite_cli):
    common = ["generate", "--base", smoke_models / "base", "--weights", smoke_models / "elite", "--steps", 2]
    common += ["--image", concept_image, "--prompt", "a S*", "--seed", 2]
    runs = {
        "float": ["--lam", 0.8],
        "dict": ["--lam", '{"down": 0.8, "mid": 0.8, "up": 0.8}', "--local-steps", 0, 1],
    }
    for name, extra in runs.items():
        run = elite_cli(*common, *extra, "--out", tmp_path / f"{name}.png", cwd=repo_root)
        assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "float.png") as a, Image.open(tmp_path / "dict.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for extra, message in [
        (["--lam", "{down: 1}"], "argument --lam: expected a number or a JSON object per block"),
        (["--lam", '{"middle": 1}'], "lam: unknown block 'middle'"),
        (["--local-steps", 0.9, 0.1], "local_steps: expected 0 <= start <= end <= 1"),
    ]:
        run = elite_cli(*common, *extra, "--out", tmp_path / "x.png", cwd=repo_root)
        assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert message in run.stderr
