"""The demo page in a real headless Chromium: upload, click the object, see the mask overlay, generate, read the
result back; bad input gets a message in the page. Screenshots go to tests/artifacts/demo-*.png."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
from browser import chrome, screenshot
from PIL import Image

pytestmark = pytest.mark.timeout(600)


def fetch_image(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return Image.open(io.BytesIO(resp.read())).convert("RGB")


def output_size(models) -> tuple[int, int]:
    unet = json.loads((models / "base" / "unet" / "config.json").read_text())
    vae = json.loads((models / "base" / "vae" / "config.json").read_text())
    side = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    return side, side


def test_upload_click_mask_generate(demo_url, concept_image, smoke_models, bad_files):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chrome() as driver:
        wait = WebDriverWait(driver, 120)
        css = lambda sel: driver.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        driver.get(demo_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#concept input[type=file]")))
        assert "elite-demo@champion" in css("#model-status").text

        # a file that is not an image: refused with a message, the page goes on
        css("#concept input[type=file]").send_keys(str(bad_files["not_image"]))
        wait.until(lambda d: "Upload refused" in d.find_element(By.ID, "mask-status").text)
        assert "not a readable image" in css("#mask-status").text
        screenshot(driver, "demo-bad-upload")

        # the concept image, then a click on the disc: SAM's mask is drawn over the view
        css("#concept input[type=file]").send_keys(str(concept_image))
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#view img")
                and "whole image" in d.find_element(By.ID, "mask-status").text
            )
        )
        view = css("#view img")
        plain = view.get_attribute("src")
        before = fetch_image(plain)
        assert before.size == (96 * 3, 128 * 3)  # a small image is enlarged to be clicked
        ActionChains(driver).move_to_element_with_offset(view, 0, 0).click().perform()  # the centre: on the disc
        wait.until(lambda d: "SAM from 1 click" in d.find_element(By.ID, "mask-status").text)
        wait.until(
            lambda d: any(e.get_attribute("src") != plain for e in d.find_elements(By.CSS_SELECTOR, "#view img"))
        )
        after = fetch_image(css("#view img").get_attribute("src"))
        mask_link = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#mask a[href*='mask-']"))
        mask = np.asarray(fetch_image(mask_link.get_attribute("href")).convert("L")) > 127
        assert mask.shape == (128, 96) and mask.any()
        shown = np.repeat(np.repeat(mask, 3, 0), 3, 1)  # the mask at the view's scale
        changed = np.abs(np.asarray(after, np.int16) - np.asarray(before, np.int16)).sum(axis=2) > 30
        assert changed[shown].mean() > 0.9  # the overlay covers the mask ...
        assert changed[~shown].mean() < 0.05  # ... and little else (the click's dot, the outline)
        screenshot(driver, "demo-mask")

        # touch it up with the brush: a blue stroke across the disc adds to the mask
        driver.find_element(By.XPATH, "//button[contains(., 'Touch up the mask')]").click()
        wait.until(ec.element_to_be_clickable((By.ID, "edit"))).click()
        canvas = wait.until(lambda d: (d.find_elements(By.CSS_SELECTOR, "#painter canvas") or [False])[-1])
        driver.execute_script("arguments[0].scrollIntoView()", canvas)
        css("#painter button[aria-label='Brush']").click()
        ActionChains(driver).move_to_element_with_offset(canvas, -40, 0).click_and_hold().move_by_offset(
            80, 0
        ).move_by_offset(0, 20).move_by_offset(-80, 0).release().perform()
        css("#use-painted").click()
        wait.until(lambda d: "painted" in d.find_element(By.ID, "mask-status").text)
        share = int(css("#mask-status").text.split(", ")[-1].split("%")[0])
        assert share > mask.mean() * 100 + 2  # the stroke was added
        screenshot(driver, "demo-painted")

        # a prompt without S*: a message, no result
        prompt = css("#prompt textarea")
        prompt.clear()
        prompt.send_keys("a dog on the beach")
        css("#generate").click()
        wait.until(lambda d: "has no placeholder" in d.find_element(By.TAG_NAME, "body").text)
        screenshot(driver, "demo-bad-prompt")

        # generate (150 steps, the most the page allows, so that the progress stays on screen long enough to be read
        # on an idle machine too): one image of the model's output size in the gallery
        prompt.clear()
        prompt.send_keys("a S* on the beach")
        driver.find_element(By.XPATH, "//button[contains(., 'Sampler')]").click()
        steps = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#steps input[type=number]")))
        steps.send_keys(Keys.CONTROL, "a")
        steps.send_keys("150", Keys.TAB)
        driver.execute_script("arguments[0].click()", css("#generate"))  # the error toast may lie over the button
        WebDriverWait(driver, 120, poll_frequency=0.1).until(  # the sampler's progress bar, e.g. "7/30 steps"
            lambda d: all(w in d.find_element(By.ID, "gallery").text for w in ("image 1 of 1", "sampling", "/150"))
        )
        driver.execute_script("arguments[0].scrollIntoView()", css("#gallery"))
        screenshot(driver, "demo-progress")
        result = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#gallery img[src*='gradio_api/file']"))
        image = fetch_image(result.get_attribute("src"))
        assert image.size == output_size(smoke_models)
        assert np.asarray(image).std() > 0
        screenshot(driver, "demo-result")


PASTE = """
const [b64, done] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const item = new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})});
navigator.clipboard.write([item]).then(() => done("copied"), (err) => done(String(err)));
"""
DROP = """
const [b64, name, target] = arguments;
const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: "image/png"}));
for (const type of ["dragenter", "dragover", "drop"]) {
  target.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
}
"""


def set_number(driver, elem_id: str, value) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def captions(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#gallery .caption-label") if e.text]


def test_drop_examples_settings_progress_queue_and_cancel(demo_url, concept_image, tmp_path):
    """The controls a user of image-customisation demos expects: drop the concept image, pick an example by its
    thumbnail, negative prompt, randomized seed (shown under each image), size, steps, number of images; the
    progress (image k of n, sampler steps) and the queue position in the page; Cancel stops a generation."""
    import base64

    from gradio_client import Client, handle_file
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chrome() as driver:
        wait = WebDriverWait(driver, 120)
        fast = WebDriverWait(driver, 120, poll_frequency=0.1)
        css = lambda sel: driver.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        text = lambda elem_id: driver.find_element(By.ID, elem_id).text  # noqa: E731
        driver.get(demo_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#concept input[type=file]")))

        # the examples are thumbnails of their concept images; a click loads image, mask and prompt
        thumb = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#examples img[src*='disc.png']"))
        assert thumb.size["width"] > 20
        thumb.click()
        wait.until(lambda d: "the example's mask" in text("mask-status"))
        assert css("#prompt textarea").get_attribute("value") == "a S* in the snow"
        assert css("#concept img").get_attribute("src")
        screenshot(driver, "demo-example")

        # an image dropped on the concept box is uploaded like a chosen file (a new concept: no mask yet)
        png = tmp_path / "dropped.png"
        Image.open(concept_image).transpose(Image.FLIP_LEFT_RIGHT).save(png)
        driver.execute_script(DROP, base64.b64encode(png.read_bytes()).decode(), png.name, css("#concept img"))
        wait.until(lambda d: "click on the object to mask it" in text("mask-status"))
        assert "dropped" in css("#concept img").get_attribute("src")

        # an image on the clipboard, pasted with the box's "Paste from clipboard" button
        driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": demo_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        assert driver.execute_async_script(PASTE, base64.b64encode(png.read_bytes()).decode()) == "copied"
        css("#concept button[aria-label='Paste from clipboard']").click()
        wait.until(lambda d: "clipboard" in (css("#concept img").get_attribute("src") or ""))
        wait.until(lambda d: "click on the object to mask it" in text("mask-status"))
        ActionChains(driver).move_to_element_with_offset(css("#view img"), 0, 0).click().perform()
        wait.until(lambda d: "SAM from 1 click" in text("mask-status"))

        # settings: negative prompt, randomized seed, 48x80, 30 steps, two images
        css("#negative textarea").send_keys("blurry, low quality")
        driver.find_element(By.XPATH, "//button[contains(., 'Sampler')]").click()
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#randomize input"))).click()
        for elem_id, value in (("width", 48), ("height", 80), ("steps", 30), ("num", 2)):
            set_number(driver, elem_id, value)
        css("#generate").click()
        progress = fast.until(lambda d: "image 1 of 2" in text("gallery") and "steps" in text("gallery"))
        assert progress and css("#gallery .progress-text, #gallery .meta-text").is_displayed()
        driver.execute_script("arguments[0].scrollIntoView()", css("#gallery"))
        screenshot(driver, "demo-progress-2")
        wait.until(lambda d: len(captions(d)) == 2)
        seeds = [int(c.removeprefix("seed ")) for c in captions(driver)]
        assert seeds[1] == seeds[0] + 1 and seeds[0] != 42  # drawn at random, not the seed box's value
        shown = driver.find_elements(By.CSS_SELECTOR, "#gallery img[src*='gradio_api/file']")
        assert {fetch_image(e.get_attribute("src")).size for e in shown} == {(48, 80)}
        screenshot(driver, "demo-page", full_page=True)  # docs/demo.png

        # queue position: while another client's long generation runs, this page waits and says where it is
        other = Client(demo_url, verbose=False)
        job = other.submit(
            handle_file(str(concept_image)), None, "a S*", 0.8, 0, 5.0, 150, "lms", 8, api_name="/generate"
        )
        fast.until(lambda d: job.status().code.name in ("PROCESSING", "PROGRESS", "ITERATING"))
        set_number(driver, "num", 1)
        css("#generate").click()
        fast.until(lambda d: "queue" in text("gallery").lower())
        screenshot(driver, "demo-queue")
        job.cancel()
        wait.until(lambda d: len(captions(d)) == 1)  # this page's turn came: its one image

        # Cancel: a long generation stops (after the image in progress); the page then generates again
        for elem_id, value in (("steps", 150), ("num", 8)):
            set_number(driver, elem_id, value)
        css("#generate").click()
        fast.until(lambda d: "of 8" in text("gallery"))
        css("#cancel").click()
        wait.until(lambda d: "of 8" not in text("gallery"))
        assert len(captions(driver)) < 8
        for elem_id, value in (("steps", 2), ("num", 1)):
            set_number(driver, elem_id, value)
        before = set(captions(driver))
        css("#generate").click()
        wait.until(lambda d: len(captions(d)) == 1 and set(captions(d)) != before)
