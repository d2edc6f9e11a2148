"""Health, readiness and metrics endpoints."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from tianfu.app import SERVER_GC_THRESHOLDS, create_app
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["bus"]["ok"] is True


def test_metrics_count_requests_by_route_template(client: TestClient, token_for: object) -> None:
    client.get("/api/v1/patients/some-id")
    text = client.get("/metrics").text
    assert (
        'tianfu_http_requests_total{method="GET",route="/api/v1/patients/{patient_id}",status="401"}' in text
    )
    assert "tianfu_audit_records" in text
    assert "tianfu_outbox_pending_events" in text


def test_openapi_document_and_docs_page(client: TestClient) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert document["info"]["title"].startswith("Tianfu")
    assert "/api/v1/patients" in document["paths"]
    assert "ProblemDetail" in document["components"]["schemas"]
    docs = client.get("/api/docs")
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()


def test_the_server_collects_garbage_less_often_while_it_runs(kernel: Kernel, settings: Settings) -> None:
    before = gc.get_threshold()
    with TestClient(create_app(settings, kernel=kernel)):
        assert gc.get_threshold() == SERVER_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what start-up loaded is left out of collections
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
