"""/api/v1: the audit trail for auditors, and "who accessed my record" for patients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.orm import Session

from tianfu.core.audit import service
from tianfu.core.audit.models import AuditRecord
from tianfu.core.audit.service import AuditLog
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import IsoDateTime, Page, ResponseModel
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


class AuditRecordOut(ResponseModel):
    seq: int
    recorded_at: datetime
    actor_user_id: str | None
    actor_username: str
    actor_role: str
    client_ip: str
    action: str
    action_type: str
    resource_type: str
    resource_id: str
    patient_ids: list[str]
    purpose: str
    outcome: int
    outcome_desc: str
    detail: dict[str, Any]
    hash: str


class AccessLogEntry(ResponseModel):
    """What a patient sees of an access to her record: who (name and role), when, what, why."""

    recorded_at: datetime
    actor_display: str
    actor_role: str
    action: str
    purpose: str
    outcome: int


class VerifyOut(ResponseModel):
    ok: bool
    checked: int
    last_seq: int
    problems: list[str]


def record_meta_access(
    session: Session, audit: AuditLog, principal: Principal, action: str, /, **detail: Any
) -> None:
    """Reading the audit trail is itself audited."""
    audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type="R",
        resource_type="AuditEvent",
        purpose=principal.purpose,
        patient_ids=[detail.pop("patient_id")] if "patient_id" in detail else [],
        detail={k: v for k, v in detail.items() if v is not None},
    )


@router.get("/audit/events", tags=["audit"], summary="Search the audit trail")
def search_events(
    kernel: KernelDep,
    session: DbDep,
    principal: Auditor,
    patient_id: Annotated[str | None, Query(max_length=36)] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="Action prefix, e.g. user. or patient.read")
    ] = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
    failed: bool | None = None,
    purpose: Annotated[str | None, Query(max_length=20)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AuditRecordOut]:
    query = service.search(
        patient_id=patient_id,
        actor_username=username,
        action_prefix=action,
        since=since,
        until=until,
        outcome_failed=failed,
        purpose=purpose,
    )
    total = service.count(session, query)
    rows = session.scalars(query.limit(limit).offset(offset)).all()
    items = [AuditRecordOut.model_validate(r) for r in rows]
    record_meta_access(
        session,
        kernel.audit,
        principal,
        "audit.search",
        username=username,
        action=action,
        returned=len(items),
        **({"patient_id": patient_id} if patient_id else {}),
    )
    session.commit()
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/audit/verify", tags=["audit"], summary="Verify the audit hash chain")
def verify(kernel: KernelDep, session: DbDep, principal: Auditor) -> VerifyOut:
    result = kernel.audit.verify(session)
    session.rollback()
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="audit.verify",
        action_type="E",
        resource_type="AuditEvent",
        outcome=0 if result.ok else 8,
        outcome_desc="; ".join(result.problems[:5]),
        purpose=principal.purpose,
        detail={"checked": result.checked},
    )
    session.commit()
    return VerifyOut(ok=result.ok, checked=result.checked, last_seq=result.last_seq, problems=result.problems)


def access_log_entries(
    session: Session, patient_id: str, limit: int, offset: int
) -> tuple[list[AccessLogEntry], int]:
    from tianfu.core.identity.models import User

    query = service.search(patient_id=patient_id)
    total = service.count(session, query)
    rows: list[AuditRecord] = list(session.scalars(query.limit(limit).offset(offset)))
    names = dict(
        session.execute(
            User.__table__.select()
            .with_only_columns(User.id, User.display_name)
            .where(User.id.in_({r.actor_user_id for r in rows if r.actor_user_id}))
        ).all()
    )
    entries = [
        AccessLogEntry(
            recorded_at=r.recorded_at,
            actor_display=names.get(r.actor_user_id or "", r.actor_username),
            actor_role=r.actor_role,
            action=r.action,
            purpose=r.purpose,
            outcome=r.outcome,
        )
        for r in rows
    ]
    return entries, total


@router.get("/audit/patients/{patient_id}", tags=["audit"], summary="Every access to one patient's record")
def patient_access_log(
    kernel: KernelDep,
    session: DbDep,
    principal: Auditor,
    patient_id: Annotated[str, Path(max_length=36)],
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AccessLogEntry]:
    entries, total = access_log_entries(session, patient_id, limit, offset)
    record_meta_access(session, kernel.audit, principal, "audit.patient_log", patient_id=patient_id)
    session.commit()
    return Page(items=entries, total=total, limit=limit, offset=offset)


@router.get("/me/access-log", tags=["audit"], summary="Who accessed my record (for patients)")
def my_access_log(
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.OWN_RECORD_READ))],
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AccessLogEntry]:
    if principal.patient_id is None:
        return Page(items=[], total=0, limit=limit, offset=offset)
    entries, total = access_log_entries(session, principal.patient_id, limit, offset)
    record_meta_access(session, kernel.audit, principal, "audit.own_log", patient_id=principal.patient_id)
    session.commit()
    return Page(items=entries, total=total, limit=limit, offset=offset)
