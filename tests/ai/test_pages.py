"""The AI platform's pages: registry, model card with field performance, switches and validation by form."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.web.test_pages import HTML, csrf, sign_in

FIXTURES = Path(__file__).parent / "fixtures"
PNEUMONIA = "tianfu-imaging-pneumonia"


def test_registry_and_model_pages_show_cards_and_switches(client: TestClient) -> None:
    sign_in(client, "admin")
    registry = client.get("/ai", headers=HTML)
    assert registry.status_code == 200
    assert "模型注册表" in registry.text
    assert PNEUMONIA in registry.text
    assert "POST /api/v1/ai/infer/imaging-pneumonia" in registry.text

    page = client.get(f"/ai/models/{PNEUMONIA}", headers=HTML)
    assert page.status_code == 200
    assert "模型卡" in page.text
    assert 'action="/ai/validate/' in page.text  # admins may run a validation
    assert 'id="field-data"' in page.text

    token = csrf(client, f"/ai/models/{PNEUMONIA}")
    off = client.post(
        f"/ai/models/{PNEUMONIA}/deactivate",
        data={"reason": "under review", "csrf_token": token},
        follow_redirects=True,
    )
    assert "已停用" in off.text


def test_clinicians_read_the_registry_but_cannot_switch_models(client: TestClient) -> None:
    sign_in(client, "dr.zhang")
    page = client.get(f"/ai/models/{PNEUMONIA}", headers=HTML)
    assert page.status_code == 200
    assert 'action="/ai/validate/' not in page.text
    token = csrf(client, f"/ai/models/{PNEUMONIA}")
    refused = client.post(f"/ai/models/{PNEUMONIA}/deactivate", data={"reason": "mine", "csrf_token": token})
    assert refused.status_code == 403


def test_validation_by_form_shows_progress_then_the_report(client: TestClient) -> None:
    sign_in(client, "admin")
    token = csrf(client, f"/ai/models/{PNEUMONIA}")
    with (FIXTURES / "pneumonia_val40.npz").open("rb") as fh:
        started = client.post(
            f"/ai/validate/{PNEUMONIA}",
            data={"csrf_token": token, "version": "1.0.0"},
            files={"file": ("pneumonia_val40.npz", fh, "application/octet-stream")},
            follow_redirects=False,
        )
    assert started.status_code == 303
    location = started.headers["location"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fragment = client.get(location, headers={**HTML, "hx-request": "true"}).text
        if "hx-trigger" not in fragment:
            break
        time.sleep(0.2)
    page = client.get(location, headers=HTML).text
    assert "/report.pdf" in page
    assert "<iframe" in page
