"""Headless Chromium for the browser tests (Debian's chromium + chromium-driver, driven by selenium).

Without Chromium a test skips with the reason; with ``CI`` set it fails, as .ci/run installs both.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NO_CHROMIUM = "headless Chromium is not installed: apt-get install -y chromium chromium-driver"


def chromium_installed() -> bool:
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def require_chromium() -> None:
    """Skip the test without Chromium, or fail it when ``CI`` is set."""
    if not chromium_installed():
        if os.environ.get("CI"):
            pytest.fail(f"{NO_CHROMIUM} (CI is set: .ci/run must install it)", pytrace=False)
        pytest.skip(NO_CHROMIUM)


@contextlib.contextmanager
def headless_chromium(profile: Path, window: str, browser_logs: bool = False) -> Iterator[Any]:
    """A selenium driver for headless Chromium with a fresh profile in ``profile``, closed on exit.

    The flags keep it off the network it would otherwise try (background updates, sync, first run)."""
    require_chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(arg)
    if browser_logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_AVOID_STATS", "true")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
