"""The web shell in a real browser (Debian's Chromium driven by Playwright) against a real server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tianfu.app import create_app
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings
from tianfu.demo import DEMO_PASSWORD

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(kernel: Kernel, settings: Settings) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(settings, kernel=kernel)
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(200):
        if instance.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(chromium: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield page
        page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
        browser.close()
        assert errors == [], f"the page reported errors: {errors}"


def test_nurse_signs_in_and_sees_only_her_ward(server: str, page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(server + "/patients")
    assert page.url.startswith(server + "/login")
    page.fill("#username", "nurse.wang")
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server + "/patients")
    rows = page.locator("#patient-table tbody tr")
    names = sorted(rows.locator("td.name").all_inner_texts())
    assert names == sorted(["李建国", "王秀英", "刘芳", "张德明"])
    assert page.locator("text=陈淑华").count() == 0

    # Live search (htmx) narrows the table without a page load.
    page.fill("#q", "王秀")
    expect(rows).to_have_count(1)
    expect(page.locator("#patient-table td.name")).to_have_text("王秀英")

    # The home page draws the bed chart (ECharts, served from our own static files).
    page.goto(server + "/")
    page.wait_for_selector("[data-chart] svg")
    assert "王丽，您好" in page.content()

    page.goto(server + "/patients")
    page.click("text=English")
    page.wait_for_selector("text=Patients")
    assert page.locator("html").get_attribute("lang") == "en"


def test_auditor_verifies_the_chain_from_the_page(server: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(server + "/login")
    page.fill("#username", "auditor")
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server + "/")
    page.goto(server + "/audit")
    page.wait_for_selector("#activity-data", state="attached")
    page.click("text=校验审计链")
    page.wait_for_selector("#verify-result .alert.ok")
    assert "审计链完整" in page.inner_text("#verify-result")
