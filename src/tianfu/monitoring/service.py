"""Monitoring's reads and writes for people: ward views, a patient's vital signs and alarms, nursing
observations, monitoring orders, and alarm commands. Every patient-data access is checked against the
care relationship and audited through the kernel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Forbidden, Invalid, NotFound
from tianfu.core.patients.models import Encounter, Location, Patient
from tianfu.core.patients.service import require_access
from tianfu.core.security.permissions import Role
from tianfu.core.security.principal import Principal
from tianfu.monitoring.ingest.report import DeviceReport, partition_of, report_subject
from tianfu.monitoring.pipeline import COMMAND_SUBJECT
from tianfu.monitoring.tables import (
    AlarmEpisode,
    AlarmEvent,
    MonitoringDevice,
    MonitoringProfile,
    NursingObservation,
    VitalSample,
)

PATIENT_SUBJECT = "tianfu.monitoring.patient"  # .changed: orders or charting changed; workers reload


def check_ward(session: Session, principal: Principal, ward_id: str) -> Location:
    """The central station of a ward is for the staff assigned to that ward."""
    ward = session.get(Location, ward_id)
    if ward is None or ward.kind != "ward":
        raise NotFound(f"no ward {ward_id}")
    if ward_id not in principal.ward_ids:
        raise Forbidden("the central station of a ward is for the staff of that ward")
    return ward


@dataclass(frozen=True)
class BedRow:
    bed: Location
    patient: Patient | None
    encounter: Encounter | None
    device: MonitoringDevice | None


def ward_beds(
    session: Session, audit: AuditLog, principal: Principal, ward_id: str
) -> tuple[Location, list[BedRow]]:
    ward = check_ward(session, principal, ward_id)
    beds = session.scalars(
        select(Location).where(Location.parent_id == ward_id, Location.kind == "bed").order_by(Location.code)
    ).all()
    encounters = {
        e.bed_id: e
        for e in session.scalars(
            select(Encounter).where(Encounter.ward_id == ward_id, Encounter.status == "in-progress")
        )
    }
    devices = {
        d.bed_id: d
        for d in session.scalars(
            select(MonitoringDevice).where(
                MonitoringDevice.bed_id.in_([b.id for b in beds]), MonitoringDevice.active.is_(True)
            )
        )
    }
    rows = []
    for bed in beds:
        encounter = encounters.get(bed.id)
        rows.append(BedRow(bed, encounter.patient if encounter else None, encounter, devices.get(bed.id)))
    audit.record(
        session,
        actor=principal.actor,
        action="monitoring.ward_view",
        action_type="R",
        resource_type="Location",
        resource_id=ward_id,
        patient_ids=[r.patient.id for r in rows if r.patient],
        purpose=principal.purpose,
    )
    return ward, rows


def patient_samples(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    patient_id: str,
    *,
    hours: int,
    resolution: str | None,
) -> Sequence[VitalSample]:
    """Stored samples of the last ``hours``: per minute, hourly means, or both (``None``) in time order."""
    _, decision = require_access(session, audit, principal, patient_id, action="monitoring.vitals_read")
    since = utcnow() - timedelta(hours=hours)
    stmt = select(VitalSample).where(VitalSample.patient_id == patient_id, VitalSample.observed_at >= since)
    if resolution is not None:
        stmt = stmt.where(VitalSample.resolution == resolution)
    rows = session.scalars(stmt.order_by(VitalSample.observed_at)).all()
    audit.record(
        session,
        actor=principal.actor,
        action="monitoring.vitals_read",
        action_type="R",
        resource_type="Observation",
        patient_ids=[patient_id],
        purpose=decision.purpose,
        detail={"hours": hours, "resolution": resolution, "returned": len(rows)},
    )
    return rows


def patient_alarms(
    session: Session, audit: AuditLog, principal: Principal, patient_id: str, *, limit: int = 100
) -> list[tuple[AlarmEpisode, list[AlarmEvent]]]:
    _, decision = require_access(session, audit, principal, patient_id, action="monitoring.alarms_read")
    episodes = session.scalars(
        select(AlarmEpisode)
        .where(AlarmEpisode.patient_id == patient_id)
        .order_by(AlarmEpisode.raised_at.desc())
        .limit(limit)
    ).all()
    events: dict[str, list[AlarmEvent]] = {}
    if episodes:
        for event in session.scalars(
            select(AlarmEvent)
            .where(AlarmEvent.episode_id.in_([e.id for e in episodes]))
            .order_by(AlarmEvent.at, AlarmEvent.id)
        ):
            events.setdefault(event.episode_id, []).append(event)
    audit.record(
        session,
        actor=principal.actor,
        action="monitoring.alarms_read",
        action_type="R",
        resource_type="AlarmEpisode",
        patient_ids=[patient_id],
        purpose=decision.purpose,
        detail={"returned": len(episodes)},
    )
    return [(e, events.get(e.id, [])) for e in episodes]


def alarm_command(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    episode_id: str,
    *,
    action: str,
    seconds: int = 120,
    partitions: int,
) -> AlarmEpisode:
    """Acknowledge or pause an alarm: checked and audited here, carried out by the worker holding the bed."""
    episode = session.get(AlarmEpisode, episode_id)
    if episode is None:
        raise NotFound(f"no alarm {episode_id}")
    if episode.patient_id is not None:
        require_access(session, audit, principal, episode.patient_id, action=f"monitoring.alarm_{action}")
    elif episode.bed_id is not None:
        bed = session.get(Location, episode.bed_id)
        if bed is None or bed.parent_id not in principal.ward_ids:
            raise Forbidden("that alarm belongs to a bed outside your wards")
    if episode.state == "cleared":
        raise Invalid("the alarm has already cleared")
    device = session.get(MonitoringDevice, episode.device_id) if episode.device_id else None
    partition = partition_of(device.identifier if device else "", partitions)
    enqueue(
        session,
        f"{COMMAND_SUBJECT}.p{partition}",
        {
            "episode_id": episode.id,
            "action": action,
            "user_id": principal.user_id,
            "seconds": seconds,
            "at": utcnow().isoformat(),
        },
    )
    audit.record(
        session,
        actor=principal.actor,
        action=f"monitoring.alarm_{action}",
        action_type="U",
        resource_type="AlarmEpisode",
        resource_id=episode.id,
        patient_ids=[episode.patient_id] if episode.patient_id else [],
        purpose=principal.purpose,
        detail={"condition": episode.condition, "priority": episode.priority},
    )
    return episode


CHARTED_KINDS = {"consciousness": {"A", "C", "V", "P", "U"}, "oxygen": {"air", "oxygen"}}


def chart_observation(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    patient_id: str,
    *,
    kind: str,
    value: str,
    observed_at: datetime | None,
    partitions: int,
) -> NursingObservation:
    """A nurse charts consciousness (ACVPU) or air/oxygen: stored, and sent to the patient's worker."""
    _, decision = require_access(session, audit, principal, patient_id, action="monitoring.chart")
    if principal.role not in {Role.NURSE, Role.PHYSICIAN}:
        raise Forbidden("nurses and physicians chart observations")
    if value not in CHARTED_KINDS.get(kind, set()):
        raise Invalid(f"{kind} must be one of {sorted(CHARTED_KINDS.get(kind, ()))}")
    at = observed_at or utcnow()
    if at > utcnow() + timedelta(minutes=5):
        raise Invalid("an observation cannot be in the future")
    row = NursingObservation(
        patient_id=patient_id, kind=kind, value=value, observed_at=at, recorded_by_id=principal.user_id
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="monitoring.chart",
        action_type="C",
        resource_type="Observation",
        resource_id=row.id,
        patient_ids=[patient_id],
        purpose=decision.purpose,
        detail={"kind": kind, "value": value},
    )
    charted = (
        {"consciousness": [value, at.isoformat()]}
        if kind == "consciousness"
        else {"on_oxygen": [value == "oxygen", at.isoformat()]}
    )
    publish_patient_report(
        session,
        patient_id,
        DeviceReport(
            device_id="",
            source="charting",
            message_id=str(uuid.uuid4()),
            received_at=utcnow(),
            charted=charted,
        ),
        partitions=partitions,
    )
    return row


def publish_patient_report(
    session: Session, patient_id: str, report: DeviceReport, *, partitions: int
) -> None:
    """Send a report about a patient to the worker of the patient's bed: under the bed's monitor when it
    has one (so the bed's data stays in one partition), otherwise as manual entry for the patient."""
    encounter = session.scalar(
        select(Encounter).where(Encounter.patient_id == patient_id, Encounter.status == "in-progress")
    )
    device = None
    if encounter is not None and encounter.bed_id is not None:
        device = session.scalar(
            select(MonitoringDevice).where(
                MonitoringDevice.bed_id == encounter.bed_id,
                MonitoringDevice.active.is_(True),
                MonitoringDevice.kind != "manual",
            )
        )
    report.device_id = device.identifier if device else f"manual:{patient_id}"
    enqueue(session, report_subject(report.device_id, partitions), report.to_data())


def set_profile(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    patient_id: str,
    *,
    population: str | None,
    spo2_scale: int | None,
    limits: dict[str, float | None] | None,
    partitions: int,
) -> MonitoringProfile:
    """Monitoring orders. SpO2 Scale 2 is a clinical decision: only a physician may order it (RCP)."""
    _, decision = require_access(session, audit, principal, patient_id, action="monitoring.profile")
    profile = session.get(MonitoringProfile, patient_id) or MonitoringProfile(patient_id=patient_id)
    session.add(profile)
    changed: dict[str, Any] = {}
    if population is not None:
        if population not in {"adult", "paediatric"}:
            raise Invalid("population is adult or paediatric")
        changed["population"] = population
        profile.population = population
    if spo2_scale is not None and spo2_scale != profile.spo2_scale:
        if spo2_scale not in (1, 2):
            raise Invalid("SpO2 scale is 1 or 2")
        if principal.role != Role.PHYSICIAN:
            raise Forbidden("only a physician may order SpO2 Scale 2 (hypercapnic respiratory failure)")
        profile.spo2_scale = spo2_scale
        profile.spo2_scale_ordered_by_id = principal.user_id
        profile.spo2_scale_ordered_at = utcnow()
        changed["spo2_scale"] = spo2_scale
    if limits is not None:
        if principal.role not in {Role.PHYSICIAN, Role.NURSE}:
            raise Forbidden("alarm limits are set by the patient's physician or nurse")
        profile.limits = {str(k): (None if v is None else float(v)) for k, v in limits.items()}
        changed["limits"] = profile.limits
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="monitoring.profile",
        action_type="U",
        resource_type="MonitoringProfile",
        resource_id=patient_id,
        patient_ids=[patient_id],
        purpose=decision.purpose,
        detail={"changed": changed},
    )
    enqueue(session, f"{PATIENT_SUBJECT}.changed", {"patient_id": patient_id, "changed": sorted(changed)})
    return profile
