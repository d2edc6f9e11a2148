"""The optional live session (FHIR Appointment + AppointmentResponse): one side proposes a slot, the
other books or declines it. A booked slot becomes the consultation's ``scheduled_at``.

Proposals are made once the consultation is accepted or in progress, by either participant; only a
participant of the *other* institution answers. Booking a slot supersedes every other proposal and an
earlier booking (rescheduling); declined and superseded ones are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.consult import service
from tianfu.consult import workflow as wf
from tianfu.consult.tables import ConsultAppointment
from tianfu.core.audit.service import AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Forbidden, Invalid, NotFound
from tianfu.core.security.principal import Principal

SCHEDULABLE = frozenset({wf.TaskStatus.ACCEPTED, wf.TaskStatus.IN_PROGRESS})
LONGEST_SESSION = timedelta(hours=8)


def check_slot(start: datetime, end: datetime, now: datetime) -> None:
    """A slot in the future, ending after it starts, at most eight hours long."""
    if end <= start:
        raise Invalid("the session must end after it starts")
    if end - start > LONGEST_SESSION:
        raise Invalid("a live session lasts at most eight hours")
    if start < now:
        raise Invalid("the session cannot start in the past")


def propose(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    consultation_id: str,
    *,
    start: datetime,
    end: datetime,
    note: str = "",
) -> ConsultAppointment:
    row = service.load(session, principal, consultation_id)
    if row.status not in SCHEDULABLE:
        raise Invalid(f"a live session is scheduled once the consultation is accepted, not {row.status}")
    check_slot(start, end, utcnow())
    appointment = ConsultAppointment(
        consultation_id=row.id,
        proposed_by_id=principal.user_id,
        proposer_institution_id=principal.organization_id,
        start=start,
        end=end,
        note=note,
        status="proposed",
        created_at=utcnow(),
    )
    session.add(appointment)
    session.flush()
    service.audit_consultation(
        session,
        audit,
        principal,
        row,
        "consult.appointment.propose",
        "C",
        {"appointment": appointment.id, "start": start.isoformat(), "end": end.isoformat()},
    )
    enqueue(
        session,
        "tianfu.consult.appointment-proposed",
        {"consultation_id": row.id, "appointment_id": appointment.id, "start": start.isoformat()},
    )
    return appointment


def respond(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    consultation_id: str,
    appointment_id: str,
    *,
    accept: bool,
) -> ConsultAppointment:
    row = service.load(session, principal, consultation_id)
    appointment = session.get(ConsultAppointment, appointment_id)
    if appointment is None or appointment.consultation_id != row.id:
        raise NotFound(f"no appointment {appointment_id} in this consultation")
    if principal.organization_id == appointment.proposer_institution_id:
        raise Forbidden("the other institution answers a proposed session")
    if appointment.status != "proposed":
        raise Invalid(f"the proposal was already answered ({appointment.status})")
    if row.status not in SCHEDULABLE:
        raise Invalid(f"the consultation is {row.status}; it takes no live session")
    if accept and appointment.start < utcnow():
        raise Invalid("the proposed slot has passed; propose a new one")
    appointment.status = "booked" if accept else "declined"
    appointment.responded_by_id = principal.user_id
    appointment.responded_at = utcnow()
    if accept:
        row.scheduled_at = appointment.start
        # One session at a time: the booked slot replaces any other proposal or earlier booking.
        for other in appointments(session, row.id):
            if other.id != appointment.id and other.status in ("proposed", "booked"):
                other.status = "superseded"
    service.audit_consultation(
        session,
        audit,
        principal,
        row,
        "consult.appointment.book" if accept else "consult.appointment.decline",
        "U",
        {"appointment": appointment.id},
    )
    enqueue(
        session,
        "tianfu.consult.appointment-" + ("booked" if accept else "declined"),
        {"consultation_id": row.id, "appointment_id": appointment.id, "start": appointment.start.isoformat()},
    )
    return appointment


def appointments(session: Session, consultation_id: str) -> Sequence[ConsultAppointment]:
    return session.scalars(
        select(ConsultAppointment)
        .where(ConsultAppointment.consultation_id == consultation_id)
        .order_by(ConsultAppointment.created_at, ConsultAppointment.id)
    ).all()
