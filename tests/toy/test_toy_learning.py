"""Learning tests that can fail: both ELITE stages train briefly from a fixed seed on toy-world renders of the
*seen* identities, and the held-out identities' retrieval (elite.toy.retrieval: does the S* encoded from one
render of a concept denoise other renders of it better than the other concepts' S*?) must rise well above
what the run started from. The frozen models are the toy profile's (tests/fixtures/toy, see make_fixture.py).
Retrieval credits words that tell the held-out concepts apart (consistent across renders of one concept), not
words that draw them: whether S* draws the concept is the word gate's and the evaluation's question (docs/toy.md).

Each claim has its test of the test: the same run with the credited branch detached from the UNet (a forward
hook returns the mapper's output detached: the forward pass is unchanged, no gradient reaches the mapper,
while the K/V projections still train) must fail the same criterion.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from elite.config import parse_params
from elite.pipeline import ElitePipeline
from elite.toy.heldout import held_out_identities
from elite.toy.retrieval import identity_retrieval
from elite.toy.world import render, sample_spec
from elite.train.loop import train
from elite.train.stages import GlobalStage, LocalStage

pytestmark = pytest.mark.timeout(1200)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "toy"
# Training steps of batch BATCH per stage. Stage 1 was measured at 400 and at 200 steps on three training seeds
# (tests/toy/learning_seeds.py, docs/toy.md): at 200 the closest any seed's claim or detached control came to the
# margin was 0.035 (at 400: 0.015), in half the training time; stage 2 (research only) keeps its 400.
STEPS = {"train_global": 200, "train_local": 400}
BATCH, RENDERS = 16, 1000
MARGIN = 0.15  # retrieval gain over the starting point; chance is 1/6
TARGETS = 16  # renders per held-out concept: 96 targets, standard error of a score about 0.05
RECORD = Path(__file__).resolve().parents[1] / "artifacts" / "toy_learning.json"
# Toy world v2 (issue 23), measured on a 2-core CPU (tests/toy/learning_scores.json; three training seeds in
# tests/toy/learning_seeds.json): over the fixture's 6,000-step min-SNR base (gate: seen named joint 0.958, held-out
# named 0.885) the named identity retrieves 0.792; stage 1 rises from 0.073 to 0.281 (+0.208; its detached control
# 0.125) and passes; the local branch then adds only +0.010 over that global word (0.292; detached 0.292), short
# of the margin. That claim is kept as a strict expected failure among the research measurements (`make
# test-research`, about 4 minutes: stage 1, then stage 2 over it, then retrieval; `make test` skips it, saying so):
# the day it passes, that run goes red until the markers are removed and docs/toy.md says so.
STAGE2_BELOW_MARGIN = pytest.mark.xfail(
    strict=True,
    reason="toy v2: over the min-SNR base the local branch adds +0.010 over stage 1, margin 0.15 (issue 23); "
    "see docs/toy.md, learning tests",
)


def detach_output(module, args, output):
    return output.detach()


class GlobalDetached(GlobalStage):
    def build(self, init, frozen):
        model = super().build(init, frozen)
        model.global_mapper.register_forward_hook(detach_output)
        return model


class LocalDetached(LocalStage):
    def build(self, init, frozen):
        model = super().build(init, frozen)
        model.local_mapper.register_forward_hook(detach_output)
        return model


@pytest.fixture(scope="module")
def toy(repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    return parse_params(raw, "params.yaml", "toy")


@pytest.fixture(scope="module")
def world(toy, tmp_path_factory) -> Path:
    return make_world(toy, tmp_path_factory.mktemp("toy-learning"))


def make_world(toy, out: Path) -> Path:
    """Renders of seen identities only, with exact boxes and masks, as curate + mask would list them."""
    held, rng, rows = held_out_identities(toy.toy.held_out), np.random.default_rng(7), []
    while len(rows) < RENDERS:
        spec = sample_spec(rng)
        if any(o.identity in held for o in spec.objects):
            continue
        r, n = render(spec, toy.toy.size), len(rows)
        Image.fromarray(r.image).save(out / f"{n}.png")
        Image.fromarray(r.masks[0].astype(np.uint8) * 255).save(out / f"{n}_mask.png")
        rows.append(
            {
                "image": str(out / f"{n}.png"),
                "box": list(r.boxes[0]),
                "label": spec.objects[0].cls,
                "image_id": str(n),
                "mask": str(out / f"{n}_mask.png"),
                "mask_source": "release",
            }
        )
    (out / "global.jsonl").write_text("".join(json.dumps({**r, "mask": None}) + "\n" for r in rows))
    (out / "local.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def run(stage_class, section, toy, world: Path, init: Path, name: str, seed: int | None = None) -> Path:
    """Train `section` for its STEPS on the world's renders from `init`; `seed` (None: params') seeds the training
    draws (order, noise, timesteps, augmentation), not the data."""
    out = world / name
    cfg = getattr(toy, section).model_copy(
        update={
            "base": str(FIXTURE / "base"),
            "init": str(init),
            "manifest": str(world / ("global.jsonl" if section == "train_global" else "local.jsonl")),
            "out": str(out),
            "metrics": str(world / f"{name}.json"),
            "plot": str(world / f"{name}.csv"),
            "checkpoint_dir": str(world / f"{name}-checkpoints"),
            "max_steps": STEPS[section],
            "batch_size": BATCH,
            "sample_every": 0,
            "checkpoint_every": STEPS[section],
            "cpu_threads": 1,
            **({} if seed is None else {"seed": seed}),
        }
    )
    with contextlib.chdir(world):  # a fresh MLflow store's artifacts land here
        train(stage_class(cfg), "toy")
    return out


def retrieval(toy, weights: Path, lam: float, keep: bool = True) -> float:
    pipe = ElitePipeline.from_pretrained(FIXTURE / "base", elite_weights=weights, torch_dtype=torch.float32)
    score = identity_retrieval(pipe, toy.toy.held_out, toy.toy.size, lam=lam, targets=TARGETS, draws=8)
    if keep:
        record(f"{weights.name} lambda {lam}", score)
    return score


def record(name: str, score: float) -> None:
    """Every measured score into tests/artifacts/toy_learning.json (the README quotes them)."""
    RECORD.parent.mkdir(exist_ok=True)
    scores = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    RECORD.write_text(json.dumps({**scores, name: round(score, 4)}, indent=2) + "\n")


@pytest.fixture(scope="module")
def untrained(toy) -> float:
    return retrieval(toy, FIXTURE / "elite", 0.0)


@pytest.fixture(scope="module")
def stage1(toy, world) -> Path:
    return run(GlobalStage, "train_global", toy, world, FIXTURE / "elite", "global")


@pytest.fixture(scope="module")
def stage1_score(toy, stage1) -> float:
    return retrieval(toy, stage1, 0.0)


def test_the_frozen_base_follows_named_identities(toy):
    """The gate the mapper work stands on (issue 13): with the identity written in the prompt, the base's
    text path already tells the held-out concepts apart (the words were seen, never these combinations)."""
    pipe = ElitePipeline.from_pretrained(FIXTURE / "base", elite_weights=FIXTURE / "elite")
    score = identity_retrieval(pipe, toy.toy.held_out, toy.toy.size, targets=TARGETS, draws=8, named=True)
    record("identity named in the prompt", score)
    assert score >= 0.5


def test_stage1_words_tell_held_out_concepts_apart(untrained, stage1_score):
    assert stage1_score >= untrained + MARGIN, (untrained, stage1_score)


def test_stage1_test_fails_with_the_mapper_detached(toy, world, untrained):
    detached = run(GlobalDetached, "train_global", toy, world, FIXTURE / "elite", "global-detached")
    assert retrieval(toy, detached, 0.0) < untrained + MARGIN


@pytest.fixture(scope="module")
def stage2(toy, world, stage1) -> Path:
    return run(LocalStage, "train_local", toy, world, stage1, "local")


@pytest.mark.research
@STAGE2_BELOW_MARGIN
def test_stage2_local_branch_adds_identity_and_fails_detached(toy, world, stage1, stage2, stage1_score):
    """Global + local (lambda 0.8) over global only: the paper's Table 3 claim, on held-out concepts; then its
    test of the test, the same run with the local branch detached, must fall short of the same criterion. The
    control runs only once the claim holds: while the claim is below its margin (the strict expected failure),
    a detached run falling short of it too would show nothing (it measured +0.021 over stage 1 on v2 when it
    ran on its own, 2 minutes of the suite)."""
    assert retrieval(toy, stage2, 0.8) >= stage1_score + MARGIN
    detached = run(LocalDetached, "train_local", toy, world, stage1, "local-detached")
    assert retrieval(toy, detached, 0.8) < stage1_score + MARGIN


def test_retrieval_command_line(repo_root, capsys):
    from elite.toy.retrieval import main

    args = ["--params", str(repo_root / "params.yaml"), "--base", str(FIXTURE / "base")]
    small = ["--lam", "0", "--references", "1", "2", "--targets", "1", "--draws", "1"]
    assert main([*args, "--weights", str(FIXTURE / "elite"), *small]) == 0
    out = capsys.readouterr().out
    assert "lambda 0, 1 image(s):" in out and "lambda 0, 2 image(s):" in out and '"named"' in out
    assert main([*args, "--weights", str(FIXTURE / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no ELITE weights" in err and "\n" not in err
