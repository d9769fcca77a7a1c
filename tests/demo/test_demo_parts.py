"""The demo's parts in this process: SAM clicks and boxes, clicks outside the image, refused masks, a registry
without the champion (the page opens and says how to make one), and `--mask auto` in the CLI and the API."""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from browser import chrome, screenshot
from PIL import Image

from elite.demo.app import Demo, launch
from elite.demo.model import Defaults, DemoModel
from elite.demo.segment import Prompts, Segmenter, to_image_pixels
from elite.errors import EliteError

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo(params, smoke_models):
    gen = params.generate
    defaults = Defaults(gen.lam, 2, gen.guidance, gen.seed, gen.scheduler, gen.allow_bare_s)
    return Demo(None, defaults, Segmenter(smoke_models / "sam", params.mask), [], load_error="no model in this test")


def click(x, y):
    return gr.SelectData(None, {"index": [x, y], "value": None})


def test_clicks_and_a_box_make_sam_masks(demo, concept_image):
    path = str(concept_image)
    view, mask_path, prompts, status = demo.on_click(path, Prompts(), "object click (+)", click(48 * 3, 64 * 3))
    assert prompts.points == [(48, 64, 1)]  # view pixels -> image pixels (the view is 3x)
    assert view.size == (96 * 3, 128 * 3) and "SAM from 1 click" in status
    mask = np.asarray(Image.open(mask_path)) > 0
    assert mask.shape == (128, 96) and mask.any()
    # a box: the first corner waits for the second, then SAM masks the box
    _, skipped, prompts, status = demo.on_click(path, Prompts(), "box: two corner clicks", click(30, 60))
    assert prompts.corner == (10, 20) and "opposite corner" in status and skipped == gr.skip()
    _, mask_path, prompts, status = demo.on_click(path, prompts, "box: two corner clicks", click(240, 330))
    assert prompts.box == (10, 20, 80, 110) and "a box" in status and mask_path


def test_click_outside_the_image_is_a_message(demo, concept_image):
    with pytest.raises(EliteError, match=r"outside the image \(96x128\)"):
        to_image_pixels([96 * 3 + 5, 10], (96, 128))
    with pytest.warns(UserWarning, match=r"the click \(133, 3\) is outside the image"):
        assert demo.on_click(str(concept_image), Prompts(), "object click (+)", click(400, 10)) == (gr.skip(),) * 4
    with pytest.warns(UserWarning, match="upload a concept image first"):
        assert demo.on_click(None, Prompts(), "object click (+)", click(4, 4)) == (gr.skip(),) * 4


def test_refused_masks_and_images(demo, concept_image, bad_files):
    with pytest.warns(UserWarning, match="mask: mask is all black"):  # gr.Warning: a message in the page
        view, mask, _, status = demo.on_mask_upload(str(concept_image), str(bad_files["black_mask"]))
    assert mask is None and "Mask refused:** mask: mask is all black" in status
    with pytest.warns(UserWarning, match="concept image: image is 10001x10001, over the 100,000,000-pixel limit"):
        _, view, _, _, status = demo.on_concept(str(bad_files["huge"]))
    assert view is None and "Upload refused" in status
    view, mask, _, status = demo.on_mask_upload(str(concept_image), str(concept_image.with_name("concept_mask.png")))
    assert mask == gr.skip() and "uploaded" in status


def test_no_champion_the_page_says_how_to_make_one(champion):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for uri in (f"models:/{champion}@no-such-alias", "models:/no-such-model@champion"):
        with pytest.raises(EliteError, match="Make one with `make run`") as err:
            DemoModel.from_registry(uri)
    message = str(err.value)
    page = Demo(None, Defaults(0.8, 2, 5.0, 0, "lms", False), None, [], load_error=message)
    app = launch(page, "127.0.0.1", None, prevent_thread_lock=True)  # gradio picks a free port
    url = app.local_url
    try:
        with chrome() as driver:
            driver.get(url)
            status = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "model-status"))
            assert "No model loaded" in status.text and "make run" in status.text
            screenshot(driver, "demo-no-champion")
        with pytest.raises(AppError, match="make run"):
            Client(url, verbose=False).predict(None, None, "a S*", 0.8, 0, 5.0, 2, "lms", 1, api_name="/generate")
    finally:
        app.close()


def test_mask_auto_in_the_cli_and_the_api(
    repo_root, smoke_models, smoke_pipeline, concept_image, tmp_path, elite_cli, monkeypatch
):
    """`elite generate --mask auto` and `encode_concept(mask="auto")` use SAM's most-salient-object rule and agree."""
    from elite.automask import auto_mask
    from elite.data.masking import concept_mask
    from elite.data.sam import BoxMasker, load_sam

    (tmp_path / "models").mkdir()
    os.symlink(smoke_models, tmp_path / "models" / "pretrained")  # params models.dir = models/pretrained
    os.symlink(repo_root / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    from elite.config import load_params

    cfg = load_params("params.yaml", "smoke").mask
    image = Image.open(concept_image).convert("RGB")
    expected, _, _ = concept_mask(
        BoxMasker(load_sam(smoke_models / "sam", "cpu"), cfg.multimask), np.asarray(image), cfg
    )
    assert np.array_equal(np.asarray(auto_mask(image, smoke_models / "sam", cfg)) > 0, expected)

    run = elite_cli(
        "--profile",
        "smoke",
        "generate",
        "--image",
        str(concept_image),
        "--mask",
        "auto",
        "--prompt",
        "a S*",
        "--out",
        "auto.png",
        "--weights",
        str(smoke_models / "elite"),
        "--base",
        str(smoke_models / "base"),
        "--steps",
        "2",
        "--seed",
        "5",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "mask: SAM, most salient object" in run.stderr
    concept = smoke_pipeline.encode_concept(concept_image, mask="auto")
    api = smoke_pipeline(
        "a S*",
        concept=concept,
        lam=load_params("params.yaml", "smoke").generate.lam,
        num_inference_steps=2,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert np.array_equal(np.asarray(api), np.asarray(Image.open(Path("auto.png")).convert("RGB")))


def test_weights_folder_model_reports_progress_and_matches_the_pipeline(
    params, smoke_models, smoke_pipeline, concept_image
):
    """`elite demo --weights DIR`: the folder in the registered model's code (ElitePyfunc); one progress report
    per image; image i is the pipeline's image for seed + i."""
    mask = concept_image.with_name("concept_mask.png")
    model = DemoModel.from_weights(smoke_models / "elite", smoke_models / "base", params)
    reports = []
    images = model.generate(
        image=concept_image,
        mask=mask,
        prompt="a S* on the beach",
        lam=0.6,
        steps=2,
        guidance=5.0,
        seed=11,
        scheduler="ddim",
        num_images=2,
        progress=lambda done, desc: reports.append((done, desc)),
    )
    assert reports == [((0, 2), "image 1 of 2"), ((1, 2), "image 2 of 2")]
    concept = smoke_pipeline.encode_concept(concept_image, mask)
    direct = smoke_pipeline(
        "a S* on the beach",
        concept=concept,
        lam=0.6,
        num_inference_steps=2,
        guidance_scale=5.0,
        scheduler="ddim",
        generator=torch.Generator().manual_seed(12),
    ).images[0]
    assert np.array_equal(np.asarray(images[1].convert("RGB")), np.asarray(direct))


def test_brush_strokes_add_and_remove(demo, concept_image):
    """The brush editor: blue strokes add to the mask in use, black strokes remove from it (view -> image pixels)."""
    mask_path = str(concept_image.with_name("concept_mask.png"))
    value = demo.on_edit(str(concept_image), mask_path)
    assert value["background"].size == (96 * 3, 128 * 3) and value["layers"] == []
    layer = np.zeros((128 * 3, 96 * 3, 4), np.uint8)
    layer[0:30, 0:60] = (30, 144, 255, 255)  # blue: add the top-left corner (10x20 image pixels)
    layer[180:210, 120:165] = (0, 0, 0, 255)  # black: cut a hole in the disc (15x10 image pixels)
    view, painted, prompts, status = demo.on_painted(
        str(concept_image), mask_path, {**value, "layers": [Image.fromarray(layer)]}
    )
    before = np.asarray(Image.open(mask_path)) > 127
    after = np.asarray(Image.open(painted)) > 127
    assert after[:10, :20].all() and not after[60:70, 40:55].any() and before[60:70, 40:55].all()
    changed = before != after
    changed[:10, :20] = changed[60:70, 40:55] = False
    assert not changed.any() and "painted" in status
    with pytest.warns(UserWarning, match="nothing painted"):
        assert demo.on_painted(str(concept_image), mask_path, value) == (gr.skip(),) * 4


def test_logins_from_flags_file_and_environment(tmp_path):
    from elite.demo.auth import AUTH_ENV, check_exposure, credentials, is_loopback

    logins = tmp_path / "logins"
    logins.write_text("# operators\nann:pass:with:colons\n\nbob:secret\n")
    env = {AUTH_ENV: "cy:pw1, dee:pw2"}
    assert credentials(["al:x"], logins, env) == [
        ("al", "x"),
        ("ann", "pass:with:colons"),
        ("bob", "secret"),
        ("cy", "pw1"),
        ("dee", "pw2"),
    ]
    assert credentials(None, None, {}) == []
    for pairs, file, environ, message in (
        (["nopassword"], None, {}, "--auth: expected USER:PASSWORD"),
        ([":pw"], None, {}, "--auth: expected USER:PASSWORD"),
        (None, tmp_path / "missing", {}, "auth file not found"),
        (None, None, {AUTH_ENV: "user:"}, f"{AUTH_ENV}: expected USER:PASSWORD"),
    ):
        with pytest.raises(EliteError, match=message):
            credentials(pairs, file, environ)
    (tmp_path / "bad").write_text("ok:fine\nbroken\n")
    with pytest.raises(EliteError, match="bad, line 2: expected USER:PASSWORD"):
        credentials(None, tmp_path / "bad", {})

    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.5", "demo.example.org")))
    check_exposure("127.0.0.1", [], insecure=False)
    check_exposure("0.0.0.0", [("a", "b")], insecure=False)
    check_exposure("0.0.0.0", [], insecure=True)
    with pytest.raises(EliteError, match=r"--host 0.0.0.0 opens the demo to the network: give logins with --auth"):
        check_exposure("0.0.0.0", [], insecure=False)


def test_demo_on_all_interfaces_without_a_login_does_not_start(repo_root, elite_cli, monkeypatch):
    """`elite demo --host 0.0.0.0` without --auth: one line and exit 2, before any model is loaded."""
    from elite.demo.auth import AUTH_ENV

    monkeypatch.delenv(AUTH_ENV, raising=False)
    args = ["--params", str(repo_root / "params.yaml"), "--profile", "smoke", "demo", "--port", "7999"]
    open_ = elite_cli(*args, "--host", "0.0.0.0", cwd=repo_root)
    assert open_.returncode == 2
    err = open_.stderr
    assert err.count("\n") == 1 and "error: --host 0.0.0.0 opens the demo to the network" in err
    assert "loading" not in err
    bad = elite_cli(*args, "--host", "0.0.0.0", "--auth", "no-colon", cwd=repo_root)
    assert bad.returncode == 2
    assert bad.stderr == "error: --auth: expected USER:PASSWORD (both non-empty)\n"


def test_short_messages():
    from elite.demo.app import MESSAGE_CHARS, one_line
    from elite.placeholders import find_placeholders

    long = "a dog " * 2000
    with pytest.raises(EliteError) as err:
        find_placeholders(long)
    assert str(err.value) == "prompt of 12,000 characters has no placeholder: write 'S*' where the concept goes"
    with pytest.raises(EliteError, match=r"prompt 'a dog' has no placeholder"):
        find_placeholders("a dog")
    cut = one_line("first line " + "x" * 1000 + "\nsecond line")
    assert len(cut) == MESSAGE_CHARS and cut.startswith("first line") and cut.endswith("\u2026")
