"""Retention and downsampling of stored vital signs, so that high-rate data cannot grow without bound.

Per-minute rows are kept for ``minute_retention_days``; older ones are folded into hourly means (one row per
device and hour, unless the pipeline already wrote that hour) and deleted. Hourly rows are kept for
``hourly_retention_days``. Alarm history and audit records are never touched here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tianfu.core.db import utcnow
from tianfu.core.kernel import Kernel
from tianfu.monitoring.pipeline import STORED_PARAMETERS
from tianfu.monitoring.settings import MonitoringSettings
from tianfu.monitoring.tables import VitalSample

log = logging.getLogger(__name__)

AVERAGED = (*STORED_PARAMETERS, "sepsis_risk")
CHUNK = 20_000


@dataclass
class RetentionResult:
    minute_rows_folded: int = 0
    hour_rows_written: int = 0
    hour_rows_deleted: int = 0


def apply_once(kernel: Kernel, settings: MonitoringSettings, now: datetime | None = None) -> RetentionResult:
    with kernel.sessions() as session:
        return apply(session, settings, now)


def apply(session: Session, settings: MonitoringSettings, now: datetime | None = None) -> RetentionResult:
    """One pass of the policy; commits chunk by chunk so that a large backlog never holds a long lock."""
    now = now or utcnow()
    result = RetentionResult()
    minute_cutoff = now - timedelta(days=settings.minute_retention_days)
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert  # type: ignore[union-attr]
    while True:
        rows = session.scalars(
            select(VitalSample)
            .where(VitalSample.resolution == "minute", VitalSample.observed_at < minute_cutoff)
            .order_by(VitalSample.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        hours = list(_hourly_means(rows).values())
        # An hour the pipeline already summarised keeps its row (same device, resolution and time).
        # Counted by RETURNING: psycopg reports no rowcount for a multi-row INSERT ... ON CONFLICT.
        written = session.scalars(
            insert(VitalSample).values(hours).on_conflict_do_nothing().returning(VitalSample.id)
        ).all()
        session.execute(delete(VitalSample).where(VitalSample.id.in_([r.id for r in rows])))
        session.commit()
        result.minute_rows_folded += len(rows)
        result.hour_rows_written += len(written)
    hour_cutoff = now - timedelta(days=settings.hourly_retention_days)
    deleted = session.execute(
        delete(VitalSample).where(VitalSample.resolution == "hour", VitalSample.observed_at < hour_cutoff)
    )
    session.commit()
    result.hour_rows_deleted = int(deleted.rowcount or 0)  # type: ignore[attr-defined]
    return result


def _hourly_means(rows: Sequence[VitalSample]) -> dict[tuple[str | None, datetime], dict[str, Any]]:
    groups: dict[tuple[str | None, datetime], list[VitalSample]] = defaultdict(list)
    for row in rows:
        groups[(row.device_id, row.observed_at.replace(minute=0, second=0, microsecond=0))].append(row)
    means: dict[tuple[str | None, datetime], dict[str, Any]] = {}
    for (device_id, hour), members in groups.items():
        last = members[-1]
        summary: dict[str, Any] = {
            "resolution": "hour",
            "observed_at": hour,
            "device_id": device_id,
            "bed_id": last.bed_id,
            "patient_id": last.patient_id,
            "news2": max((m.news2 for m in members if m.news2 is not None), default=None),
            "news2_partial": any(m.news2_partial for m in members),
            "source": last.source,
            "flags": {"downsampled_from": len(members)}
            | ({"unassociated": True} if last.patient_id is None else {}),
        }
        for name in AVERAGED:
            values = [v for m in members if (v := getattr(m, name)) is not None]
            summary[name] = sum(values) / len(values) if values else None
        means[(device_id, hour)] = summary
    return means


async def run_forever(kernel: Kernel, settings: MonitoringSettings, *, every_s: float = 3600.0) -> None:
    while True:
        try:
            result = await asyncio.to_thread(apply_once, kernel, settings)
            if result.minute_rows_folded or result.hour_rows_deleted:
                log.info("vital-sign retention: %s", result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("vital-sign retention failed; retrying in an hour")
        await asyncio.sleep(every_s)
