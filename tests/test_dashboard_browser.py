"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver) drives
``fastq dashboard`` started as users start it, against a real Redis with a real worker draining a
queue. It logs in, watches the live throughput chart fill, pauses a queue, finds a task by ID and
deletes it (accepting the confirm dialog), checks that the page broke no Content-Security-Policy
rule, and saves screenshots to tests/artifacts/ for review.

Skipped with a reason when Chromium is not installed (``apt-get install -y chromium
chromium-driver``); with ``CI`` set it fails instead, as .ci/run installs both.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
from browser import NO_CHROMIUM, chromium_installed, headless_chromium

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


# Without Chromium the module skips (a module-level skip needs allow_module_level, else pytest reports a
# collection error that stops the whole run). With CI set it does not skip: the ``browser`` fixture
# fails the test instead, so CI reports one failed test rather than an interrupted collection.
if not chromium_installed() and not os.environ.get("CI"):
    pytest.skip(NO_CHROMIUM, allow_module_level=True)
pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[dev]'")
pytest.importorskip("starlette", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")

from helpers import RunningWorker  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from test_dashboard import TOKEN, start_dashboard_process  # noqa: E402

import fastq  # noqa: E402
from fastq import keys  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path):
    profile = Path(tempfile.mkdtemp(prefix="fastq-chromium-", dir=tmp_path))
    with headless_chromium(profile, "1400,1050", browser_logs=True) as driver:
        yield driver


class BackgroundWorker:
    """A fastq worker on its own event loop in a thread, so the chart has something to show."""

    def __init__(self, redis_url: str, queue: str) -> None:
        self.redis_url, self.queue = redis_url, queue
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        async def handler(task):
            await asyncio.sleep(0.02)
            if task.payload.endswith(b"7"):
                raise RuntimeError("every tenth task fails")

        async with RunningWorker(handler, self.redis_url, queues={self.queue: 1}, concurrency=20):
            while not self.stop_event.is_set():
                await asyncio.sleep(0.05)

    def __enter__(self) -> "BackgroundWorker":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(30)


def csp_violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


def test_dashboard_in_headless_chromium(redis_url, r, browser):
    client = fastq.Client(redis_url)
    client.enqueue_many([fastq.Task("email:send", b'{"to": "ada@example.com"}')] * 3)
    doomed = client.enqueue(fastq.Task("report:build", b"{}"), task_id="report-2024-q4").id
    fastq.Inspector(redis_url).archive_task("default", doomed)
    client.enqueue_many([fastq.Task("thumb:make", str(i).encode()) for i in range(6000)], queue="images",
                        max_retry=0)
    proc, port = start_dashboard_process(redis_url, "--refresh", "0.5")
    base = f"http://127.0.0.1:{port}"
    wait = WebDriverWait(browser, 20)
    try:
        with BackgroundWorker(redis_url, "images"):
            # log in
            browser.get(base + "/")
            wait.until(EC.presence_of_element_located((By.ID, "token"))).send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
            wait.until(EC.presence_of_element_located((By.ID, "queues")))
            assert browser.current_url == base + "/"
            # the live chart samples /api/queues and draws the throughput of the draining queue
            wait.until(lambda d: int(d.find_element(By.ID, "throughput").get_attribute("data-samples") or 0) >= 4)
            points = browser.find_element(By.ID, "line-processed").get_attribute("points")
            assert points and len(points.split()) >= 3
            rate = float(browser.find_element(By.ID, "rate-processed").text.replace(",", ""))
            assert rate > 0, "the chart shows tasks being processed"
            # action 1: pause the queue "default" with its button
            row = browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="default"]')
            row.find_element(By.XPATH, ".//button[text()='Pause']").click()
            wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), "queue default paused"))
            assert r.exists(keys.paused_key("default"))
            row = browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="default"]')
            assert "paused" in row.text and row.find_element(By.XPATH, ".//button[text()='Resume']")
            # action 2: find the archived task by ID and delete it (confirm dialog)
            search = browser.find_element(By.CSS_SELECTOR, "form.search input[name=id]")
            search.send_keys(doomed)
            search.submit()
            wait.until(EC.text_to_be_present_in_element((By.ID, "task-id"), doomed))
            assert browser.find_element(By.ID, "task-state").text == "archived"
            assert browser.find_element(By.ID, "payload-hidden")  # payloads stay hidden by default
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "dashboard-task.png"))
            browser.find_element(By.XPATH, "//button[text()='Delete']").click()
            alert = wait.until(EC.alert_is_present())
            assert doomed in alert.text
            alert.accept()
            wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".flash"), f"task {doomed} deleted"))
            assert not r.exists(keys.task_key("default", doomed))
            assert r.zcard(keys.archived_key("default")) == 0
            # back to the overview for the picture, with the chart filled again
            browser.get(base + "/")
            wait.until(lambda d: int(d.find_element(By.ID, "throughput").get_attribute("data-samples") or 0) >= 6)
            time.sleep(0.3)
            path = ARTIFACTS / "dashboard.png"
            assert browser.save_screenshot(str(path))
            assert path.stat().st_size > 10_000
            assert csp_violations(browser) == []
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
