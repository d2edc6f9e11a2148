"""The patient's symptom check on a phone and the nurse's triage desk, in Chromium against a real server."""

from __future__ import annotations

import pytest

from tests.web.test_browser import page, server  # noqa: F401 - fixtures
from tianfu.demo import DEMO_PASSWORD

pytestmark = pytest.mark.browser


def sign_in(page, server: str, username: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page.goto(server + "/login")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server + "/")


def test_a_patient_checks_her_symptoms_on_a_phone(server: str, page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, server, "patient.liu")
    page.goto(server + "/triage")
    page.fill("textarea[name=text]", "咳嗽三天，流鼻涕，没有发烧")
    page.click("form[action='/triage/start'] button")
    # One question at a time, with three large answers; stop after two and ask for the result.
    for _ in range(2):
        if page.locator("button[value=unsure]").count() == 0:
            break
        page.click("button[value=unsure]")
    if page.locator("text=结束问询，查看结果").count():
        page.click("text=结束问询，查看结果")
    card = page.locator("section.tri-result")
    card.wait_for()
    text = card.inner_text()
    assert "科室" in text
    assert "不是医学诊断" in text
    assert "咳嗽" in page.locator(".tri-known").inner_text()


def test_the_nurse_confirms_from_the_desk(server: str, page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    sign_in(page, server, "nurse.wang")
    page.goto(server + "/triage/new")
    page.fill("input[name=visitor_label]", "来诊 12 号")
    page.fill("input[name=age_years]", "35")
    page.fill("textarea[name=text]", "胸痛半小时，出冷汗")
    page.click("form[action='/triage/start'] button")
    if page.locator("text=结束问询，查看结果").count():
        page.click("text=结束问询，查看结果")
    page.fill("input[name=heart_rate]", "128")
    page.fill("input[name=systolic_bp]", "85")
    page.click("text=重新评估")
    page.locator("section.tri-result").wait_for()
    page.click("form[action$='/decision'] button")
    page.click("button:has-text('分诊至')")
    page.wait_for_url(server + "/triage")
    assert "来诊 12 号" not in page.locator("table.data").inner_text()
