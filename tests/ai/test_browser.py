"""AI governance in Chromium: an admin validates a model, switches its version, the auditor sees it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.triage.test_browser import sign_in
from tests.web.test_browser import page, server  # noqa: F401 - fixtures
from tianfu.core.audit.service import Actor
from tianfu.core.kernel import Kernel
from tianfu.core.model_registry import service as registry
from tianfu.core.plugins import installed_modules

pytestmark = pytest.mark.browser
FIXTURES = Path(__file__).parent / "fixtures"
PNEUMONIA = "tianfu-imaging-pneumonia"


def import_candidate(kernel: Kernel, tmp_path: Path) -> str:
    """A retrained version as the hospital would receive it: the shipped files under a new version."""
    shipped = registry.shipped_manifests()[(PNEUMONIA, "1.0.0")]
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    for path in shipped.files:
        shutil.copy2(path, candidate / path.name)
    metadata = candidate / "pneumonia.json"
    meta = json.loads(metadata.read_text())
    meta["version"] = "1.0.1"
    metadata.write_text(json.dumps(meta))
    imaging = next(m for m in installed_modules() if m.key == "imaging")
    assert imaging.read_model_manifest is not None
    with kernel.sessions() as session, session.begin():
        registry.register(
            session,
            kernel.audit,
            actor=Actor(user_id=None, username="cli:it", role="system"),
            manifest=imaging.read_model_manifest(metadata),
            var_dir=tmp_path / "var",
        )
    return "1.0.1"


def test_admin_validates_switches_version_and_the_auditor_sees_it(
    server: str,  # noqa: F811
    page,  # type: ignore[no-untyped-def]  # noqa: F811
    kernel: Kernel,
    tmp_path: Path,
) -> None:
    version = import_candidate(kernel, tmp_path)
    sign_in(page, server, "admin")
    page.goto(server + "/ai")
    page.click(f"a[href='/ai/models/{PNEUMONIA}']")
    page.wait_for_selector("text=模型卡")
    page.wait_for_selector("#field-agreement svg")  # the field-performance charts drew

    # Local validation of the candidate on a committed labelled dataset.
    page.select_option("select[name=version]", version)
    page.set_input_files("input[name=file]", str(FIXTURES / "pneumonia_val40.npz"))
    page.click("text=运行验证")
    page.wait_for_url(f"{server}/ai/validations/*")
    report = page.frame_locator("iframe.report")
    report.locator("img").first.wait_for(timeout=60_000)
    assert report.locator("img").count() >= 3  # ROC, calibration, confusion matrix
    assert "AUC" in report.locator("body").inner_text()
    page.screenshot(path=str(tmp_path / "validation.png"), full_page=True)

    # Switch the model to the candidate, with a reason.
    page.goto(f"{server}/ai/models/{PNEUMONIA}")
    row = page.locator("tr", has_text=version)
    row.locator("input[name=reason]").fill("本地验证通过 local validation passed")
    row.get_by_role("button", name="启用").click()
    page.wait_for_selector(f"text=已启用 {version}")
    assert page.locator("tr", has_text=version).locator(".badge.green").count() == 1

    # The auditor finds the switch in the audit trail.
    page.context.clear_cookies()
    sign_in(page, server, "auditor")
    page.goto(server + "/audit?action=ai_model.activate")
    page.wait_for_selector("#audit-table")
    assert "ai_model.activate" in page.inner_text("#audit-table")
