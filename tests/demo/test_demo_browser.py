"""The demo page in a real headless Chromium: upload, click the object, see the mask overlay, generate, read the
result back; bad input gets a message in the page. Screenshots go to tests/artifacts/demo-*.png.

The page re-renders while a generation runs (progress, gallery) and a loaded machine is slow to apply
keystrokes: every read of the page is one look taken again at each poll of a WebDriverWait (an element that the
page replaced meanwhile is looked up again), and every typed value is read back before Generate is clicked."""

from __future__ import annotations

import io
import json
import re
import urllib.request

import numpy as np
import pytest
from browser import chrome, screenshot
from PIL import Image
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.timeout(600)

GONE = (NoSuchElementException, StaleElementReferenceException)  # the page replaced the element: look again


def fetch_image(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return Image.open(io.BytesIO(resp.read())).convert("RGB")


def output_size(models) -> tuple[int, int]:
    unet = json.loads((models / "base" / "unet" / "config.json").read_text())
    vae = json.loads((models / "base" / "vae" / "config.json").read_text())
    side = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
    return side, side


def waiter(driver, timeout: float = 120, poll: float = 0.1) -> WebDriverWait:
    """A wait whose condition is tried again when the page replaced an element during the look."""
    return WebDriverWait(driver, timeout, poll_frequency=poll, ignored_exceptions=GONE)


def text_of(driver, elem_id: str) -> str | None:
    """The visible text of an element (selenium's .text: hidden parts left out), in one look; None while the page
    replaces it."""
    try:
        return driver.find_element(By.ID, elem_id).text
    except GONE:
        return None


def captions(driver) -> list[str] | None:
    """The gallery's captions, in one look; None while the page replaces the gallery."""
    try:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#gallery .caption-label") if e.text]
    except StaleElementReferenceException:
        return None


def gallery_images(driver) -> list[str] | None:
    """The addresses of the gallery's images, in one look; None while the page replaces the gallery."""
    try:
        return [
            e.get_attribute("src")
            for e in driver.find_elements(By.CSS_SELECTOR, "#gallery img[src*='gradio_api/file']")
        ]
    except StaleElementReferenceException:
        return None


def until_progress(driver, *patterns: str, timeout: float = 120) -> str:
    """Wait (polling every 0.1 s) until one look at the gallery's text finds all `patterns` at once; returns that
    text. On a timeout the test fails with the last text seen, so that a slow machine can be told from a page
    that shows something else."""
    seen: list[str] = []

    def look(d) -> str | bool:
        text = text_of(d, "gallery")
        if text is None:
            return False
        seen[:] = [text]
        return text if all(re.search(p, text) for p in patterns) else False

    try:
        return waiter(driver, timeout).until(look)
    except TimeoutException:
        pytest.fail(f"gallery without {patterns} after {timeout} s; last seen: {seen[0] if seen else None!r}")


def fill(driver, values: dict[str, object], timeout: float = 120) -> None:
    """Type each value into its box (CSS selector -> value), then read them all back: done when one look finds
    every box holding its value (a keystroke lost, or a box reset by a re-render, is typed again)."""

    def typed(d, selector: str, value) -> bool:  # True when the box already held the value
        box = d.find_element(By.CSS_SELECTOR, selector)
        if box.get_attribute("value") == str(value):
            return True
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(str(value), Keys.TAB)
        return False

    waiter(driver, timeout, poll=0.5).until(lambda d: all([typed(d, s, v) for s, v in values.items()]))


def numbers(**values) -> dict[str, object]:
    """The number boxes of the page's sliders, by element id."""
    return {f"#{elem_id} input[type=number]": value for elem_id, value in values.items()}


def click(driver, selector: str) -> None:
    """A button clicked through the page's script (an error toast may lie over it, and a click that lands on the
    toast never reaches the button)."""
    driver.execute_script("arguments[0].click()", driver.find_element(By.CSS_SELECTOR, selector))


def test_upload_click_mask_generate(demo_url, concept_image, smoke_models, bad_files):
    with chrome() as driver:
        wait = waiter(driver, poll=0.5)
        css = lambda sel: driver.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        driver.get(demo_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#concept input[type=file]")))
        assert "elite-demo@champion" in css("#model-status").text

        # a file that is not an image: refused with a message, the page goes on
        css("#concept input[type=file]").send_keys(str(bad_files["not_image"]))
        status = wait.until(lambda d: (t := text_of(d, "mask-status")) and "Upload refused" in t and t)
        assert "not a readable image" in status
        screenshot(driver, "demo-bad-upload")

        # the concept image, then a click on the disc: SAM's mask is drawn over the view
        css("#concept input[type=file]").send_keys(str(concept_image))
        plain = wait.until(
            lambda d: (
                "whole image" in (text_of(d, "mask-status") or "")
                and d.find_element(By.CSS_SELECTOR, "#view img").get_attribute("src")
            )
        )
        before = fetch_image(plain)
        assert before.size == (96 * 3, 128 * 3)  # a small image is enlarged to be clicked
        view = css("#view img")
        ActionChains(driver).move_to_element_with_offset(view, 0, 0).click().perform()  # the centre: on the disc
        wait.until(lambda d: "SAM from 1 click" in (text_of(d, "mask-status") or ""))
        drawn = wait.until(
            lambda d: (src := d.find_element(By.CSS_SELECTOR, "#view img").get_attribute("src")) != plain and src
        )
        after = fetch_image(drawn)
        mask_url = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#mask a[href*='mask-']").get_attribute("href")
        )
        mask = np.asarray(fetch_image(mask_url).convert("L")) > 127
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
        status = wait.until(lambda d: (t := text_of(d, "mask-status")) and "painted" in t and t)
        share = int(status.split(", ")[-1].split("%")[0])
        assert share > mask.mean() * 100 + 2  # the stroke was added
        screenshot(driver, "demo-painted")

        # a prompt without S*: a message, no result
        fill(driver, {"#prompt textarea": "a dog on the beach"})
        click(driver, "#generate")
        wait.until(lambda d: "has no placeholder" in d.find_element(By.TAG_NAME, "body").text)
        screenshot(driver, "demo-bad-prompt")

        # generate three images with 150 steps each (the page's most, so that the progress stays on screen long
        # enough to be read on an idle machine too, and for three images: on a loaded machine one look at the page
        # can take longer than one image): the sampler's bar names the image and counts the steps ("image 1 of 3:
        # sampling - 16.7%" and "25/150 steps | 0.5s", both in one look at the gallery); then three images of the
        # model's output size in the gallery
        driver.find_element(By.XPATH, "//button[contains(., 'Sampler')]").click()
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#steps input[type=number]")))
        fill(driver, {"#prompt textarea": "a S* on the beach", **numbers(steps=150, num=3)})
        click(driver, "#generate")
        until_progress(driver, r"image [123] of 3: sampling\s*-\s*[\d.]+%", r"\b\d+/150\s+steps")
        driver.execute_script("arguments[0].scrollIntoView()", css("#gallery"))
        screenshot(driver, "demo-progress")
        results = wait.until(lambda d: (found := gallery_images(d)) and len(found) == 3 and found)
        for result in results:
            image = fetch_image(result)
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


def test_drop_examples_settings_progress_queue_and_cancel(demo_url, concept_image, tmp_path):
    """The controls a user of image-customisation demos expects: drop the concept image, pick an example by its
    thumbnail, negative prompt, randomized seed (shown under each image), size, steps, number of images; the
    progress (image k of n, sampler steps) and the queue position in the page; Cancel stops a generation."""
    import base64

    from gradio_client import Client, handle_file

    with chrome() as driver:
        wait = waiter(driver, poll=0.5)
        fast = waiter(driver)
        css = lambda sel: driver.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        status = lambda d, words: words in (text_of(d, "mask-status") or "")  # noqa: E731
        driver.get(demo_url)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#concept input[type=file]")))

        # the examples are thumbnails of their concept images; a click loads image, mask and prompt
        thumb = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#examples img[src*='disc.png']"))
        assert thumb.size["width"] > 20
        thumb.click()
        wait.until(lambda d: status(d, "the example's mask"))
        assert css("#prompt textarea").get_attribute("value") == "a S* in the snow"
        assert css("#concept img").get_attribute("src")
        screenshot(driver, "demo-example")

        # an image dropped on the concept box is uploaded like a chosen file (a new concept: no mask yet)
        png = tmp_path / "dropped.png"
        Image.open(concept_image).transpose(Image.FLIP_LEFT_RIGHT).save(png)
        driver.execute_script(DROP, base64.b64encode(png.read_bytes()).decode(), png.name, css("#concept img"))
        wait.until(lambda d: status(d, "click on the object to mask it"))
        assert "dropped" in css("#concept img").get_attribute("src")

        # an image on the clipboard, pasted with the box's "Paste from clipboard" button
        driver.execute_cdp_cmd(
            "Browser.grantPermissions",
            {"origin": demo_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )
        assert driver.execute_async_script(PASTE, base64.b64encode(png.read_bytes()).decode()) == "copied"
        css("#concept button[aria-label='Paste from clipboard']").click()
        wait.until(
            lambda d: "clipboard" in (d.find_element(By.CSS_SELECTOR, "#concept img").get_attribute("src") or "")
        )
        wait.until(lambda d: status(d, "click on the object to mask it"))
        ActionChains(driver).move_to_element_with_offset(css("#view img"), 0, 0).click().perform()
        wait.until(lambda d: status(d, "SAM from 1 click"))

        # settings: negative prompt, randomized seed, 48x80, 30 steps, two images; the progress names the image
        # ("image 1 of 2: sampling - 16.7%") and counts the steps ("5/30 steps | 0.5s"), read in one look
        driver.find_element(By.XPATH, "//button[contains(., 'Sampler')]").click()
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#randomize input"))).click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#randomize input").is_selected())
        fill(driver, {"#negative textarea": "blurry, low quality", **numbers(width=48, height=80, steps=30, num=2)})
        click(driver, "#generate")
        until_progress(driver, r"image [12] of 2: sampling\s*-\s*[\d.]+%", r"\b\d+/30\s+steps")
        driver.execute_script("arguments[0].scrollIntoView()", css("#gallery"))
        screenshot(driver, "demo-progress-2")
        both = wait.until(lambda d: (c := captions(d)) is not None and len(c) == 2 and c)
        seeds = [int(c.removeprefix("seed ")) for c in both]
        assert seeds[1] == seeds[0] + 1 and seeds[0] != 42  # drawn at random, not the seed box's value
        shown = wait.until(lambda d: (s := gallery_images(d)) and len(s) >= 2 and s)
        assert {fetch_image(src).size for src in shown} == {(48, 80)}
        screenshot(driver, "demo-page", full_page=True)  # docs/demo.png

        # queue position: while another client's long generation runs, this page waits and says where it is
        other = Client(demo_url, verbose=False)
        job = other.submit(
            handle_file(str(concept_image)), None, "a S*", 0.8, 0, 5.0, 150, "lms", 8, api_name="/generate"
        )
        fast.until(lambda d: job.status().code.name in ("PROCESSING", "PROGRESS", "ITERATING"))
        fill(driver, numbers(num=1))
        click(driver, "#generate")
        until_progress(driver, r"queue: \d+/\d+")
        screenshot(driver, "demo-queue")
        job.cancel()
        wait.until(lambda d: (c := captions(d)) is not None and len(c) == 1)  # this page's turn came: its one image

        # Cancel: a long generation stops (after the image in progress); the page then generates again
        fill(driver, numbers(steps=150, num=8))
        click(driver, "#generate")
        until_progress(driver, r"image \d of 8")
        click(driver, "#cancel")

        def stopped(d):  # the progress gone from the gallery: the captions of the images it holds (maybe none)
            text, shown = text_of(d, "gallery"), captions(d)
            return text is not None and "of 8" not in text and shown is not None and (shown,)

        (done,) = wait.until(stopped)
        assert len(done) < 8
        fill(driver, numbers(steps=2, num=1))
        click(driver, "#generate")
        wait.until(lambda d: (c := captions(d)) is not None and len(c) == 1 and set(c) != set(done))
