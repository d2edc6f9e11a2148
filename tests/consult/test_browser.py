"""A whole remote consultation through the pages, in a real browser, by two users of two institutions.

dr.huang (锦江区社区卫生服务中心, JJSQ) invites consult.zhao (四川天府人民医院, TFRM); each has a browser
context of their own. Set TIANFU_TEST_SCREENSHOTS_DIR to keep the screenshots taken along the way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.web.test_browser import CHROMIUM_ARGS, server  # noqa: F401 - the live-server fixture
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.tables import Consultation, OpinionVersion
from tianfu.core.kernel import Kernel
from tianfu.demo import DEMO_PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(chromium: str, kernel: Kernel) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    seed_consult(kernel)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def record_vital_signs(kernel: Kernel, patient_name: str) -> None:
    """What the monitoring module stored for the patient today (its case-packet hook reads it)."""
    from tianfu.core.db import utcnow
    from tianfu.core.patients.models import Patient
    from tianfu.monitoring.tables import AlarmEpisode, VitalSample

    now = utcnow()
    with kernel.sessions() as session, session.begin():
        patient = session.scalars(select(Patient).where(Patient.name == patient_name)).one()
        for hour in range(12):
            session.add(
                VitalSample(
                    patient_id=patient.id,
                    observed_at=now - timedelta(hours=12 - hour),
                    heart_rate=82.0 + 3 * (hour % 5),
                    spo2=96.0 - (hour % 3),
                    respiratory_rate=16.0 + hour % 4,
                    systolic_bp=138.0 + 2 * (hour % 6),
                    temperature=36.8 + 0.1 * (hour % 4),
                )
            )
        session.add(
            AlarmEpisode(
                id="consult-browser-alarm",
                patient_id=patient.id,
                condition="spo2_low",
                kind="physiological",
                priority="medium",
                state="cleared",
                message="SpO₂ 低 93%",
                value=93.0,
                raised_at=now - timedelta(hours=3),
            )
        )


class User:
    """One signed-in person in a browser context of their own; page errors are collected."""

    def __init__(self, browser: Any, base: str, username: str, shots: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
        self.page = self.context.new_page()
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)
        self.base, self.shots = base, shots
        self.page.goto(base + "/login")
        self.page.fill("#username", username)
        self.page.fill("#password", DEMO_PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(base + "/")

    def _console(self, message: Any) -> None:
        # Expected: the refused submission comes back as a 422 page listing the gates.
        url = str(message.location.get("url", ""))
        if message.type == "error" and not url.endswith("/submit"):
            self.errors.append(message.text)

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


def test_a_whole_consultation_between_two_institutions(
    server: str,  # noqa: F811 - the fixture
    browser: Any,
    kernel: Kernel,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    shots = Path(os.environ.get("TIANFU_TEST_SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    huang = User(browser, server, "dr.huang", shots)
    zhao = User(browser, server, "consult.zhao", shots)
    page = huang.page

    # The wizard: patient → institution, specialty, title → reason and case → consents → review.
    huang.go("/consult")
    page.click("#new-request")
    patient = page.locator("#patient_id option", has_text="黄玉珍")
    page.select_option("#patient_id", patient.get_attribute("value"))
    page.click(".wizard button[type=submit]")
    expect(page.locator(".wizard-steps li.active")).to_contain_text("受邀机构")
    assert page.locator("#invited_institution_id option").all_inner_texts() == ["四川天府人民医院 · 三级甲等"]
    page.fill("#specialty", "心血管内科")
    page.select_option("#title", "3")
    page.click(".wizard button[type=submit]")
    page.fill("#reason", "血糖控制不佳伴活动后胸闷一周")
    page.fill("#purpose", "请心内科专家评估是否需转上级医院行冠脉检查")
    page.fill("#case_summary", "76岁女性，2型糖尿病10年，高血压。近一周活动后胸闷，休息后缓解。")
    page.select_option("#priority", "urgent")
    page.click(".wizard button[type=submit]")
    expect(page.locator(".wizard-steps li.active")).to_contain_text("知情同意")
    # Straight on without the consents: the refusal lists every unmet gate, in place.
    page.click(".wizard button[type=submit]")
    page.click("#submit-request")
    refusals = page.locator(".refusals li")
    expect(refusals).to_have_count(3)
    texts = refusals.all_inner_texts()
    assert sum("知情同意书" in t or "单独同意" in t for t in texts) == 2
    assert any("时间" in t and "TC-03" in t for t in texts)
    huang.shot("consult-wizard-refused")
    consultation = page.url.split("/consult/", 1)[1].split("/", 1)[0]
    huang.go(f"/consult/{consultation}/wizard/details")
    page.fill("#time_frame_earliest", "2030-01-06T08:00")
    page.fill("#time_frame_latest", "2030-01-08T18:00")
    page.click(".wizard button[type=submit]")
    page.fill("#treatment_ref", "scan://jjsq/2026/consent-treatment-0001.pdf")
    page.fill("#privacy_ref", "scan://jjsq/2026/consent-privacy-0001.pdf")
    page.click(".wizard button[type=submit]")
    page.click("#submit-request")
    expect(page.locator("h1 .badge")).to_have_text("已提交申请")

    # The invited side: the queue with the deadline, the qualification check, accept.
    zhao.go("/consult")
    row = zhao.page.locator(f'#incoming tr[data-id="{consultation}"]')
    expect(row).to_contain_text("黄玉珍")
    expect(row.locator(".deadline")).not_to_be_empty()
    zhao.shot("consult-queue")
    row.locator("a").click()
    expect(zhao.page.locator("#actions")).to_contain_text("符合资质")
    zhao.page.click("#accept")
    expect(zhao.page.locator("h1 .badge")).to_have_text("已接受/待排期")

    # The inviting physician starts it; the consultant reads the case packet.
    huang.go(f"/consult/{consultation}")
    page.click("#action-start")
    expect(page.locator("h1 .badge")).to_have_text("会诊中")
    record_vital_signs(kernel, "黄玉珍")
    zhao.go(f"/consult/{consultation}/packet")
    expect(zhao.page.locator("main")).to_contain_text("2型糖尿病10年")
    expect(zhao.page.locator("#vitals-chart svg")).to_be_visible()
    expect(zhao.page.locator('[data-module="monitoring"]')).to_contain_text("SpO₂ 低 93%")
    zhao.shot("consult-packet")

    # The discussion: each side sees the other's message arrive without reloading.
    zhao.go(f"/consult/{consultation}")
    expect(zhao.page.locator("#live-badge")).to_have_text("实时")
    expect(page.locator("#live-badge")).to_have_text("实时")
    zhao.page.fill("#message-body", "请补充近期心电图及心肌酶结果。")
    zhao.page.click("#send-message")
    expect(page.locator("#messages .message")).to_contain_text(["请补充近期心电图及心肌酶结果。"])
    page.fill("#message-body", "心电图示V4–V6导联ST段压低0.1mV，心肌酶正常。")
    ecg = b"%PDF-1.4\n% 12-lead ECG, JJSQ\n%%EOF\n"
    page.click("details.attach summary")
    page.set_input_files(
        "#attachment-file", {"name": "ecg.pdf", "mimeType": "application/pdf", "buffer": ecg}
    )
    page.fill("#attachment-description", "十二导联心电图")
    page.click("#send-message")
    expect(zhao.page.locator("#messages .message")).to_have_count(2)
    expect(zhao.page.locator("#messages .message").nth(1)).to_contain_text("ST段压低")
    expect(zhao.page.locator("#messages .message").nth(1)).to_contain_text("1 个附件")
    # The file reaches the consultant too, live, and downloads byte for byte.
    attached = zhao.page.locator("#attachments a", has_text="ecg.pdf")
    expect(attached).to_be_visible()
    with zhao.page.expect_download() as download:
        attached.click()
    assert Path(download.value.path()).read_bytes() == ecg
    zhao.shot("consult-discussion")

    # The consultant writes and signs the opinion; the AI panel is labelled and outside the form.
    zhao.go(f"/consult/{consultation}/report")
    expect(zhao.page.locator("#ai-suggestions .ai-label")).to_have_text("AI 建议，非会诊意见")
    assert zhao.page.locator("#editor form #ai-suggestions").count() == 0
    zhao.page.fill("#findings", "活动后胸闷，心电图ST段压低。")
    zhao.page.fill("#diagnosis", "冠心病，稳定型心绞痛可能")
    zhao.page.fill("#opinion", "建议转我院心内科行冠脉CTA，必要时冠脉造影；加用阿司匹林及他汀。")
    zhao.page.fill("#recommendations", "两周内复诊。")
    zhao.page.fill("#signing_pin", "246810")  # first signature: the consultant sets their signing PIN
    zhao.page.fill("#signing_pin_confirmation", "246810")
    zhao.shot("consult-report-editor")
    zhao.page.click("#sign")
    expect(zhao.page.locator("#signed-report .sig-badge")).to_have_text("✔ 签名有效")
    # Signed is final: what remains is an amendment, with its own reason.
    expect(zhao.page.locator("#editor h2")).to_have_text("修订已签名的会诊意见")

    # The inviting physician sees the status change live, then the signed opinion, and decides (TC-08).
    expect(page.locator("#live-status")).to_be_visible()
    huang.go(f"/consult/{consultation}")
    expect(page.locator("#opinion .sig-badge")).to_have_text("✔ 签名有效")
    expect(page.locator("#opinion")).to_contain_text("冠脉CTA")
    page.fill("#decision", "采纳会诊意见，已预约转诊天府人民医院心内科。")
    page.click("#decision-form button[type=submit]")
    expect(page.locator("h1 .badge")).to_have_text("邀请方已采纳/处理")
    expect(page.locator("#decision-text")).to_contain_text("已预约转诊")
    huang.go(f"/consult/{consultation}/report")
    huang.shot("consult-signed-report")

    # Somebody alters the stored, signed report in the database: every page now says so.
    with kernel.sessions() as session, session.begin():
        stored = session.scalars(
            select(OpinionVersion).where(OpinionVersion.consultation_id == consultation)
        ).one()
        session.execute(
            update(OpinionVersion)
            .where(OpinionVersion.id == stored.id)
            .values(canonical_content=stored.canonical_content.replace("冠脉CTA", "保守观察"))
        )
        assert session.get(Consultation, consultation) is not None
    page.reload()
    expect(page.locator("#signed-report .sig-badge")).to_have_text("✘ 签名无效—已被篡改")
    expect(page.locator("#signed-report .alert.error")).to_contain_text("content_changed")
    huang.shot("consult-tampered")
    huang.go(f"/consult/{consultation}")
    expect(page.locator("#opinion .sig-badge")).to_have_text("✘ 签名无效—已被篡改")

    # English second.
    page.context.add_cookies([{"name": "tianfu_lang", "value": "en", "url": server}])
    page.reload()
    expect(page.locator("#opinion .sig-badge")).to_contain_text("Signature invalid")

    for user in (huang, zhao):
        user.context.close()
        assert user.errors == [], f"the page reported errors: {user.errors}"
