"""The running demo scripted with gradio_client: the same images as `elite generate`, concurrent clients get
their own results, bad input is a message (never a stack trace, the app keeps answering)."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # a line the demo's logger starts

pytestmark = pytest.mark.timeout(600)


def client(url):
    return Client(url, verbose=False)


def predict(c, image, mask, prompt, seed, n=1, lam=0.8, steps=2, scheduler="lms", **extra):
    """The /generate endpoint; `extra` (negative_prompt, randomize_seed, width, height) after the 11 older inputs."""
    from gradio_client import handle_file

    named = ("negative_prompt", "randomize_seed", "width", "height")
    defaults = {"negative_prompt": "", "randomize_seed": False, "width": 64, "height": 64}
    tail = [None, None, *(extra.get(k, defaults[k]) for k in named)] if extra else []
    return c.predict(
        handle_file(str(image)) if image else None,
        handle_file(str(mask)) if mask else None,
        prompt,
        lam,
        seed,
        5.0,
        steps,
        scheduler,
        n,
        *tail,
        api_name="/generate",
    )


def pixels(item) -> np.ndarray:
    return np.asarray(Image.open(item["image"]).convert("RGB"))


def generate(c, image, mask, prompt, seed, n=1, lam=0.8, steps=2, scheduler="lms", **extra):
    return [pixels(item) for item in predict(c, image, mask, prompt, seed, n, lam, steps, scheduler, **extra)]


def cli_generate(elite_cli, repo_root, models, out, prompt, seed, lam, scheduler, images):
    """`elite generate` on the smoke models with the page's settings (2 steps, guidance 5); `images`: its
    --image/--mask/--image2 arguments."""
    weights = ("--weights", models / "elite", "--base", models / "base")
    settings = ("--seed", seed, "--steps", 2, "--lam", lam, "--guidance", 5, "--scheduler", scheduler)
    args = ("--params", repo_root / "params.yaml", "--profile", "smoke", "generate", *images)
    return elite_cli(*map(str, (*args, "--prompt", prompt, "--out", out, *weights, *settings)), cwd=repo_root)


def test_same_images_as_the_cli(demo_url, concept_image, smoke_models, repo_root, tmp_path, elite_cli):
    mask = concept_image.with_name("concept_mask.png")
    images = generate(
        client(demo_url), concept_image, mask, "a S* on the beach", seed=7, n=2, lam=0.6, scheduler="ddim"
    )
    out = tmp_path / "cli.png"
    run = cli_generate(
        elite_cli,
        repo_root,
        smoke_models,
        out,
        "a S* on the beach",
        seed=8,
        lam=0.6,
        scheduler="ddim",
        images=("--image", concept_image, "--mask", mask),
    )
    assert run.returncode == 0, run.stderr
    cli = np.asarray(Image.open(out).convert("RGB"))
    assert len(images) == 2 and images[1].shape == cli.shape
    assert np.array_equal(images[1], cli)  # image i of the page uses seed + i: the CLI's --seed 8
    assert not np.array_equal(images[0], images[1])


def test_two_concepts_same_images_as_the_cli(demo_url, concept_image, smoke_models, repo_root, tmp_path, elite_cli):
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
    run = cli_generate(
        elite_cli,
        repo_root,
        smoke_models,
        cli,
        "a S1* next to a S2*",
        seed=3,
        lam=0.8,
        scheduler="lms",
        images=("--image", concept_image, "--mask", mask, "--image2", concept_image),
    )
    assert run.returncode == 0, run.stderr
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
        ("too_many", "number of images: 9 is above the page's maximum 8"),
        ("long_prompt", "prompt of 10,000 characters has no placeholder"),  # named by its length, not echoed
        ("long_prompt_s", "prompt of 10,005 characters is"),  # over the text encoder's 77 tokens
        ("odd_width", "height and width must be positive multiples of 8, got 64x60"),
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
    elif case.startswith("long_prompt"):
        prompt = "x" * 10_000 + (" a S*" if case == "long_prompt_s" else "")
    c = client(demo_url)
    with pytest.raises(AppError) as err:
        if case == "no_image":
            c.predict(None, None, prompt, 0.8, 0, 5.0, 2, "lms", 1, api_name="/generate")
        else:
            generate(c, image, mask, prompt, seed=0, n=n, **({"width": 60} if case == "odd_width" else {}))
    assert message in str(err.value) and "Traceback" not in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) <= 300


def test_an_abandoned_upload_is_one_line_in_the_log(demo_url, demo_log):
    """A client that closes its connection halfway through an upload (a tab closed, a client timed out): the
    log says so in one line, not with uvicorn's stack trace (seen in CI), and the app goes on."""
    import socket
    import time
    from urllib.parse import urlsplit

    url = urlsplit(demo_url)
    part = b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + b"x" * 100
    head = b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:  # 100 of 100,000 bytes sent
        sock.sendall(head + b"Content-Type: multipart/form-data; boundary=B\r\n\r\n" + part)
        time.sleep(0.5)
    deadline = time.monotonic() + 60
    while "client went away during POST /gradio_api/upload" not in demo_log.read_text():
        assert time.monotonic() < deadline, demo_log.read_text()[-2000:]
        time.sleep(0.2)
    assert "ClientDisconnect" not in demo_log.read_text()
    with urllib.request.urlopen(f"{demo_url}/gradio_api/info", timeout=30) as resp:
        assert resp.status == 200


def test_server_log_has_one_line_per_refused_input(demo_log):
    """After the bad inputs above: each refusal is one line in the server log, and no stack trace."""
    text = demo_log.read_text()
    refusals = [line for line in text.splitlines() if "elite.demo: refused (generate)" in line]
    assert any("has no placeholder" in line for line in refusals)
    assert any("prompt of 10,000 characters" in line for line in refusals)
    assert all(len(line) < 400 for line in refusals)
    if "Traceback" in text:  # the line before it and the traceback's end (its exception), not its middle frames
        start = text.index("Traceback")
        block = list(itertools.takewhile(lambda line: not LOG_LINE.match(line), text[start:].splitlines()[1:]))
        raise AssertionError("\n".join([*text[:start].splitlines()[-1:], "Traceback ...", *block[-30:]])[:4000])


def test_negative_prompt_size_and_randomized_seed(demo_url, concept_image, smoke_pipeline):
    """The new inputs: a negative prompt and an output size give the pipeline's image for them; a randomized
    seed is a fresh seed per call, written under each image, and that seed gives the same image again."""
    import torch

    mask = concept_image.with_name("concept_mask.png")
    c = client(demo_url)
    out = predict(c, concept_image, mask, "a S* on the beach", 5, negative_prompt="blurry", width=48, height=80)
    assert out[0]["caption"] == "seed 5"
    concept = smoke_pipeline.encode_concept(concept_image, mask)
    direct = smoke_pipeline(
        "a S* on the beach",
        concept=concept,
        lam=0.8,
        num_inference_steps=2,
        guidance_scale=5.0,
        negative_prompt="blurry",
        width=48,
        height=80,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert pixels(out[0]).shape == (80, 48, 3)
    assert np.array_equal(pixels(out[0]), np.asarray(direct))
    plain = generate(c, concept_image, mask, "a S* on the beach", 5, width=48, height=80)[0]
    assert not np.array_equal(plain, pixels(out[0]))  # the negative prompt matters

    randomized = [predict(c, concept_image, None, "a S*", 0, n=2, randomize_seed=True) for _ in range(2)]
    seeds = [int(out[0]["caption"].removeprefix("seed ")) for out in randomized]
    assert seeds[0] != seeds[1] and 0 not in seeds
    assert randomized[0][1]["caption"] == f"seed {seeds[0] + 1}"  # image i: the drawn seed + i
    again = predict(c, concept_image, None, "a S*", seeds[0])[0]  # the seed shown gives the same image again
    assert again["caption"] == f"seed {seeds[0]}" and np.array_equal(pixels(again), pixels(randomized[0][0]))


def test_a_mask_of_another_size_is_resized_and_said(demo_url, concept_image, tmp_path):
    small = tmp_path / "small_mask.png"
    Image.open(concept_image.with_name("concept_mask.png")).resize((48, 64), Image.NEAREST).save(small)
    out = predict(client(demo_url), concept_image, small, "a S*", 3, n=2)
    assert [item["caption"] for item in out] == [f"seed {s}; mask 48x64 resized to the image's 96x128" for s in (3, 4)]


def test_page_lists_the_examples_and_one_endpoint(demo_url):
    with urllib.request.urlopen(f"{demo_url}/config", timeout=30) as resp:
        config = json.loads(resp.read())
    assert "disc.png" in json.dumps(config) and "a S* in the snow" in json.dumps(config)
    assert list(client(demo_url).view_api(print_info=False, return_format="dict")["named_endpoints"]) == ["/generate"]


def test_all_interfaces_with_a_login(repo_root, smoke_models, concept_image, servers, tmp_path):
    """`elite demo --host 0.0.0.0 --auth-file F`: the API and the page ask for a login; with one they work."""
    from browser import chrome, screenshot
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from elite.demo.auth import AUTH_ENV

    free_port, server = servers
    logins = tmp_path / "logins"
    logins.write_text("ann:correct-horse\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(Path(sys.executable).parent / "elite"),
        "--params",
        str(repo_root / "params.yaml"),
        "--profile",
        "smoke",
        "demo",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--weights",
        str(smoke_models / "elite"),
        "--base",
        str(smoke_models / "base"),
        "--auth-file",
        str(logins),
    ]
    env = {k: v for k, v in os.environ.items() if k != AUTH_ENV}
    env.update(OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    with server(cmd, f"{url}/", tmp_path / "demo.log", env=env, timeout=240):
        assert "1 login" in (tmp_path / "demo.log").read_text()
        with urllib.request.urlopen(f"{url}/", timeout=30) as resp:  # the login page: its config has no components
            assert '"auth_required":true' in resp.read().decode().replace(" ", "")
        for path in ("/config", "/gradio_api/info"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + path, timeout=30)
            assert err.value.code == 401
        for auth in (None, ("ann", "wrong")):
            with pytest.raises(Exception, match="(?i)auth|login|credentials|401"):
                client(url) if auth is None else Client(url, auth=auth, verbose=False)
        logged_in = Client(url, auth=("ann", "correct-horse"), verbose=False)
        out = predict(logged_in, concept_image, None, "a S* on the beach", 1)
        assert out[0]["caption"] == "seed 1" and pixels(out[0]).shape == (64, 64, 3)

        with chrome() as driver:
            driver.get(url)
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
            driver.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("ann")
            driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("correct-horse")
            screenshot(driver, "demo-login")
            driver.find_element(By.XPATH, "//button[contains(., 'Login')]").click()
            status = wait.until(lambda d: d.find_element(By.ID, "model-status"))
            assert str(smoke_models / "elite") in status.text
