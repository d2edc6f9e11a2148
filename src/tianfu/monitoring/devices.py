"""The device registry: which monitor serves which bed, and through the bed, which patient.

A device that reports before anyone registered it is registered automatically, without a bed: its data
is kept and listed as unassociated until an administrator or nurse assigns it to a bed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Conflict, Invalid, NotFound
from tianfu.core.patients.models import Encounter, Location
from tianfu.monitoring.tables import MonitoringDevice


@dataclass(frozen=True)
class Placement:
    """Where a device's data belongs right now."""

    device_pk: str
    bed_id: str | None
    ward_id: str | None
    patient_id: str | None
    encounter_id: str | None


def find_or_register(
    session: Session, identifier: str, *, source: str, seen_at: datetime, kind: str | None = None
) -> MonitoringDevice:
    device = session.scalar(select(MonitoringDevice).where(MonitoringDevice.identifier == identifier))
    if device is None:
        device = MonitoringDevice(
            identifier=identifier,
            kind=kind or ("wearable" if source == "mqtt" else "monitor"),
            label=identifier,
            last_source=source,
        )
        session.add(device)
        session.flush()
    device.last_seen_at = seen_at
    device.last_source = source
    return device


def placement(session: Session, device: MonitoringDevice) -> Placement:
    if device.bed_id is None or not device.active:
        return Placement(device.id, None, None, None, None)
    bed = session.get(Location, device.bed_id)
    encounter = session.scalar(
        select(Encounter).where(Encounter.bed_id == device.bed_id, Encounter.status == "in-progress")
    )
    return Placement(
        device.id,
        device.bed_id,
        bed.parent_id if bed is not None else None,
        encounter.patient_id if encounter else None,
        encounter.id if encounter else None,
    )


def assign(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    device: MonitoringDevice,
    bed_id: str | None,
    organization_id: str | None,
) -> MonitoringDevice:
    """Put a device at a bed (or take it away with ``None``); one active device per bed."""
    if bed_id is not None:
        bed = session.get(Location, bed_id)
        if bed is None or bed.kind != "bed":
            raise NotFound(f"no bed {bed_id}")
        if organization_id is not None and bed.organization_id != organization_id:
            raise Invalid("that bed belongs to another institution")
        other = session.scalar(
            select(MonitoringDevice).where(
                MonitoringDevice.bed_id == bed_id,
                MonitoringDevice.active.is_(True),
                MonitoringDevice.id != device.id,
            )
        )
        if other is not None:
            raise Conflict(f"bed already has device {other.label or other.identifier}; remove it first")
        device.organization_id = bed.organization_id
    before = device.bed_id
    device.bed_id = bed_id
    audit.record(
        session,
        actor=actor,
        action="device.assign",
        action_type="U",
        resource_type="Device",
        resource_id=device.id,
        detail={"identifier": device.identifier, "from_bed": before, "to_bed": bed_id},
    )
    enqueue(
        session,
        "tianfu.monitoring.device.assigned",
        {"device_id": device.id, "identifier": device.identifier, "from_bed": before, "to_bed": bed_id},
    )
    return device


def devices(session: Session, *, organization_id: str | None) -> Sequence[MonitoringDevice]:
    stmt = select(MonitoringDevice).order_by(MonitoringDevice.identifier)
    if organization_id is not None:
        stmt = stmt.where(
            (MonitoringDevice.organization_id == organization_id) | MonitoringDevice.bed_id.is_(None)
        )
    return session.scalars(stmt).all()


def register(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    identifier: str,
    kind: str,
    label: str,
    manufacturer: str = "",
    model: str = "",
    organization_id: str | None = None,
) -> MonitoringDevice:
    if session.scalar(select(MonitoringDevice.id).where(MonitoringDevice.identifier == identifier)):
        raise Conflict(f"device {identifier} is already registered")
    device = MonitoringDevice(
        identifier=identifier,
        kind=kind,
        label=label or identifier,
        manufacturer=manufacturer,
        model=model,
        organization_id=organization_id,
        registered_at=utcnow(),
    )
    session.add(device)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="device.register",
        action_type="C",
        resource_type="Device",
        resource_id=device.id,
        detail={"identifier": identifier, "kind": kind},
    )
    return device
