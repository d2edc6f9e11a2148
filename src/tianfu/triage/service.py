"""Triage sessions: who may start, read and decide them; every read and write is audited.

A patient triages herself (self-service: never a final level); a nurse triages a walk-in or a registered
patient at the desk, confirms or overrides the AI's level and department with a reason, re-triages when
vital signs change, and sends the patient on. The status changes happen here and nowhere else:
interviewing -> waiting -> confirmed -> sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.errors import Conflict, Forbidden, Invalid, NotFound
from tianfu.core.model_outputs import service as outputs
from tianfu.core.model_outputs.models import ModelOutput
from tianfu.core.model_registry import service as registry
from tianfu.core.patients.models import Patient
from tianfu.core.patients.service import require_access
from tianfu.core.plugins import latest_vitals
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal
from tianfu.triage import interview as engine
from tianfu.triage import urgency
from tianfu.triage.ai import inquiry_path
from tianfu.triage.catalogue import registry_name
from tianfu.triage.departments import (
    CLASSIFIER_NAME,
    DepartmentRouter,
    departments,
    load_benchmark_profiles,
    load_cmekg_knowledge,
    load_router_params,
)
from tianfu.triage.inquiry import Answer
from tianfu.triage.tables import TriageAssessment, TriageSession

MODULE = "triage"
OPEN_STATUSES = ("interviewing", "waiting", "confirmed")


def default_model(language: str, age_years: float | None) -> str:
    """English: MDD (12 adult conditions). Chinese: MZ-10's paediatric diseases for children, else DXY's."""
    if language == "en":
        return "mdd"
    return "mz10" if age_years is not None and age_years < 14 else "dxy"


def _age(birth: date | None) -> float | None:
    if birth is None:
        return None
    return round((datetime.now(UTC).date() - birth).days / 365.25, 1)


def start(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    *,
    text: str,
    patient_id: str | None = None,
    visitor_label: str = "",
    language: str = "zh",
    age_years: float | None = None,
    sex: str | None = None,
    pain_score: int | None = None,
    vitals: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> TriageSession:
    if principal.role == Role.PATIENT:
        if principal.patient_id is None:
            raise Forbidden("this account is not linked to a patient record")
        if patient_id not in (None, principal.patient_id):
            raise Forbidden("a patient may only triage herself")
        patient_id, channel = principal.patient_id, "self_service"
        vitals = None  # nobody measured them: a self-service result never carries a level
    elif principal.can(Permission.CLINICAL_WRITE):
        channel = "nurse"
        if patient_id is None and not visitor_label.strip():
            raise Invalid("name the patient: a registered patient_id, or a visitor_label for a walk-in")
    else:
        raise Forbidden(f"your role ({principal.role}) may not triage")
    patient: Patient | None = None
    if patient_id is not None:
        patient, _ = require_access(session, audit, principal, patient_id, action="triage.session.create")
        if age_years is None:
            age_years = _age(patient.birth_date)
        if sex is None and patient.gender in ("male", "female"):
            sex = patient.gender
        if channel == "nurse" and not vitals:
            vitals = _monitored_vitals(session, patient_id)
    model_name = model or default_model(language, age_years)
    active = registry.active_model(session, registry_name(model_name))
    if active is None:
        raise Invalid(
            f"the triage model {model_name} is switched off by the hospital's AI governance; "
            "please see the triage nurse"
        )
    try:
        state = engine.start(
            model_name,
            channel,  # type: ignore[arg-type]
            text=text,
            language=language,
            age_years=age_years,
            sex=sex,
            pain_score=pain_score,
            vitals=vitals,
            model_path=inquiry_path(active),
        )
    except KeyError as exc:
        raise Invalid(str(exc.args[0])) from exc
    except FileNotFoundError as exc:  # an imported version whose files were removed
        raise Invalid(f"the triage model's files are missing: {exc.filename}") from exc
    row = TriageSession(
        organization_id=principal.organization_id or (patient.managing_organization_id if patient else None),
        patient_id=patient_id,
        visitor_label=visitor_label.strip(),
        channel=channel,
        state=state.to_json(),
        created_by_id=principal.user_id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="triage.session.create",
        action_type="C",
        resource_type="TriageSession",
        resource_id=row.id,
        patient_ids=[patient_id] if patient_id else [],
        purpose=principal.purpose,
        detail={"channel": channel, "model": model_name},
    )
    _after_change(session, audit, principal, row, state)
    return row


MONITORED_VITALS_MAX_AGE_S = 15 * 60  # older measurements are not the patient's state now


def _monitored_vitals(session: Session, patient_id: str) -> dict[str, Any] | None:
    """A monitored patient's latest vital signs, from whichever module measures them (through the kernel)."""
    latest = latest_vitals(session, patient_id, MONITORED_VITALS_MAX_AGE_S)
    if latest is None:
        return None
    fields = ("heart_rate", "spo2", "respiratory_rate", "systolic_bp", "temperature")
    return {k: round(float(latest[k]), 1) for k in fields if latest.get(k) is not None} or None


def _visible(
    session: Session, audit: AuditLog, principal: Principal, row: TriageSession, action: str
) -> None:
    if principal.role == Role.PATIENT:
        if row.patient_id is None or row.patient_id != principal.patient_id:
            raise NotFound(f"no triage session {row.id}")
        return
    if not principal.can(Permission.CLINICAL_READ):
        raise Forbidden(f"your role ({principal.role}) may not read triage sessions")
    if row.patient_id is not None:
        require_access(session, audit, principal, row.patient_id, action=action)
    elif row.organization_id not in (None, principal.organization_id):
        raise NotFound(f"no triage session {row.id}")


def _load(
    session: Session, audit: AuditLog, principal: Principal, session_id: str, action: str
) -> TriageSession:
    """The triage session, if it exists and the caller may see it."""
    row = session.get(TriageSession, session_id)
    if row is None:
        raise NotFound(f"no triage session {session_id}")
    _visible(session, audit, principal, row, action)
    return row


def get(session: Session, audit: AuditLog, principal: Principal, session_id: str) -> TriageSession:
    row = _load(session, audit, principal, session_id, "triage.session.read")
    audit.record(
        session,
        actor=principal.actor,
        action="triage.session.read",
        action_type="R",
        resource_type="TriageSession",
        resource_id=row.id,
        patient_ids=[row.patient_id] if row.patient_id else [],
        purpose=principal.purpose,
    )
    return row


def _update_interview(
    session: Session, audit: AuditLog, principal: Principal, session_id: str, change: str, **detail: Any
) -> tuple[TriageSession, engine.Interview]:
    row = _load(session, audit, principal, session_id, "triage.session.update")
    if row.status != "interviewing":
        raise Conflict("the interview is over; a nurse can re-triage with new vital signs")
    audit.record(
        session,
        actor=principal.actor,
        action=f"triage.session.{change}",
        action_type="U",
        resource_type="TriageSession",
        resource_id=row.id,
        patient_ids=[row.patient_id] if row.patient_id else [],
        purpose=principal.purpose,
        detail=detail,
    )
    return row, engine.Interview.from_json(row.state)


def add_text(
    session: Session, audit: AuditLog, principal: Principal, session_id: str, text: str
) -> TriageSession:
    row, state = _update_interview(session, audit, principal, session_id, "text")
    new_state = engine.add_text(state, text)
    _after_change(session, audit, principal, row, new_state)
    return row


def answer(
    session: Session, audit: AuditLog, principal: Principal, session_id: str, symptom: str, value: Answer
) -> TriageSession:
    row, state = _update_interview(session, audit, principal, session_id, "answer", symptom=symptom)
    try:
        new_state = engine.answer(state, symptom, value)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    _after_change(session, audit, principal, row, new_state)
    return row


def finish(session: Session, audit: AuditLog, principal: Principal, session_id: str) -> TriageSession:
    row, state = _update_interview(session, audit, principal, session_id, "finish")
    _after_change(session, audit, principal, row, engine.finish(state))
    return row


def _department_router(session: Session) -> DepartmentRouter:
    """Routing with the question classifier the AI platform has active, or without one when it is off."""
    from tianfu.triage.ai import load_router

    active = registry.active_model(session, CLASSIFIER_NAME)
    if active is None:
        return _router_without_classifier()
    return load_router(active)


@cache
def _router_without_classifier() -> DepartmentRouter:
    return DepartmentRouter(
        load_cmekg_knowledge() + load_benchmark_profiles(), load_router_params(), use_classifier=False
    )


def _after_change(
    session: Session, audit: AuditLog, principal: Principal, row: TriageSession, state: engine.Interview
) -> None:
    row.state = state.to_json()
    if not state.finished:
        return
    result = engine.result(state, router=_department_router(session))
    row.result = result.to_json()
    row.status = "waiting"
    row.completed_at = utcnow()
    row.level = result.urgency["level"]
    row.department_code = result.departments[0]["code"] if result.departments else ""
    top = result.conditions[0] if result.conditions else None
    output = outputs.record_output(
        session,
        audit,
        actor=principal.actor,
        module=MODULE,
        task="triage",
        model_name=registry_name(result.model),
        model_version=result.model_version,
        input_ref=f"triage_session/{row.id}",
        output={
            "conditions": [(c.name, c.probability) for c in result.conditions],
            "department": row.department_code,
            "level": row.level,
            "suggested_level": result.urgency["suggested_level"],
            "go_to_emergency_desk": result.urgency["go_to_emergency_desk"],
        },
        label=f"{row.level or '-'}/{row.department_code}",
        score=top.probability if top else None,
        patient_id=row.patient_id,
        input_features={
            "symptoms": list(result.symptoms_present),
            "symptom_count": len(result.symptoms_present),
            "absent": list(result.symptoms_absent),
        },
    )
    row.ai_output_id = output.id
    session.add(
        TriageAssessment(
            session_id=row.id,
            kind="ai",
            level=row.level,
            suggested_level=result.urgency["suggested_level"],
            department_code=row.department_code,
            inputs={
                "vitals": state.vitals,
                "pain_score": state.pain_score,
                "rules": result.urgency["rules_version"],
            },
            created_by_id=principal.user_id,
        )
    )
    enqueue(
        session,
        "tianfu.triage.completed",
        {
            "session_id": row.id,
            "patient_id": row.patient_id,
            "level": row.level,
            "department": row.department_code,
            "emergency_desk": result.urgency["go_to_emergency_desk"],
        },
    )


def queue(
    session: Session, audit: AuditLog, principal: Principal, *, limit: int = 100
) -> Sequence[TriageSession]:
    """Open sessions of the caller's institution, most urgent first: level Ⅰ..Ⅳ, then red-flag
    self-service patients, then the rest; oldest first within a level."""
    urgency_order = case((TriageSession.level.is_(None), 5), else_=TriageSession.level)
    rows = session.scalars(
        select(TriageSession)
        .where(TriageSession.status.in_(OPEN_STATUSES))
        .where(TriageSession.organization_id == principal.organization_id)
        .order_by(urgency_order, TriageSession.created_at)
        .limit(limit)
    ).all()
    audit.record(
        session,
        actor=principal.actor,
        action="triage.queue.read",
        action_type="R",
        resource_type="TriageSession",
        patient_ids=sorted({r.patient_id for r in rows if r.patient_id}),
        purpose=principal.purpose,
        detail={"count": len(rows)},
    )
    return rows


def assessments(session: Session, row: TriageSession) -> Sequence[TriageAssessment]:
    return session.scalars(
        select(TriageAssessment)
        .where(TriageAssessment.session_id == row.id)
        .order_by(TriageAssessment.created_at)
    ).all()


def _department_codes() -> set[str]:
    return {d.code for d in departments()}


def decide(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    session_id: str,
    *,
    level: int,
    department_code: str,
    reason: str = "",
) -> TriageSession:
    """The nurse's decision: confirm the suggestion or override it with a reason (TRI-02)."""
    row = _load(session, audit, principal, session_id, "triage.decide")
    if row.status not in ("waiting", "confirmed"):
        raise Conflict(f"a session that is {row.status} cannot be decided")
    if level not in (1, 2, 3, 4):
        raise Invalid("level is 1 (Ⅰ) to 4 (Ⅳ)")
    if department_code not in _department_codes():
        raise Invalid(f"unknown department {department_code!r}")
    state = engine.Interview.from_json(row.state)
    rules = engine.assess_urgency(state)
    floor = rules.suggested_level
    changed = level != row.level or department_code != row.department_code
    if changed and not reason.strip():
        raise Invalid("an override needs a reason")
    if floor is not None and level > int(floor) and not reason.strip():
        raise Invalid("a level below the rules' suggestion needs a reason")
    session.add(
        TriageAssessment(
            session_id=row.id,
            kind="nurse",
            level=level,
            suggested_level=int(floor) if floor is not None else None,
            department_code=department_code,
            reason=reason.strip(),
            inputs={"vitals": state.vitals, "pain_score": state.pain_score, "rules": rules.rules_version},
            created_by_id=principal.user_id,
        )
    )
    if row.ai_output_id:
        output = session.get(ModelOutput, row.ai_output_id)
        if output is not None:
            outputs.record_feedback(
                session,
                audit,
                actor=principal.actor,
                output=output,
                verdict="agree" if not changed else "disagree",
                corrected_label="" if not changed else f"{level}/{department_code}",
                comment=reason.strip(),
            )
    row.level = level
    row.department_code = department_code
    row.status = "confirmed"
    audit.record(
        session,
        actor=principal.actor,
        action="triage.decide",
        action_type="U",
        resource_type="TriageSession",
        resource_id=row.id,
        patient_ids=[row.patient_id] if row.patient_id else [],
        purpose=principal.purpose,
        detail={"level": level, "department": department_code, "override": changed},
    )
    return row


def record_vitals(
    session: Session,
    audit: AuditLog,
    principal: Principal,
    session_id: str,
    *,
    vitals: Mapping[str, Any],
    pain_score: int | None = None,
) -> TriageSession:
    """New vital signs at the desk or while waiting: a new assessment, never an overwrite (TRI-04).
    A rules level more urgent than the level in force raises it at once."""
    row = _load(session, audit, principal, session_id, "triage.vitals")
    if row.status == "sent":
        raise Conflict("the patient has been sent on")
    # A self-service patient who reaches the desk is a desk patient from now on.
    state = replace(engine.Interview.from_json(row.state), channel="nurse")
    previous_input = engine.urgency_input(state)
    previous = urgency.assess(previous_input)
    merged = {**state.vitals, **{k: v for k, v in vitals.items() if v is not None}}
    state = replace(
        state, vitals=merged, pain_score=pain_score if pain_score is not None else state.pain_score
    )
    new_vitals = engine.vital_signs(merged) or urgency.VitalSigns()
    # The rules on the new values, and the 2011 principle (worse while waiting: up one level).
    reassessed = min(
        (engine.assess_urgency(state), urgency.reassess(previous, previous_input, new_vitals)), key=_rank
    )
    suggested = reassessed.suggested_level
    row.state = state.to_json()
    if suggested is not None and (row.level is None or int(suggested) < row.level):
        row.level = int(suggested)
    if row.result is not None:
        row.result = {**row.result, "urgency": engine.urgency_json(reassessed)}
    session.add(
        TriageAssessment(
            session_id=row.id,
            kind="retriage",
            level=row.level,
            suggested_level=int(suggested) if suggested is not None else None,
            department_code=row.department_code,
            inputs={"vitals": merged, "pain_score": state.pain_score, "rules": reassessed.rules_version},
            created_by_id=principal.user_id,
        )
    )
    audit.record(
        session,
        actor=principal.actor,
        action="triage.vitals",
        action_type="U",
        resource_type="TriageSession",
        resource_id=row.id,
        patient_ids=[row.patient_id] if row.patient_id else [],
        purpose=principal.purpose,
        detail={"level": row.level},
    )
    return row


def _rank(result: urgency.UrgencyResult) -> int:
    return int(result.suggested_level) if result.suggested_level is not None else 9


def send(session: Session, audit: AuditLog, principal: Principal, session_id: str) -> TriageSession:
    row = _load(session, audit, principal, session_id, "triage.send")
    if row.status != "confirmed":
        raise Conflict("confirm the level and department before sending the patient on")
    row.status = "sent"
    row.sent_at = utcnow()
    audit.record(
        session,
        actor=principal.actor,
        action="triage.send",
        action_type="U",
        resource_type="TriageSession",
        resource_id=row.id,
        patient_ids=[row.patient_id] if row.patient_id else [],
        purpose=principal.purpose,
        detail={"department": row.department_code, "level": row.level},
    )
    enqueue(
        session,
        "tianfu.triage.sent",
        {
            "session_id": row.id,
            "patient_id": row.patient_id,
            "level": row.level,
            "department": row.department_code,
        },
    )
    return row
