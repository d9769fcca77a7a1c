"""A real headless Chromium for the tests that look at web pages (Prefect UI, MLflow UI, the demo).

Debian's `chromium` + `chromium-driver` driven by selenium (`make browser` installs them). `chrome()` is a
context manager; `screenshot()` saves a PNG under tests/artifacts/ so a person can look at what the test saw.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@contextmanager
def chrome(width: int = 1400, height: int = 1000):
    driver_path = shutil.which("chromedriver")
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not driver_path or not browser_path:
        pytest.skip("no chromium/chromedriver: run `make browser` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str, full_page: bool = False) -> Path:
    """The window (or, with full_page, the whole page at the window's width) as tests/artifacts/<name>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        width, height = driver.execute_script(
            "return [window.innerWidth, document.documentElement.scrollHeight, window.scrollTo(0, 0)]"
        )[:2]
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.save_screenshot(str(path))
    finally:
        if full_page:
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path
