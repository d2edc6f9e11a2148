"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from tianfu.core.audit.models import AuditChainHead
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.http.deps import PUBLIC, KernelDep
from tianfu.core.kernel import Kernel

router = APIRouter(tags=["operations"], dependencies=[Depends(PUBLIC)])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database at the newest migration and event bus connected",
    responses={503: {"description": "Not ready"}},
)
async def readyz(kernel: KernelDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        checks["database"] = await asyncio.to_thread(kernel.database_ready)
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    checks["bus"] = {"ok": await kernel.bus.healthy(), "url": kernel.settings.bus_url.split("@")[-1]}
    ready = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


class KernelCollector(Collector):
    """Gauges read from the database at scrape time: backlogs an operator should alert on."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.kernel.sessions() as session:
            outbox = session.scalar(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
            )
            dead = session.scalar(
                select(func.count()).select_from(DeadLetter).where(DeadLetter.resolved_at.is_(None))
            )
            head = session.get(AuditChainHead, 1)
        yield GaugeMetricFamily(
            "tianfu_outbox_pending_events", "Events committed but not yet published", value=outbox or 0
        )
        yield GaugeMetricFamily(
            "tianfu_dead_letters_unresolved", "Rejected inputs awaiting review", value=dead or 0
        )
        yield GaugeMetricFamily(
            "tianfu_audit_records", "Records in the audit chain", value=head.last_seq if head else 0
        )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
