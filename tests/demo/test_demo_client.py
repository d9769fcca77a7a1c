"""The running demo scripted with gradio_client: the same images as `elite generate`, concurrent clients get
their own results, bad input is a message (never a stack trace, the app keeps answering)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from elite.cli import main as elite_main

pytestmark = pytest.mark.timeout(600)


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def generate(c, image, mask, prompt, seed, n=1, lam=0.8, steps=2, scheduler="lms"):
    from gradio_client import handle_file

    out = c.predict(
        handle_file(str(image)),
        handle_file(str(mask)) if mask else None,
        prompt,
        lam,
        seed,
        5.0,
        steps,
        scheduler,
        n,
        api_name="/generate",
    )
    return [np.asarray(Image.open(item["image"]).convert("RGB")) for item in out]


def test_same_images_as_the_cli(demo_url, concept_image, smoke_models, repo_root, tmp_path):
    mask = concept_image.with_name("concept_mask.png")
    images = generate(
        client(demo_url), concept_image, mask, "a S* on the beach", seed=7, n=2, lam=0.6, scheduler="ddim"
    )
    out = tmp_path / "cli.png"
    assert (
        elite_main(
            [
                "--params",
                str(repo_root / "params.yaml"),
                "--profile",
                "smoke",
                "generate",
                "--image",
                str(concept_image),
                "--mask",
                str(mask),
                "--prompt",
                "a S* on the beach",
                "--out",
                str(out),
                "--weights",
                str(smoke_models / "elite"),
                "--base",
                str(smoke_models / "base"),
                "--seed",
                "8",
                "--steps",
                "2",
                "--lam",
                "0.6",
                "--guidance",
                "5",
                "--scheduler",
                "ddim",
            ]
        )
        == 0
    )
    cli = np.asarray(Image.open(out).convert("RGB"))
    assert len(images) == 2 and images[1].shape == cli.shape
    assert np.array_equal(images[1], cli)  # image i of the page uses seed + i: the CLI's --seed 8
    assert not np.array_equal(images[0], images[1])


def test_two_concepts_same_images_as_the_cli(demo_url, concept_image, smoke_models, repo_root, tmp_path):
    """A second concept image (S1* and S2*): the page answers what `elite generate --image2` answers; a prompt
    with S* beside two concept images is a message."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    mask = concept_image.with_name("concept_mask.png")
    c = client(demo_url)
    out = c.predict(
        handle_file(str(concept_image)),
        handle_file(str(mask)),
        "a S1* next to a S2*",
        0.8,
        3,
        5.0,
        2,
        "lms",
        1,
        handle_file(str(concept_image)),
        None,
        api_name="/generate",
    )
    page = np.asarray(Image.open(out[0]["image"]).convert("RGB"))
    cli = tmp_path / "two.png"
    assert (
        elite_main(
            [
                "--params",
                str(repo_root / "params.yaml"),
                "--profile",
                "smoke",
                "generate",
                "--image",
                str(concept_image),
                "--mask",
                str(mask),
                "--image2",
                str(concept_image),
                "--prompt",
                "a S1* next to a S2*",
                "--out",
                str(cli),
                "--weights",
                str(smoke_models / "elite"),
                "--base",
                str(smoke_models / "base"),
                "--seed",
                "3",
                "--steps",
                "2",
                "--lam",
                "0.8",
                "--guidance",
                "5",
                "--scheduler",
                "lms",
            ]
        )
        == 0
    )
    assert np.array_equal(page, np.asarray(Image.open(cli).convert("RGB")))
    with pytest.raises(AppError) as err:
        c.predict(
            handle_file(str(concept_image)),
            None,
            "a S* on the beach",
            0.8,
            3,
            5.0,
            2,
            "lms",
            1,
            handle_file(str(concept_image)),
            None,
            api_name="/generate",
        )
    assert "has S* but 2 concepts were given" in str(err.value)


def test_two_clients_at_once_get_their_own_results(demo_url, concept_image):
    requests = {"a": ("a S* on the beach", 1), "b": ("a S* in the snow", 2)}
    results, errors = {}, []

    def run(key):
        try:
            prompt, seed = requests[key]
            results[key] = generate(client(demo_url), concept_image, None, prompt, seed)[0]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and set(results) == {"a", "b"}
    assert not np.array_equal(results["a"], results["b"])
    one = client(demo_url)  # the same requests one after the other: the same images
    for key, (prompt, seed) in requests.items():
        assert np.array_equal(generate(one, concept_image, None, prompt, seed)[0], results[key])


@pytest.mark.parametrize(
    "case,message",
    [
        ("two_placeholders", "placeholder"),
        ("no_placeholder", "has no placeholder"),
        ("not_image", "concept image: not a readable image"),
        ("huge", "pixel limit"),
        ("black_mask", "mask is all black"),
        ("no_image", "upload a concept image first"),
        ("too_many", "greater than maximum value 8"),  # gradio checks the slider's range
    ],
)
def test_bad_input_is_a_message(demo_url, concept_image, bad_files, case, message):
    from gradio_client.exceptions import AppError

    image, mask, prompt, n = concept_image, None, "a S* on the beach", 1
    if case == "two_placeholders":
        prompt = "a S* next to a S*"
    elif case == "no_placeholder":
        prompt = "a dog on the beach"
    elif case in ("not_image", "huge"):
        image = bad_files[case]
    elif case == "black_mask":
        mask = bad_files["black_mask"]
    elif case == "too_many":
        n = 9
    c = client(demo_url)
    with pytest.raises(AppError) as err:
        if case == "no_image":
            c.predict(None, None, prompt, 0.8, 0, 5.0, 2, "lms", 1, api_name="/generate")
        else:
            generate(c, image, mask, prompt, seed=0, n=n)
    assert message in str(err.value) and "Traceback" not in str(err.value)


def test_page_lists_the_examples_and_one_endpoint(demo_url):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{demo_url}/config", timeout=30) as resp:
        config = json.loads(resp.read())
    assert "disc.png" in json.dumps(config) and "a S* in the snow" in json.dumps(config)
    assert list(client(demo_url).view_api(print_info=False, return_format="dict")["named_endpoints"]) == ["/generate"]
