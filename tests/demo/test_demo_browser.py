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
        canvas = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#painter canvas")[-1])
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

        # generate (150 steps, the page's most, so that the progress stays on screen for a while even on a fast
        # machine: 30 smoke-model steps can end before the page first shows it): one image in the gallery
        prompt.clear()
        prompt.send_keys("a S* on the beach")
        driver.find_element(By.XPATH, "//button[contains(., 'Sampler')]").click()
        steps = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#steps input[type=number]")))
        steps.send_keys(Keys.CONTROL, "a")
        steps.send_keys("150", Keys.TAB)
        driver.execute_script("arguments[0].click()", css("#generate"))  # the error toast may lie over the button
        WebDriverWait(driver, 120, poll_frequency=0.1).until(
            lambda d: "sampling" in d.find_element(By.ID, "gallery").text
        )
        assert "steps" in css("#gallery").text  # the sampler's progress bar, e.g. "7/150 steps"
        driver.execute_script("arguments[0].scrollIntoView()", css("#gallery"))
        screenshot(driver, "demo-progress")
        result = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#gallery img[src*='gradio_api/file']"))
        image = fetch_image(result.get_attribute("src"))
        assert image.size == output_size(smoke_models)
        assert np.asarray(image).std() > 0
        screenshot(driver, "demo-result")
