"""The toy world: the renderer's labels, boxes and masks are exact; its release and DreamBench writers keep
the held-out identities where they belong; the probes reach their quality floor on fresh renders; the
v-prediction target is the scheduler's velocity."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from elite.toy.bank import caption, make_bank
from elite.toy.world import (
    CLASSES,
    COLOURS,
    PATTERNS,
    SCENES,
    SceneSpec,
    _coverage,
    render,
    sample_object,
    sample_spec,
)


def test_render_is_deterministic_and_labels_are_the_spec():
    spec = sample_spec(np.random.default_rng(3))
    a, b = render(spec, 32), render(spec, 32)
    assert np.array_equal(a.image, b.image) and all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    obj = spec.objects[0]
    assert obj.cls in CLASSES and obj.colour in COLOURS and obj.pattern in PATTERNS and spec.scene in SCENES


@pytest.mark.parametrize("seed", range(6))
def test_masks_and_boxes_are_exact(seed):
    """Outside an object's coverage the pixels are the background's; the mask is coverage >= 0.5 minus what
    later objects cover; the box is the mask's bounding box."""
    spec = sample_spec(np.random.default_rng(seed), objects=1 + seed % 2)
    r = render(spec, 32)
    empty = render(SceneSpec(spec.scene, (), spec.texture_seed), 32)
    covered = np.zeros((32, 32), bool)
    for obj in spec.objects:
        covered |= _coverage(obj, 32)[0] > 0
    assert np.array_equal(r.image[~covered], empty.image[~covered])
    later = np.zeros((32, 32), bool)
    for k in reversed(range(len(spec.objects))):
        full = _coverage(spec.objects[k], 32)[0] >= 0.5
        assert np.array_equal(r.masks[k], full & ~later)
        later |= full
        ys, xs = np.nonzero(r.masks[k])
        assert r.boxes[k] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_plain_object_pixels_have_its_colour():
    obj = replace(sample_object(np.random.default_rng(0), cls="ball", identity=("red", "plain")), radius=0.34)
    r = render(SceneSpec("snow", (obj,), 0), 32)
    fill, inner, _ = _coverage(obj, 32)
    solid = inner == 1
    assert solid.sum() > 100
    assert np.abs(r.image[solid].astype(int) - np.array(COLOURS["red"])).max() <= 1


def test_captions_name_what_the_modes_say():
    rng = np.random.default_rng(0)
    spec = SceneSpec("grass", (sample_object(rng, cls="ball", identity=("red", "checkered")),), 0)
    both = {"both": 1.0, "colour": 0.0, "pattern": 0.0, "none": 0.0}
    assert caption(spec, rng, both, template_p=0.0) == "a red checkered ball on the grass"
    bare = {"both": 0.0, "colour": 0.0, "pattern": 0.0, "none": 1.0}
    texts = {caption(spec, rng, bare, template_p=0.5, scene_p=0.5) for _ in range(50)}
    assert not any("red" in t or "checkered" in t for t in texts) and all("ball" in t for t in texts)


def test_release_leaves_out_held_out_identities(tmp_path):
    from elite.toy.release import TOY_CLASSES, write_toy_release

    held = frozenset({("red", "plain"), ("blue", "striped")})
    root = write_toy_release(tmp_path / "release", "test", 40, 32, 0, held, 1.0)
    with open(root / "test-annotations-bbox.csv") as f:
        rows = list(csv.DictReader(f))
    assert len({r["ImageID"] for r in rows}) == 40
    assert {r["LabelName"] for r in rows} <= {c[0] for c in TOY_CLASSES}
    bank = make_bank(200, 32, 0, exclude=held)
    assert not {o.identity for s in bank.specs for o in s.objects} & held


def test_release_files_are_byte_identical_when_written_again(tmp_path):
    """The same seed gives the same bytes, archives included (zip entries carry a fixed time), so DVC sees the
    download stage's output unchanged and the training stages stay up to date."""
    import time

    from elite.toy.release import write_toy_release

    first = write_toy_release(tmp_path / "a", "test", 12, 32, 0, frozenset(), 1.0)
    time.sleep(2.1)  # zip stores times at 2 s resolution: a wall-clock timestamp would differ now
    again = write_toy_release(tmp_path / "b", "test", 12, 32, 0, frozenset(), 1.0)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert any(f.suffix == ".zip" for f in files)
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert [f for f in files if (first / f).read_bytes() != (again / f).read_bytes()] == []


@pytest.mark.slow
def test_region_probe_reads_each_half_of_two_object_scenes(tmp_path):
    """A reduced region probe (trained on halves of two-object renders) scores fresh two-object renders: the
    right concepts on their halves score high, the concepts given the other way round count as swaps, and
    an untrained probe is near chance. Reduced: 800 steps at twice the stage's learning rate, which reads the
    fresh halves as 1,200 steps at the stage's rate do (measured: colour 1.00, pattern 0.995, both right 0.93 in
    either; 600 steps: colour 0.92) in two thirds of the time. `region_probe` keeps what it trained."""
    from elite.toy.probes import Probe, accuracy, train_probe
    from elite.toy.regions import REGION_HEADS, region_bank, region_probe, score_pair

    probe = train_probe(region_bank(2000, 32, 0, frozenset()), REGION_HEADS, 800, 0, lr=4e-3)
    acc = accuracy(probe, region_bank(200, 32, 1, frozenset()))
    assert acc["colour"] >= 0.9 and acc["pattern"] >= 0.7, acc
    kept = region_probe(tmp_path / "probes", 32, 64, 2, 0, frozenset())[1]
    weights = (tmp_path / "probes" / "region.safetensors").stat()
    assert region_probe(tmp_path / "probes", 32, 64, 2, 0, frozenset())[1] == kept
    assert (tmp_path / "probes" / "region.safetensors").stat().st_mtime_ns == weights.st_mtime_ns  # not trained again
    rng = np.random.default_rng(5)
    specs = [sample_spec(rng, objects=2) for _ in range(60)]
    x = torch.stack([torch.from_numpy(render(s, 32).image).permute(2, 0, 1).float() / 127.5 - 1 for s in specs])

    def attrs(o):
        return {"colour": o.colour, "pattern": o.pattern, "cls": o.cls}

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    right = [score_pair(probe, x[i : i + 1], *map(attrs, s.objects))[0] for i, s in enumerate(specs)]
    swapped = [score_pair(probe, x[i : i + 1], *map(attrs, s.objects[::-1]))[0] for i, s in enumerate(specs)]
    distinct = [r for r, s in zip(swapped, specs) if s.objects[0].identity != s.objects[1].identity]
    assert mean(right, "both_identity_acc") >= 0.6 and mean(right, "swap_rate") <= 0.15
    assert mean(distinct, "swap_rate") >= 0.7 and mean(distinct, "both_identity_acc") <= 0.1
    torch.manual_seed(0)
    untrained = [
        score_pair(Probe(["colour", "pattern", "cls"]).eval(), x[i : i + 1], *map(attrs, s.objects))[0]
        for i, s in enumerate(specs)
    ]
    assert mean(untrained, "both_identity_acc") < 0.2


def test_toy_dreambench_is_read_by_the_dreambench_parser(tmp_path):
    from elite.evaluate.dreambench import load_dataset
    from elite.toy.dreambench import CONCEPTS_FILE, PROMPTS, write_toy_dreambench

    out = write_toy_dreambench(tmp_path / "db", [["ball", "red", "checkered"], ["box", "blue", "striped"]], 32, 0, 3)
    subjects, warnings = load_dataset(out, ["cat", "dog"])
    concepts = json.loads((out / CONCEPTS_FILE).read_text())
    assert not warnings and [s.subject for s in subjects] == ["red_checkered_ball", "blue_striped_box"]
    assert all(len(s.images) == 3 and s.prompts == PROMPTS for s in subjects)
    assert concepts["blue_striped_box"] == {"colour": "blue", "pattern": "striped", "cls": "box"}


def test_v_prediction_target_is_the_velocity():
    from elite.toy.standins import build_scheduler
    from elite.train.losses import diffusion_target

    sched = build_scheduler()
    x0, noise, t = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4), torch.tensor([10, 500, 990])
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(diffusion_target(sched, x0, noise, t), a.sqrt() * noise - (1 - a).sqrt() * x0, atol=1e-6)


def test_min_snr_weights_cap_the_low_noise_steps():
    from elite.toy.standins import build_scheduler, min_snr_weights

    sched = build_scheduler()
    t = torch.tensor([0, 200, 500, 999])
    a = sched.alphas_cumprod[t]
    snr = a / (1 - a)
    w = min_snr_weights(sched, t, 5.0)
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1), rtol=1e-5)
    assert w[0] < 1e-3 and w[-1] < 1e-6 and w.max() <= 1.0  # x0 error weight: 5/(SNR+1) low noise, SNR/(SNR+1) high
    assert torch.equal(min_snr_weights(sched, t, 0.0), torch.ones(4))


@pytest.mark.slow
def test_identity_probe_reaches_its_floor_on_fresh_renders():
    """A reduced probe reads colour and scene on renders it never saw; an untrained one is at chance. The
    per-pixel colour head turns late at the stage's learning rate (measured on held-out renders: colour 0.61 at 200
    steps, 0.99 at 300, 1.00 at 400 and 600; scene 1.00 from 200); at twice that rate 200 steps read colour 1.00
    and scene 1.00, in half the time of 400."""
    from elite.toy.probes import Probe, accuracy, train_probe

    train, test = make_bank(3000, 32, 1), make_bank(400, 32, 2)
    probe = train_probe(train, ["colour", "scene"], 200, 0, batch=64, lr=4e-3)
    acc = accuracy(probe, test)
    assert acc["colour"] >= 0.9 and acc["scene"] >= 0.9, acc
    torch.manual_seed(0)
    assert accuracy(Probe(["colour"]), test)["colour"] < 0.4


def test_scorer_reads_concepts_and_prompt_scenes(tmp_path):
    """ToyScorer finds the toy set's attributes and the probes, scores every image against the subject and the
    prompt's scene (None when the prompt names none), and stays off for a non-toy set."""
    from PIL import Image

    from elite.toy.dreambench import write_toy_dreambench
    from elite.toy.probes import Probe, save_probes
    from elite.toy.scoring import ToyScorer, prompt_scene

    assert prompt_scene("a S* on the night sky") == "night sky" and prompt_scene("a photo of a S*") is None
    db = write_toy_dreambench(tmp_path / "db", [["ball", "red", "checkered"]], 32, 0, 2)
    (db / "subjects.json").write_text("[]")
    probes = tmp_path / "probes"
    probes.mkdir()
    torch.manual_seed(0)
    save_probes(probes, identity=Probe(["colour", "pattern", "cls"]), scene=Probe(["scene"]))
    scorer = ToyScorer.find(probes, db / "subjects.json")
    images = [Image.open(p) for p in sorted((db / "red_checkered_ball").glob("*.jpg"))]
    rows = scorer.score(images, "red_checkered_ball", "a ball on the snow")
    assert len(rows) == 2 and all(
        set(r) == {"colour_acc", "pattern_acc", "identity_acc", "class_acc", "scene_acc"} for r in rows
    )
    assert all(r["identity_acc"] == float(r["colour_acc"] and r["pattern_acc"] and r["class_acc"]) for r in rows)
    assert scorer.score(images, "red_checkered_ball", "a photo of a ball")[0]["scene_acc"] is None
    (db / "toy_concepts.json").unlink()
    assert ToyScorer.find(probes, db / "subjects.json") is None


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, repo_root):
    """prepare_toy's parts at a tiny size (2 steps each): a whole toy models folder (fresh ELITE weights and the
    base gate included), and its params."""
    from toy_helpers import tiny_toy_params

    from elite.toy.prepare import prepare_toy

    params = tiny_toy_params(repo_root)
    out = tmp_path_factory.mktemp("tiny-toy") / "pretrained"
    prepare_toy(params, out, parts=["vae", "clip", "evaluators", "base"])
    return params, out


def test_every_stand_in_trains_and_loads_through_the_real_loaders(tiny_models):
    """The tiny stand-ins' folders are read by the paper profile's loaders."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPVisionModel, ViTModel

    from elite.data.sam import load_sam
    from elite.toy.probes import load_probes

    params, out = tiny_models
    pipe = StableDiffusionPipeline.from_pretrained(out / "base", safety_checker=None, requires_safety_checker=False)
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.tokenizer.model_max_length == 20
    assert pipe.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.std.max() < 1e-6  # collapsed posterior
    CLIPModel.from_pretrained(out / "clip_eval")
    CLIPVisionModel.from_pretrained(out / "image_encoder")
    ViTModel.from_pretrained(out / "dino_eval")
    load_sam(out / "sam", "cpu")
    assert set(load_probes(out / "probes")) == {"identity", "scene"}
    top = pipe.unet.config.down_block_types[0] == "CrossAttnDownBlock2D"
    assert top == params.toy.unet_top_attention


def test_word_gate_samples_seen_and_held_out_concepts_from_one_render_each(tiny_models, tmp_path, capsys):
    """The mapper's gate (elite.toy.word_gate) on the tiny models: per set, every attribute, the joint and the
    scene read from n images, with w0 alone and with all the global words; the command line prints the same
    report, and a folder without a toy world is a one-line error."""
    from elite.toy.heldout import held_out_concepts
    from elite.toy.word_gate import WordSampling, main, measure_words

    params, out = tiny_models
    concepts = held_out_concepts(params.toy.held_out)
    w0 = measure_words(out, out / "elite", concepts, 4, WordSampling(steps=2))
    every = measure_words(out, out / "elite", concepts, 4, WordSampling(steps=2, all_words=True))
    for report in (w0, every):
        for name in ("seen", "held_out"):
            assert set(report[name]) == {"joint", "colour", "pattern", "class", "scene", "images"}
            assert report[name]["images"] == 4 and all(0 <= v <= 1 for k, v in report[name].items() if k != "images")
    assert (w0["all_words"], every["all_words"]) == (False, True)
    assert main(["--models", str(out), "--weights", str(out / "elite"), "--images", "4", "--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == w0
    assert main(["--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "toy_world.json: toy world not found" in err


def test_word_gate_draws_the_attribute_word_in_place_of_the_encoded_one(tiny_models, capsys):
    """`--attribute-words SCALE`: S* is SCALE x the sum of the vocabulary's input embeddings of the concept's
    colour, pattern and class words (w0 only, no local tokens, no image read), drawn by the same sampler."""
    from elite.toy.heldout import held_out_concepts
    from elite.toy.word_gate import WordSampling, attribute_word, load_judged, main, sample_words, word_concept

    params, out = tiny_models
    pipe, _ = load_judged(out, out / "elite")
    concept = held_out_concepts(params.toy.held_out)[0]
    table = pipe.text_encoder.get_input_embeddings().weight
    ids = pipe.tokenizer(f"{concept.colour} {concept.pattern} {concept.cls}", add_special_tokens=False).input_ids
    assert torch.allclose(attribute_word(pipe, concept, 2.0), 2 * table[ids].sum(0))
    how = WordSampling(steps=2, attribute_scale=2.0)
    made = word_concept(pipe, concept, how, 32, 0)
    assert made.local_tokens is None and torch.equal(made.words[0, 0], attribute_word(pipe, concept, 2.0))
    assert not made.words[0, 1:].any()
    drawn = sample_words(pipe, [concept], 2, 32, how)[0]
    assert not torch.equal(drawn, sample_words(pipe, [concept], 2, 32, WordSampling(steps=2))[0])
    args = ["--models", str(out), "--weights", str(out / "elite"), "--images", "2", "--steps", "2"]
    assert main([*args, "--attribute-words", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["attribute_scale"] == 2.0


def test_block_sweep_turns_the_local_branch_on_one_block_at_a_time(tiny_models, tmp_path, capsys):
    """elite.toy.block_sweep on the tiny models: one row per part and per block of the UNet's cross-attention, each
    a valid per-block lambda; a row's local term changes the images against the global word's row; the command
    line writes the table, its JSON and the figure, and a folder without a toy world is a one-line error."""
    from PIL import Image

    from elite.models.attention import KVProjections, cross_attention_layers
    from elite.models.local_control import block_rows, check_lam_blocks, position
    from elite.toy.block_sweep import main, wilson
    from elite.toy.heldout import held_out_concepts
    from elite.toy.word_gate import WordSampling, load_judged, sample_words

    params, out = tiny_models
    pipe, _ = load_judged(out, out / "elite")
    layers = [KVProjections.key(p) for p in cross_attention_layers(pipe.unet)]
    rows = block_rows(layers, 0.8)
    parts = sorted({position(layer)[0] for layer in layers})
    assert list(rows)[:2] == ["global word only", "every block"] and set(parts) <= set(rows)
    for lam in rows.values():
        check_lam_blocks(lam, layers)
    concepts, size = held_out_concepts(params.toy.held_out)[:1], params.toy.size
    images = {
        name: sample_words(pipe, concepts, 1, size, WordSampling(rows[name], steps=2))[0]
        for name in ("global word only", "every block", parts[-1])
    }
    assert not torch.equal(images["global word only"], images["every block"])
    assert not torch.equal(images["global word only"], images[parts[-1]])
    args = ["--models", str(out), "--weights", str(out / "elite"), "--images", "2", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "sweep.json"), "--figure", str(tmp_path / "sweep.png")]) == 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert [row["row"] for row in sweep["rows"]] == list(rows) and sweep["rows"][1]["held_out"]["images"] == 2
    assert f"| {parts[-1]} |" in capsys.readouterr().out
    assert Image.open(tmp_path / "sweep.png").size[0] > 300
    assert wilson(0.5, 96) == pytest.approx((0.4019, 0.5981), abs=1e-4) and wilson(0.0, 96)[0] == 0.0
    assert main(["--models", str(tmp_path), "--out", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "toy_world.json: toy world not found" in err
    assert not (tmp_path / "none.json").exists()


@pytest.mark.timeout(60)
def test_a_failed_lane_stops_the_other_lane_instead_of_hanging_it(tmp_path, repo_root, monkeypatch):
    """prepare_toy's two lanes: when the VAE lane fails, the lane whose base waits for that VAE stops with a
    one-line error naming the failure (before, it waited for the VAE folder forever and the stage hung). The
    failure is injected into the VAE part; the two lanes' code runs here one after the other."""
    from toy_helpers import tiny_toy_params

    from elite.errors import EliteError
    from elite.toy import prepare

    def disk_full(params, out):
        raise OSError("No space left on device")

    monkeypatch.setitem(prepare.PARTS, "vae", disk_full)
    params, out = tiny_toy_params(repo_root), tmp_path / "pretrained"
    out.mkdir()
    with pytest.raises(OSError, match="No space"):
        prepare._run_parts(params, out, ["vae", "evaluators"], out / "_vae")
    assert (out / prepare.FAILED).read_text() == "vae, evaluators: OSError: No space left on device\n"
    with pytest.raises(EliteError, match=r"the other lane failed \(vae, evaluators: OSError: No space left"):
        prepare._run_parts(params, out, ["base"], out / "_vae")
    assert not (out / "base").exists()
