"""The generation plan: prompts, families and lambda, seeds, sharding, resumability (no models needed, but for the
last test: a resumed batch on the smoke models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import REAL_STYLE_LIVE, REAL_STYLE_OBJECT, params_with

from elite.errors import EliteError
from elite.evaluate.generate import family_of, plan, select_subjects, shard_jobs, spread
from elite.shards import parse_shard

SUBJECTS = [
    {"subject": "teapot", "class": "teapot", "live": False, "images": ["x/00.jpg"], "prompts": REAL_STYLE_OBJECT},
    {"subject": "dog6", "class": "dog", "live": True, "images": ["y/00.jpg"], "prompts": REAL_STYLE_LIVE},
]


@pytest.fixture()
def concepts(tmp_path):
    out = {}
    for s in SUBJECTS:
        (tmp_path / f"{s['subject']}.jpg").write_bytes(s["subject"].encode())
        (tmp_path / f"{s['subject']}.png").write_bytes(b"mask")
        out[s["subject"]] = (tmp_path / f"{s['subject']}.jpg", tmp_path / f"{s['subject']}.png")
    return out


def cfg_with(repo_root, tmp_path, **values):
    values = {
        "out": str(tmp_path / "eval"),
        "extra_prompts": ["a photo of a {0} {1}"],
        "images_per_prompt": 2,
        "sweep_lams": [0.0, 0.6, 1.2],
        "sweep_subjects": 1,
        "sweep_prompts": 2,
        "sweep_images": 1,
        **values,
    }
    return params_with(repo_root, evaluate=values).evaluate


def test_prompts_families_and_lambda(repo_root, tmp_path, concepts):
    jobs = plan(cfg_with(repo_root, tmp_path), SUBJECTS, concepts, "w")
    elite = {(j.subject, j.prompt): j for j in jobs if j.variant == "elite"}
    assert len(elite) == 2 * (1 + 4)
    photo = elite[("teapot", "a photo of a S*")]
    assert (photo.family, photo.lam, photo.text) == ("photo", 0.8, "a photo of a teapot")
    assert (elite[("teapot", "a S* in the jungle")].family, elite[("teapot", "a S* in the jungle")].lam) == (
        "recontextualization",
        0.6,
    )
    assert elite[("teapot", "a cube shaped S*")].family == "property"
    hat = elite[("dog6", "a S* wearing a santa hat")]
    assert (hat.family, hat.lam, hat.text) == ("accessorization", 0.6, "a dog wearing a santa hat")
    assert elite[("dog6", "a S* in a chef outfit")].family == "accessorization"
    assert elite[("dog6", "a wet S*")].family == "property"
    baseline = [j for j in jobs if j.variant == "baseline"]
    assert len(baseline) == 10 and all(j.prompt == j.text and j.lam is None for j in baseline)
    with_class = plan(
        cfg_with(repo_root, tmp_path, class_word_in_prompt=True, placeholder="S*"), SUBJECTS, concepts, "w"
    )
    assert "a S* dog wearing a santa hat" in {j.prompt for j in with_class}


def test_seeds_are_deterministic_and_shared_across_variants(repo_root, tmp_path, concepts):
    cfg = cfg_with(repo_root, tmp_path)
    jobs = plan(cfg, SUBJECTS, concepts, "w")
    again = plan(cfg, SUBJECTS, concepts, "w")
    assert [j.seeds for j in jobs] == [j.seeds for j in again]
    by_key = {}
    for j in jobs:
        by_key.setdefault((j.subject, j.template), set()).add(j.seeds[0])
    assert all(len(seeds) == 1 for seeds in by_key.values())  # elite, baseline and sweep start from the same noise
    first = [j for j in jobs if j.variant == "elite"]
    assert len({s for j in first for s in j.seeds}) == 2 * len(first)  # every image of the stage its own seed
    other = plan(cfg_with(repo_root, tmp_path, seed=7), SUBJECTS, concepts, "w")
    assert other[0].seeds != jobs[0].seeds


def test_sweep_subset_and_folders(repo_root, tmp_path, concepts):
    jobs = plan(cfg_with(repo_root, tmp_path), SUBJECTS, concepts, "w")
    sweep = [j for j in jobs if j.variant == "sweep"]
    assert {j.subject for j in sweep} == {"teapot"} and {j.lam for j in sweep} == {0.0, 0.6, 1.2}
    assert len(sweep) == 3 * 2 and all(len(j.seeds) == 1 for j in sweep)
    assert sweep[0].folder == tmp_path / "eval" / "sweep" / "lam_0" / "teapot" / "a_photo_of_a_teapot"
    folders = [j.folder for j in jobs]
    assert len(set(folders)) == len(folders)


def test_sweep_by_block_runs_the_sweep_subset_once_per_row_with_its_lambda(repo_root, tmp_path, concepts):
    """The sweep by block (issue 27): rows from the weights' cross-attention layers, each on the sweep's subjects,
    prompts and images, in its own folder, with the row's per-block lambda in its settings (a changed row redoes
    only its images) and its name in the score rows."""
    from elite.models.local_control import block_rows

    layers = [
        "down_blocks_1_attentions_0_transformer_blocks_0_attn2",
        "down_blocks_2_attentions_0_transformer_blocks_0_attn2",
        "mid_block_attentions_0_transformer_blocks_0_attn2",
        "up_blocks_1_attentions_0_transformer_blocks_0_attn2",
    ]
    rows = block_rows(layers, 0.8)
    assert rows == {
        "global word only": 0.0,
        "every block": 0.8,
        "down": {"down": 0.8},
        "down.block_1": {"down": {"block_1": 0.8}},
        "down.block_2": {"down": {"block_2": 0.8}},
        "mid": {"mid": 0.8},
        "up": {"up": 0.8},
    }
    cfg = cfg_with(repo_root, tmp_path)
    jobs = plan(cfg, SUBJECTS, concepts, "w", blocks=rows)
    blocks = [j for j in jobs if j.variant == "blocks"]
    assert [j.row for j in blocks[::2]] == list(rows) and len(blocks) == len(rows) * 2
    assert {j.subject for j in blocks} == {"teapot"} and all(len(j.seeds) == 1 for j in blocks)
    one = next(j for j in blocks if j.row == "down.block_1")
    assert one.lam == {"down": {"block_1": 0.8}} and one.settings["lam"] == one.lam
    assert one.folder == tmp_path / "eval" / "blocks" / "down_block_1" / "teapot" / "a_photo_of_a_teapot"
    assert one.record(0)["row"] == "down.block_1" and "row" not in jobs[0].record(0)
    sweep = {(j.template, j.lam): j.seeds for j in jobs if j.variant == "sweep"}
    assert all(sweep[(j.template, 0.0)] == j.seeds for j in blocks)  # the sweep's noise: rows differ by lambda only
    folders = [j.folder for j in jobs]
    assert len(set(folders)) == len(folders)
    assert not [j for j in plan(cfg, SUBJECTS, concepts, "w") if j.variant == "blocks"]


def test_max_prompts_spreads_over_the_list():
    assert spread(list(range(25)), 5) == [0, 6, 12, 18, 24]
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2, 3], None) == [1, 2, 3]


def test_shards_partition_the_jobs(repo_root, tmp_path, concepts):
    jobs = plan(cfg_with(repo_root, tmp_path), SUBJECTS, concepts, "w")
    shards = [shard_jobs(jobs, (i, 3)) for i in range(3)]
    assert sorted(str(j.folder) for s in shards for j in s) == sorted(str(j.folder) for j in jobs)
    assert all(abs(len(s) - len(jobs) / 3) < 1 for s in shards)
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "1", "a/b", "0/0", "-1/2"):
        with pytest.raises(EliteError, match="--shard"):
            parse_shard(bad)


def test_resume_skips_only_images_made_with_the_same_settings(repo_root, tmp_path, concepts):
    cfg = cfg_with(repo_root, tmp_path)
    job = plan(cfg, SUBJECTS, concepts, "w")[0]
    assert job.missing() == [0, 1]
    job.folder.mkdir(parents=True)
    job.image(0).write_bytes(b"png")
    assert job.missing() == [0, 1]  # no sidecar: not done
    job.sidecar(0).write_text(json.dumps({"settings": job.settings, "generate_s": 1.0}))
    assert job.missing() == [1]
    for changed in (
        plan(cfg_with(repo_root, tmp_path, steps=3), SUBJECTS, concepts, "w")[0],
        plan(cfg, SUBJECTS, concepts, "new-weights")[0],
    ):
        assert changed.folder == job.folder and changed.missing() == [0, 1]
    concepts["teapot"][1].write_bytes(b"another mask")
    assert plan(cfg, SUBJECTS, concepts, "w")[0].missing() == [0, 1]


def test_bad_selections_are_clear_errors(repo_root, tmp_path, concepts):
    with pytest.raises(EliteError, match="robot not in subjects.json"):
        select_subjects(SUBJECTS, ["teapot", "robot"])
    assert [s["subject"] for s in select_subjects(SUBJECTS, ["dog6"])] == ["dog6"]
    with pytest.raises(EliteError, match="^params baselines.subjects: robot not in"):
        select_subjects(SUBJECTS, ["robot"], "baselines.subjects")
    families = cfg_with(repo_root, tmp_path).families[:1]
    with pytest.raises(EliteError, match="matches no evaluate.families"):
        family_of("a {0} {1} in the jungle", families)
    with pytest.raises(EliteError, match="not a regular expression"):
        family_of("x {0}", [type(families[0])(name="x", pattern="(", lam=0.5)])
    with pytest.raises(EliteError, match="needs \\{0\\}"):
        plan(cfg_with(repo_root, tmp_path, extra_prompts=["a photo"]), SUBJECTS, concepts, "w")
    with pytest.raises(EliteError, match="same folder name"):
        plan(cfg_with(repo_root, tmp_path, extra_prompts=["a {0} {1} in the jungle!"]), SUBJECTS, concepts, "w")
    assert Path(cfg_with(repo_root, tmp_path).out).name == "eval"


def test_toy_rows_named_and_global(repo_root, tmp_path, concepts):
    """Toy world: `named` puts the identity words where S* was (base model, same seeds as ELITE), `global` is
    ELITE at lambda 0 on every prompt; neither appears without its switch."""
    named = {"teapot": "red checkered", "dog6": "blue striped"}
    jobs = plan(cfg_with(repo_root, tmp_path, global_row=True), SUBJECTS, concepts, "w", named=named)
    rows = {(j.variant, j.subject, j.template): j for j in jobs}
    tpl = "a {0} {1} in the jungle"
    assert rows[("named", "teapot", tpl)].prompt == "a red checkered teapot in the jungle"
    assert rows[("named", "teapot", tpl)].seeds == rows[("elite", "teapot", tpl)].seeds
    assert "weights" not in rows[("named", "teapot", tpl)].settings
    assert (rows[("global", "teapot", tpl)].lam, rows[("global", "teapot", tpl)].prompt) == (0.0, "a S* in the jungle")
    counts = {v: sum(j.variant == v for j in jobs) for v in ("elite", "named", "global")}
    assert counts["named"] == counts["global"] == counts["elite"]
    plain = plan(cfg_with(repo_root, tmp_path, global_row=False), SUBJECTS, concepts, "w")
    assert not {j.variant for j in plain} & {"named", "global"}


def test_several_image_rows_repeat_the_elite_row_with_k_images(repo_root, tmp_path, concepts):
    """`images<k>`: the `elite` jobs again (prompt, lambda, seeds) with the first k images' fingerprint; a
    missing mask of a later image is a one-line error naming the file and the mask setting."""
    from elite.evaluate.several import multi_image_jobs, several_inputs

    rows = [dict(s, images=[str(tmp_path / f"{s['subject']}{i}.jpg") for i in range(3)]) for s in SUBJECTS]
    cfg = cfg_with(repo_root, tmp_path, multi_images=[2, 3], masks=str(tmp_path / "masks"))
    (tmp_path / "masks").mkdir()
    for s in rows:
        for i, image in enumerate(s["images"]):
            Path(image).write_bytes(f"{s['subject']}{i}".encode())
            name = f"{s['subject']}.png" if i == 0 else f"{s['subject']}.{Path(image).stem}.png"
            if (s["subject"], i) != ("dog6", 2):
                (tmp_path / "masks" / name).write_bytes(b"m")
    with pytest.raises(
        EliteError,
        match=r"masks/dog6\.dog62\.png: SAM mask of image 2 of subject 'dog6' not found; "
        r"set mask.concept_extra_images to at least 2",
    ):
        several_inputs(cfg, rows)
    (tmp_path / "masks" / "dog6.dog62.png").write_bytes(b"m")
    several = several_inputs(cfg, rows)
    assert [p.name for pair in several["dog6"] for p in pair] == [
        "dog60.jpg",
        "dog6.png",
        "dog61.jpg",
        "dog6.dog61.png",
        "dog62.jpg",
        "dog6.dog62.png",
    ]
    elite = [j for j in plan(cfg, rows, concepts, "w") if j.variant == "elite"]
    extra = multi_image_jobs(cfg, elite, several)
    assert [j.variant for j in extra] == ["images2"] * len(elite) + ["images3"] * len(elite)
    for job, base in zip(extra, elite + elite):
        assert (job.prompt, job.lam, job.seeds, job.subject) == (base.prompt, base.lam, base.seeds, base.subject)
        assert job.folder == tmp_path / "eval" / job.variant / job.subject / base.folder.name
        assert job.settings["concept"] != base.settings["concept"] and job.images == int(job.variant[6:])
    assert extra[0].settings["concept"] != extra[len(elite)].settings["concept"]  # 2 images vs 3
    with pytest.raises(EliteError, match="asks for 4 images but subject 'teapot' has 3"):
        several_inputs(cfg_with(repo_root, tmp_path, multi_images=[4]), rows)


def test_two_concept_rows(repo_root, tmp_path, concepts):
    """Pairs i, i + 1 (cyclic) on each pair template: ELITE per concept and naive with S1*/S2*, the class words
    and (toy) the named identities, all four on the same seeds; a template without both fields is refused."""
    from elite.evaluate.several import pair_jobs

    cfg = cfg_with(repo_root, tmp_path, pairs=2, pair_prompts=["a {0} and a {1} on the grass"])
    named = {"teapot": "red checkered", "dog6": "blue striped"}
    ids = {"teapot": "t", "dog6": "d"}
    jobs = {(j.variant, j.subject): j for j in pair_jobs(cfg, SUBJECTS, "w", ids, named)}
    assert set(jobs) == {
        (v, s) for v in ("pair", "pair_naive", "pair_class", "pair_named") for s in ("teapot+dog6", "dog6+teapot")
    }
    pair = jobs[("pair", "teapot+dog6")]
    assert (pair.prompt, pair.text, pair.lam, pair.pair) == (
        "a S1* and a S2* on the grass",
        "a teapot and a dog on the grass",
        0.6,
        ("teapot", "dog6"),
    )
    assert pair.settings["concept"] == ["t", "d"] and jobs[("pair", "dog6+teapot")].settings["concept"] == ["d", "t"]
    assert jobs[("pair_class", "teapot+dog6")].prompt == "a teapot and a dog on the grass"
    assert jobs[("pair_named", "dog6+teapot")].prompt == "a blue striped dog and a red checkered teapot on the grass"
    assert len({j.seeds for (v, s), j in jobs.items() if s == "teapot+dog6"}) == 1
    assert (
        jobs[("pair_class", "teapot+dog6")].lam is None
        and "weights" not in jobs[("pair_class", "teapot+dog6")].settings
    )
    assert not [j for j in pair_jobs(cfg, SUBJECTS, "w", ids, None) if j.variant == "pair_named"]
    with pytest.raises(EliteError, match="needs \\{0\\} and \\{1\\}"):
        pair_jobs(cfg_with(repo_root, tmp_path, pairs=1, pair_prompts=["a {0} alone"]), SUBJECTS, "w", ids, None)
    with pytest.raises(EliteError, match="at least 2 evaluated subjects"):
        pair_jobs(cfg, SUBJECTS[:1], "w", ids, None)


def test_a_resumed_batch_rewrites_exactly_the_missing_image(repo_root, tmp_path, smoke_models, concept_image):
    """Sampler.run samples the job's whole batch whatever is missing (a batch of another size gives other bits on
    the same seeds) and writes only the missing images: an evaluation killed between two images of one batch
    resumes to the bytes an uninterrupted run writes, and leaves the images it had untouched."""
    import torch

    from elite.evaluate.generate import Sampler

    subject = {**SUBJECTS[0], "images": [str(concept_image)]}
    concepts = {"teapot": (concept_image, concept_image.with_name("concept_mask.png"))}
    cfg = cfg_with(
        repo_root,
        tmp_path,
        images_per_prompt=3,
        steps=2,
        dtype="float32",
        cpu_threads=1,
        base=str(smoke_models / "base"),
        weights=str(smoke_models / "elite"),
    )
    job = next(j for j in plan(cfg, [subject], concepts, "w") if j.variant == "elite")
    sampler = Sampler(cfg, concepts, "cpu", torch.float32)
    sampler.run(job, job.missing())
    first = [job.image(i).read_bytes() for i in range(3)]
    kept = {i: job.image(i).stat().st_mtime_ns for i in (0, 2)}
    job.image(1).unlink()
    assert job.missing() == [1]
    batches = []  # at smoke size the bytes agree either way (batch 1 vs 3 differ by ~2e-6 before rounding): the
    hook = sampler.elite().unet.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    try:  # UNet's batch is what shows that the whole batch was sampled (3 images x 2 guidance halves)
        sampler.run(job, job.missing())
    finally:
        hook.remove()
    assert set(batches) == {6}
    assert job.image(1).read_bytes() == first[1] and job.missing() == []
    assert {i: job.image(i).stat().st_mtime_ns for i in (0, 2)} == kept
