"""The central station in a real browser, with the demo ward's recorded patients replayed over MLLP."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from tests.conftest import Demo
from tests.web.test_browser import CHROMIUM_ARGS
from tianfu.app import create_app
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings
from tianfu.demo import DEMO_PASSWORD
from tianfu.monitoring import demo as monitoring_demo
from tianfu.monitoring.replay import Monitor, replay
from tianfu.monitoring.settings import get_monitoring_settings
from tianfu.monitoring.tables import MonitoringDevice

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(__file__).parent.parent.parent / "var" / "test-screenshots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def station(kernel: Kernel, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """A server with the demo ward's monitors registered and its MLLP listener on a free port."""
    monitoring_demo.seed(kernel)
    hl7_port = _free_port()
    monkeypatch.setenv("TIANFU_HL7_PORT", str(hl7_port))
    monkeypatch.setenv("TIANFU_DEMO_FEED", "false")
    get_monitoring_settings.cache_clear()
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, kernel=kernel), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", hl7_port
    server.should_exit = True
    thread.join(timeout=10)
    get_monitoring_settings.cache_clear()


def _replay_demo_ward(kernel: Kernel, hl7_port: int, seconds: float) -> threading.Thread:
    """`tianfu monitor replay` of each demo monitor's recording, in the background."""
    with kernel.sessions() as session:
        devices = session.scalars(
            select(MonitoringDevice).where(MonitoringDevice.manufacturer == monitoring_demo.DEMO_MANUFACTURER)
        ).all()
        monitors = [
            Monitor(d.identifier, monitoring_demo.recording(d.model.removeprefix("replay:"))) for d in devices
        ]

    async def run() -> None:
        async for _ in replay("127.0.0.1", hl7_port, monitors, speed=3600 / 0.5, seconds=seconds):
            pass

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll from Python: the pages' CSP rightly forbids the eval that wait_for_function needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.2)


@pytest.fixture
def page(chromium: str):  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield page
        browser.close()
        assert errors == [], f"the page reported errors: {errors}"


def test_central_station_shows_replayed_patients_live(
    station: tuple[str, int],
    kernel: Kernel,
    demo: Demo,
    page,  # type: ignore[no-untyped-def]
) -> None:
    base, hl7_port = station
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(base + "/login")
    page.fill("#username", "nurse.wang")
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    ward = demo.ward("CARD1")
    page.goto(f"{base}/monitoring/wards/{ward.id}")
    assert page.locator("#station-status").inner_text() in ("正在连接…", "实时")
    feeder = _replay_demo_ward(kernel, hl7_port, seconds=8)

    # Live: tiles fill in without a reload, with the patients' own numbers.
    _until(
        lambda: (
            len(
                [
                    t
                    for t in page.locator(".bedtile [data-field=pulse]").all_inner_texts()
                    if t.strip().isdigit()
                ]
            )
            >= 3
        )
    )
    assert page.locator("#station-status").inner_text() == "实时"
    first = page.locator(".bedtile").first.locator("[data-field=pulse]").inner_text()
    page.wait_for_timeout(2500)  # another hour of the recording has played
    assert re.fullmatch(r"\d+|–", first)
    assert page.locator(".bedtile .news2").filter(has_text=re.compile(r"\d")).count() >= 3

    # The sound cue is off until a person turns it on (browsers block audio before a gesture).
    toggle = page.locator("#sound-toggle")
    assert toggle.inner_text().strip() == "声音关闭"
    toggle.click()
    assert toggle.inner_text().strip() == "声音开启"
    assert toggle.get_attribute("aria-pressed") == "true"
    page.screenshot(path=str(SCREENSHOTS / "central-station.png"), full_page=True)

    # Acknowledge the first unacknowledged alarm, if the replay raised one; once the replay has ended, so
    # that the alarm clicked is not one that cleared a moment ago (which is gone, and has nothing to show).
    feeder.join(timeout=20)
    page.wait_for_timeout(1000)
    buttons = page.locator("#alarm-list button")
    if buttons.count():
        buttons.first.click()
        _until(lambda: page.locator("#alarm-list .badge").count() > 0)

    # The patient page: NEWS2, the 24-hour trend chart drawn by ECharts, the alarm history.
    page.locator(".bedtile a.who").first.click()
    _until(lambda: page.locator("#trends svg path").count() > 20)  # axes, grid lines and the curves
    assert page.locator("h2", has_text="趋势").count() == 1
    assert page.locator("h2", has_text="报警历史").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "monitoring-patient.png"), full_page=True)
