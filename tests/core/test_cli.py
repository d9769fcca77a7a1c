"""`elite generate` end to end on the smoke models, and its one-line errors. One run goes through a fresh
process as a user's does; the other runs call the same `main` in this process (`elite_cli`, tests/conftest.py),
except the refusals, which must happen before the model libraries load (`elite_refused`)."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def elite(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "elite.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


# `elite` run in a process that then prints which model libraries the command imported
REFUSED = (
    "import sys; from elite.cli import main; code = main(sys.argv[1:]); "
    "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)); sys.exit(code)"
)


def elite_refused(*args, cwd):
    """`elite ARGS` expected to refuse its input with one line before any model library loads (well under a
    second instead of the ~7 s that importing torch, diffusers and transformers costs)."""
    run = subprocess.run([sys.executable, "-c", REFUSED, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout
    return run


@pytest.fixture(scope="module")
def gen_args(smoke_models, concept_image):
    return ["generate", "--base", smoke_models / "base", "--weights", smoke_models / "elite", "--steps", 2]


def test_generate_writes_a_png(gen_args, concept_image, session_tmp, tmp_path, repo_root):
    out = tmp_path / "beach.png"
    run = elite(
        *gen_args,
        "--image",
        concept_image,
        "--mask",
        session_tmp / "concept_mask.png",
        "--prompt",
        "a S* on the beach",
        "--out",
        out,
        "--seed",
        7,
        cwd=repo_root,
    )
    assert run.returncode == 0, run.stderr
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (64, 64)
        assert np.asarray(img).std() > 0
    assert [p.name for p in tmp_path.iterdir()] == ["beach.png"]


def test_authors_rgb_bg_mask_works(gen_args, concept_image, session_tmp, tmp_path, repo_root, elite_cli):
    disc = np.asarray(Image.open(session_tmp / "concept_mask.png"))
    Image.fromarray(np.stack([disc] * 3, -1)).save(tmp_path / "concept_bg.png")
    run = elite_cli(
        *gen_args,
        "--image",
        concept_image,
        "--mask",
        tmp_path / "concept_bg.png",
        "--prompt",
        "a S*",
        "--out",
        tmp_path / "o.png",
        cwd=repo_root,
    )
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def bad_files(session_tmp):
    d = session_tmp / "bad"
    d.mkdir(exist_ok=True)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (d / "empty.png").write_bytes(b"")
    Image.new("L", (96, 128), 0).save(d / "black_mask.png")
    return d


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "image file not found"),
        ("broken", "not a readable image"),
        ("empty", "is empty"),
        ("black_mask", "all black"),
        ("no_placeholder", "no placeholder"),
        ("bad_scheduler", "unknown scheduler"),
    ],
)
def test_bad_input_exits_with_one_line(case, match, gen_args, concept_image, bad_files, tmp_path, repo_root):
    image, mask, prompt, extra = concept_image, None, "a S* in the snow", []
    if case == "missing":
        image = tmp_path / "nope.jpg"
    elif case == "broken":
        image = bad_files / "broken.jpg"
    elif case == "empty":
        image = bad_files / "empty.png"
    elif case == "black_mask":
        mask = bad_files / "black_mask.png"
    elif case == "no_placeholder":
        prompt = "a dog in the snow"
    elif case == "bad_scheduler":
        extra = ["--scheduler", "magic"]
    args = [*gen_args, "--image", image, "--prompt", prompt, "--out", tmp_path / "o.png", *extra]
    if mask:
        args += ["--mask", mask]
    run = elite_refused(*args, cwd=repo_root)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "o.png").exists()


def test_params_typo_is_one_line_with_the_closest_key(tmp_path, repo_root):
    text = (repo_root / "params.yaml").read_text().replace("  guidance: 5.0", "  guidence: 5.0")
    (tmp_path / "params.yaml").write_text(text)
    run = elite_refused(
        "--params",
        tmp_path / "params.yaml",
        "generate",
        "--image",
        "x.jpg",
        "--prompt",
        "a S*",
        "--out",
        "o.png",
        cwd=repo_root,
    )
    assert run.returncode == 2
    assert "unknown key generate.guidence; did you mean 'guidance'?" in run.stderr


def test_missing_weights_say_how_to_get_them(gen_args, concept_image, tmp_path, repo_root, elite_cli):
    args = [a if a != gen_args[4] else tmp_path / "none" for a in gen_args]
    run = elite_cli(*args, "--image", concept_image, "--prompt", "a S*", "--out", tmp_path / "o.png", cwd=repo_root)
    assert run.returncode == 2 and "elite prepare-models" in run.stderr and "Traceback" not in run.stderr


def test_several_images_and_two_concepts(gen_args, concept_image, session_tmp, tmp_path, repo_root, elite_cli):
    mask = session_tmp / "concept_mask.png"
    run = elite_cli(
        *gen_args,
        "--image",
        concept_image,
        "--image",
        concept_image,
        "--mask",
        mask,
        "--mask",
        mask,
        "--prompt",
        "a S* on the beach",
        "--out",
        tmp_path / "multi.png",
        cwd=repo_root,
    )
    assert run.returncode == 0, run.stderr
    run = elite_cli(
        *gen_args,
        "--image",
        concept_image,
        "--mask",
        mask,
        "--image2",
        concept_image,
        "--multi-concept",
        "naive",
        "--prompt",
        "a S1* next to a S2* on the beach",
        "--out",
        tmp_path / "two.png",
        cwd=repo_root,
    )
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "two.png") as img:
        assert img.size == (64, 64)


@pytest.mark.parametrize(
    "extra, prompt, match",
    [
        ([], "a S1* on the beach", "but one concept was given"),  # S1* but no second image
        (["--image2", "IMG"], "a S1* next to a S2* and a S3*", "has 3 placeholders for 2 concepts"),
        (["--image2", "IMG"], "a S2* next to a S2*", "has S2* more than once"),
        (["--image2", "IMG"], "a S* on the beach", "has S* but 2 concepts were given"),
        (["--image", "IMG", "--mask", "MASK"], "a S*", "--mask: got 1 masks for 2 --image image(s)"),
        (["--mask2", "MASK"], "a S*", "--mask2: got 1 masks for 0 --image2 image(s)"),
    ],
)
def test_placeholder_and_image_count_errors_exit_2(
    extra, prompt, match, gen_args, concept_image, session_tmp, tmp_path, repo_root
):
    extra = [{"IMG": concept_image, "MASK": session_tmp / "concept_mask.png"}.get(a, a) for a in extra]
    run = elite_refused(
        *gen_args, "--image", concept_image, *extra, "--prompt", prompt, "--out", tmp_path / "o.png", cwd=repo_root
    )
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and match in lines[0], run.stderr
    assert not (tmp_path / "o.png").exists()
