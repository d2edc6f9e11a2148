"""/api/v1/dead-letters: rejected input kept whole, for an admin to inspect and resolve."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from tianfu.core.deadletter import service
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.errors import NotFound
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import Page, RequestModel, ResponseModel
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)
Manager = Annotated[Principal, Depends(require(Permission.DEAD_LETTER_MANAGE))]


class DeadLetterOut(ResponseModel):
    id: str
    source: str
    reason: str
    payload: str
    payload_encoding: str
    meta: dict[str, Any]
    received_at: datetime
    resolved_at: datetime | None
    resolved_by: str
    resolution_note: str


class ResolveIn(RequestModel):
    note: str = ""


@router.get("/dead-letters", tags=["dead letters"], summary="Input that could not be accepted")
def list_dead_letters(
    kernel: KernelDep,
    session: DbDep,
    principal: Manager,
    source: Annotated[str | None, Query(max_length=40)] = None,
    include_resolved: bool = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Page[DeadLetterOut]:
    from sqlalchemy import func, select

    query = service.listing(source=source, unresolved_only=not include_resolved)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.scalars(query.limit(limit).offset(offset)).all()
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="dead_letter.search",
        action_type="R",
        resource_type="DeadLetter",
        purpose=principal.purpose,
        detail={"returned": len(rows)},
    )
    session.commit()
    return Page(
        items=[DeadLetterOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.post("/dead-letters/{dead_letter_id}/resolve", tags=["dead letters"], summary="Mark as dealt with")
def resolve(
    kernel: KernelDep, session: DbDep, principal: Manager, dead_letter_id: str, body: ResolveIn
) -> DeadLetterOut:
    row = session.get(DeadLetter, dead_letter_id)
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    service.resolve(session, row, by=principal.username, note=body.note)
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="dead_letter.resolve",
        action_type="U",
        resource_type="DeadLetter",
        resource_id=row.id,
        purpose=principal.purpose,
    )
    session.commit()
    return DeadLetterOut.model_validate(row)
