"""Central vital-sign monitoring (患者生命体征集中监测), plugged into the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.deadletter import service as deadletters
from tianfu.core.i18n import N_
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Patient
from tianfu.core.plugins import CasePacketSection, PatientPanel, TianfuModule
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal
from tianfu.monitoring import ai, cli, views
from tianfu.monitoring.ingest.mllp import MllpServer
from tianfu.monitoring.ingest.mqtt import MqttIngest
from tianfu.monitoring.ingest.processes import MllpProcesses
from tianfu.monitoring.ingest.report import DeviceReport
from tianfu.monitoring.live import LiveWards
from tianfu.monitoring.pipeline import BED_SUBJECT, LINGER_S, Pipeline
from tianfu.monitoring.settings import MonitoringSettings, get_monitoring_settings

Stopper = Callable[[], Awaitable[None]]


class Ingest:
    """Turns device reports into bus events; refused input goes to the dead-letter store."""

    def __init__(self, kernel: Kernel, settings: MonitoringSettings) -> None:
        self.kernel = kernel
        self.settings = settings

    async def accept(self, report: DeviceReport) -> None:
        subject, data, event_id = report.bus_event(self.settings.partitions)
        await self.kernel.bus.publish(subject, data, event_id=event_id)

    def accept_now(self, report: DeviceReport) -> bool:
        """:meth:`accept` without waiting, where the bus allows it (in process); False: await accept."""
        subject, data, event_id = report.bus_event(self.settings.partitions)
        return self.kernel.bus.publish_nowait(subject, data, event_id=event_id)

    def publish_now(self, subject: str, data: dict[str, Any], event_id: str) -> None:
        """A report already made into a bus event (by a listener process), onto the in-process bus."""
        self.kernel.bus.publish_nowait(subject, data, event_id=event_id)

    async def reject(self, raw: bytes, reason: str, origin: Any) -> None:
        source = "mqtt" if isinstance(origin, dict) else "hl7-mllp"
        meta = origin if isinstance(origin, dict) else {"peer": origin}

        def store() -> None:
            with self.kernel.sessions() as session, session.begin():
                deadletters.store(session, source=source, reason=reason, payload=raw, meta=meta)

        await asyncio.to_thread(store)


async def start_ingest(kernel: Kernel) -> Stopper:
    """HL7 MLLP listener (and MQTT when configured) in this process."""
    settings = get_monitoring_settings()
    ingest = Ingest(kernel, settings)
    stoppers: list[Stopper] = []
    if settings.hl7_port:
        server: MllpServer | MllpProcesses
        if settings.hl7_processes:
            if kernel.bus.durable:
                raise RuntimeError(
                    "TIANFU_HL7_PROCESSES relays to the in-process bus; with JetStream, run "
                    "`tianfu monitor listen` processes instead"
                )
            server = MllpProcesses(
                ingest.publish_now,
                ingest.reject,
                host=settings.hl7_host,
                port=settings.hl7_port,
                processes=settings.hl7_processes,
                partitions=settings.partitions,
            )
        else:
            server = MllpServer(
                ingest.accept,
                ingest.reject,
                take_report=ingest.accept_now,
                host=settings.hl7_host,
                port=settings.hl7_port,
            )
        await server.start()
        kernel.extensions["monitoring.mllp"] = server
        stoppers.append(server.stop)
        if kernel.settings.demo and settings.demo_feed:
            from tianfu.monitoring.demo import start_feed

            stoppers.append(await start_feed(kernel, host="127.0.0.1", port=server.port))
    if settings.mqtt_url:
        mqtt = MqttIngest(settings.mqtt_url, ingest.accept, ingest.reject)
        await mqtt.start()
        kernel.extensions["monitoring.mqtt"] = mqtt
        stoppers.append(mqtt.stop)

    async def stop() -> None:
        for stopper in reversed(stoppers):
            await stopper()

    return stop


async def start_live_view(kernel: Kernel) -> Stopper:
    """Keep every ward's latest bed states for this process's central-station pages."""
    wards: LiveWards = kernel.extensions.setdefault("monitoring.live", LiveWards())
    subscription = await kernel.bus.subscribe(
        f"{BED_SUBJECT}.>",
        f"monitoring-live-{uuid.uuid4().hex[:8]}",
        wards.on_event,
        max_deliver=1,
        linger_s=LINGER_S,
    )
    return subscription.stop


async def start_pipeline(kernel: Kernel) -> Stopper:
    """Scoring and alarms for every partition, unless separate ``tianfu worker`` processes do it."""
    settings = get_monitoring_settings()
    if settings.pipeline != "serve":

        async def nothing() -> None:
            return None

        return nothing
    pipeline = Pipeline(kernel, settings, model_source=partial(active_sepsis_model, kernel))
    await pipeline.start()
    kernel.extensions["monitoring.pipeline"] = pipeline
    return pipeline.stop


async def start_retention(kernel: Kernel) -> Stopper:
    """Fold old per-minute vital signs into hourly means and drop what is past retention, hourly."""
    from tianfu.monitoring.retention import run_forever

    task = asyncio.create_task(run_forever(kernel, get_monitoring_settings()), name="monitoring-retention")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


def active_sepsis_model(kernel: Kernel) -> tuple[Any, str]:
    """The sepsis model version the AI platform has active, and its version; (None, "") when off."""
    from tianfu.core.model_registry.service import active_model
    from tianfu.monitoring.ai import MODEL_NAME, load_model

    with kernel.sessions() as session, session.begin():
        active = active_model(session, MODEL_NAME)
    if active is None:
        return None, ""
    try:
        return load_model(active), active.version
    except FileNotFoundError:  # a checkout without the trained artefact still monitors, without sepsis risk
        return None, ""


def patient_panel(session: Session, principal: Principal, patient: Patient) -> PatientPanel | None:
    if not principal.can(Permission.CLINICAL_READ):
        return None
    from tianfu.monitoring.tables import VitalSample

    latest = session.scalar(
        select(VitalSample)
        .where(VitalSample.patient_id == patient.id)
        .order_by(VitalSample.observed_at.desc())
        .limit(1)
    )
    return PatientPanel(N_("Vital signs"), "monitoring/_panel.html", {"latest": latest, "patient": patient})


def latest_vitals(session: Session, patient_id: str, max_age_s: int) -> dict[str, Any] | None:
    """The patient's newest stored vital signs, if measured within ``max_age_s`` (for triage)."""
    from datetime import UTC, datetime, timedelta

    from tianfu.monitoring.tables import VitalSample

    row = session.scalar(
        select(VitalSample)
        .where(VitalSample.patient_id == patient_id)
        .where(VitalSample.observed_at >= datetime.now(UTC) - timedelta(seconds=max_age_s))
        .order_by(VitalSample.observed_at.desc())
        .limit(1)
    )
    if row is None:
        return None
    values = {
        name: getattr(row, name)
        for name in ("heart_rate", "spo2", "respiratory_rate", "systolic_bp", "temperature")
        if getattr(row, name) is not None
    }
    return {**values, "observed_at": row.observed_at, "source": "monitoring"} if values else None


CASE_PACKET_VITALS = ("heart_rate", "spo2", "respiratory_rate", "systolic_bp", "temperature", "news2")
CASE_PACKET_MAX_ALARMS = 20


def _hourly_means(session: Session, columns: list[Any], window: tuple[Any, ...]) -> dict[str, list[Any]]:
    """Each sign's hourly mean, [[hour, mean], ...], averaged by the database (a 1 Hz day is 86,400 rows)."""
    from sqlalchemy import func

    from tianfu.monitoring.tables import VitalSample

    if session.get_bind().dialect.name == "sqlite":
        hour: Any = func.strftime("%Y-%m-%dT%H:00:00+00:00", VitalSample.observed_at)
    else:
        hour = func.date_trunc("hour", VitalSample.observed_at)
    rows = session.execute(
        select(hour, *(func.avg(c) for c in columns)).where(*window).group_by(hour).order_by(hour)
    ).all()
    series: dict[str, list[Any]] = {}
    for row in rows:
        stamp = row[0] if isinstance(row[0], str) else row[0].astimezone(UTC).isoformat()
        for column, mean in zip(columns, row[1:], strict=True):
            if mean is not None:
                series.setdefault(column.key, []).append([stamp, round(float(mean), 1)])
    return series


def case_packet(session: Session, patient_id: str, since: datetime) -> CasePacketSection | None:
    """Vital-sign trends (first, last, min, max and hourly means per sign) and the alarms since ``since``."""
    from sqlalchemy import func

    from tianfu.monitoring.tables import AlarmEpisode, VitalSample

    columns = [getattr(VitalSample, name) for name in CASE_PACKET_VITALS]
    window = (VitalSample.patient_id == patient_id, VitalSample.observed_at >= since)
    stats = session.execute(
        select(
            func.count(VitalSample.id),
            *(func.min(c) for c in columns),
            *(func.max(c) for c in columns),
        ).where(*window)
    ).one()
    items: list[dict[str, Any]] = []
    hourly = _hourly_means(session, columns, window) if stats[0] else {}
    if stats[0]:
        first = session.scalar(select(VitalSample).where(*window).order_by(VitalSample.observed_at).limit(1))
        last = session.scalar(
            select(VitalSample).where(*window).order_by(VitalSample.observed_at.desc()).limit(1)
        )
        for index, name in enumerate(CASE_PACKET_VITALS):
            low, high = stats[1 + index], stats[1 + len(columns) + index]
            if low is None:
                continue
            items.append(
                {
                    "kind": "trend",
                    "vital": name,
                    "first": getattr(first, name),
                    "last": getattr(last, name),
                    "min": low,
                    "max": high,
                    "samples": stats[0],
                    "series": hourly.get(name, []),
                    "from": first.observed_at.isoformat() if first else None,
                    "to": last.observed_at.isoformat() if last else None,
                }
            )
    alarms = session.scalars(
        select(AlarmEpisode)
        .where(AlarmEpisode.patient_id == patient_id, AlarmEpisode.raised_at >= since)
        .order_by(AlarmEpisode.raised_at.desc())
        .limit(CASE_PACKET_MAX_ALARMS)
    ).all()
    items += [
        {
            "kind": "alarm",
            "condition": alarm.condition,
            "priority": alarm.priority,
            "state": alarm.state,
            "message": alarm.message,
            "value": alarm.value,
            "raised_at": alarm.raised_at.isoformat(),
        }
        for alarm in alarms
    ]
    if not items:
        return None
    return CasePacketSection("monitoring", N_("Vital signs"), items)


def seed_demo(kernel: Kernel) -> None:
    from tianfu.monitoring.demo import seed

    seed(kernel)


MODULE = TianfuModule(
    key="monitoring",
    shipped_models=ai.shipped_models,
    read_model_manifest=ai.read_model_manifest,
    ai_tasks=ai.ai_tasks,
    home_path="/monitoring",
    api_router=views.api,
    fhir_router=views.fhir,
    page_router=views.pages,
    templates_dir=Path(__file__).parent / "templates",
    static_dir=Path(__file__).parent / "static",
    model_modules=("tianfu.monitoring.tables",),
    cli=cli.app,
    cli_name="monitor",
    bench=cli.bench,
    services=(start_live_view, start_pipeline, start_ingest, start_retention),
    seed_demo=seed_demo,
    patient_panels=(patient_panel,),
    latest_vitals=latest_vitals,
    case_packet=case_packet,
)
