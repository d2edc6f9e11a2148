"""Consultations leaving Tianfu: as FHIR for the participants and auditors, and for the regulator.

``/fhir/R4`` (errors are OperationOutcome):

- ``GET /fhir/R4/ServiceRequest/{id}`` and ``GET /fhir/R4/Task/{id}``: the order and its fulfilment.
- ``GET /fhir/R4/Task/{id}/$everything``: a ``collection`` Bundle with every resource of the consultation
  (see :mod:`tianfu.consult.fhir`) and the Practitioner and Organization resources they reference; the
  Patient is referenced, read at ``/fhir/R4/Patient/{id}`` by those allowed to.

Who: the consultation's participants (everybody else gets 404, its existence is not told) and auditors
(every read audited as ``consult.review.fhir``); other roles 403 (``consult.record.read``).

``GET /api/v1/consult/regulator/export`` (TC-12, SEC-10): the 省级监管平台's own account (role ``regulator``,
permission ``consult.regulator_export`` and nothing else) reads, page by page, every consultation that
changed state in ``[since, until)``, as a ``searchset`` Bundle or NDJSON of FHIR resources. What it sees
is minimised (PIPL art. 6, 51):

- the patient as a keyed pseudonym (HMAC-SHA256 of the patient id under the server's secret: the same
  patient has the same pseudonym in every export, and cannot be re-identified without the key; this is
  de-identification 去标识化, not anonymisation), sex and a ten-year age band at the request;
- institutions (Organization) and physicians (Practitioner: name, licence number, title, specialty; no
  telephone), request, priority, mode, specialty, timestamps, every state change (who, when, from, to),
  the response deadline, the consents' state (active, withdrawn, missing; not the forms), whether the
  opinion is signed, how many versions, whether the signatures verify now, whether the decision is
  recorded and when, how many messages;
- the consultation's audit trail (who did what when, with outcome), without network addresses;
- never free text: no reason, purpose, case summary, message, opinion, decision or refusal reason.

Each export is audited as its own action (``consult.regulator.export``: who, the period, the page, how
many consultations and which, naming the patients so they see it in their access log).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tianfu.consult import fhir, service
from tianfu.consult.tables import (
    Consultation,
    ConsultConsent,
    ConsultMessage,
    ConsultStatusChange,
)
from tianfu.core.audit.models import AuditRecord
from tianfu.core.db import utcnow
from tianfu.core.errors import Invalid, NotFound
from tianfu.core.fhir import translators
from tianfu.core.fhir.router import FHIR_ERRORS, FhirResponse
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import FHIR_MEDIA_TYPE, PROBLEM_RESPONSES
from tianfu.core.http.schemas import IsoDateTime
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Organization, Patient
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal

NDJSON_MEDIA_TYPE = "application/fhir+ndjson"
_RESOURCE = {
    "description": "A FHIR resource or Bundle",
    "content": {FHIR_MEDIA_TYPE: {"schema": {"type": "object"}}},
}

fhir_router = APIRouter(
    prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse, responses=FHIR_ERRORS
)
regulator_router = APIRouter(
    prefix="/api/v1/consult/regulator", tags=["consult"], responses=PROBLEM_RESPONSES
)

RecordReader = Annotated[Principal, Depends(require(Permission.CONSULT_RECORD_READ))]
Regulator = Annotated[Principal, Depends(require(Permission.CONSULT_REGULATOR_EXPORT))]
Id = Annotated[str, Path(max_length=64)]


# ---- reading ---------------------------------------------------------------------------------------


def _open(
    session: Session, kernel: Kernel, principal: Principal, consultation_id: str, what: str
) -> Consultation:
    """The consultation for a participant (404 otherwise) or an auditor; the read is audited."""
    if principal.can(Permission.AUDIT_READ):
        row = session.get(Consultation, consultation_id)
        action = "consult.review.fhir"
    else:
        row = service.load(session, principal, consultation_id)
        action = "consult.fhir.read"
    if row is None:
        raise NotFound(f"no consultation {consultation_id}")
    kernel.audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type="R",
        resource_type=service.RESOURCE,
        resource_id=row.id,
        patient_ids=[row.patient_id],
        purpose=principal.purpose,
        detail={"fhir": what},
    )
    return row


def _history(session: Session, consultation_id: str) -> Sequence[ConsultStatusChange]:
    return service.history(session, consultation_id)


def _messages(session: Session, consultation_id: str) -> Sequence[ConsultMessage]:
    return session.scalars(
        select(ConsultMessage)
        .where(ConsultMessage.consultation_id == consultation_id)
        .order_by(ConsultMessage.sent_at, ConsultMessage.id)
    ).all()


def _audit_records(session: Session, consultation_ids: Sequence[str]) -> Sequence[AuditRecord]:
    return session.scalars(
        select(AuditRecord)
        .where(AuditRecord.resource_type == service.RESOURCE, AuditRecord.resource_id.in_(consultation_ids))
        .order_by(AuditRecord.seq)
    ).all()


def _referenced(resources: Iterable[Any], resource_type: str) -> set[str]:
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str) and reference.startswith(f"{resource_type}/"):
                found.add(reference.split("/", 1)[1])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(list(resources))
    return found


def directory(
    session: Session, resources: Sequence[dict[str, Any]], *, minimised: bool = False
) -> list[dict[str, Any]]:
    """The Practitioner and Organization resources ``resources`` reference (the regulator's without
    telephone numbers)."""
    users = session.scalars(select(User).where(User.id.in_(_referenced(resources, "Practitioner")))).all()
    orgs = session.scalars(
        select(Organization).where(Organization.id.in_(_referenced(resources, "Organization")))
    ).all()
    found = [
        translators.practitioner(u) for u in sorted(users, key=lambda u: u.username) if u.role != Role.PATIENT
    ]
    found += [translators.organization(o) for o in sorted(orgs, key=lambda o: o.code)]
    if minimised:
        for resource in found:
            resource.pop("telecom", None)
            resource.pop("address", None)
    return found


def _record(session: Session, row: Consultation) -> fhir.ConsultationRecord:
    return fhir.ConsultationRecord(
        row=row,
        history=_history(session, row.id),
        messages=_messages(session, row.id),
        consents=service.consents(session, row.id),
        opinions=service.opinion_versions(session, row.id),
        audit=_audit_records(session, [row.id]),
    )


# ---- /fhir/R4 --------------------------------------------------------------------------------------


@fhir_router.get(
    "/ServiceRequest/{consultation_id}",
    responses={200: _RESOURCE},
    summary="A consultation request as ServiceRequest (participants, auditors)",
)
def read_service_request(
    kernel: KernelDep, session: DbDep, principal: RecordReader, consultation_id: Id
) -> FhirResponse:
    row = _open(session, kernel, principal, consultation_id, "ServiceRequest")
    resource = fhir.service_request(row, service.consents(session, row.id))
    session.commit()
    return FhirResponse(resource)


@fhir_router.get(
    "/Task/{consultation_id}",
    responses={200: _RESOURCE},
    summary="A consultation's fulfilment as Task (participants, auditors)",
)
def read_task(
    kernel: KernelDep, session: DbDep, principal: RecordReader, consultation_id: Id
) -> FhirResponse:
    row = _open(session, kernel, principal, consultation_id, "Task")
    versions = service.opinion_versions(session, row.id)
    resource = fhir.task(row, _history(session, row.id), versions[-1] if versions else None)
    session.commit()
    return FhirResponse(resource)


@fhir_router.get(
    "/Task/{consultation_id}/$everything",
    responses={200: _RESOURCE},
    summary="Everything about a consultation: a collection Bundle (participants, auditors)",
)
def everything(
    request: Request, kernel: KernelDep, session: DbDep, principal: RecordReader, consultation_id: Id
) -> FhirResponse:
    row = _open(session, kernel, principal, consultation_id, "$everything")
    resources = fhir.consultation_resources(_record(session, row))
    resources += directory(session, resources)
    result = fhir.bundle(str(request.base_url), resources, now=utcnow())
    session.commit()
    return FhirResponse(result)


# ---- the regulator ---------------------------------------------------------------------------------


def pseudonym(kernel: Kernel, patient_id: str) -> str:
    key = hmac.new(kernel.secret_key.encode(), b"tianfu-regulator-pseudonym-v1", hashlib.sha256).digest()
    return "p-" + hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:40]


def age_band(birth_date: date | None, at: datetime) -> tuple[int, int] | None:
    if birth_date is None:
        return None
    moment = at.date()
    age = moment.year - birth_date.year - ((moment.month, moment.day) < (birth_date.month, birth_date.day))
    low = max(0, age) // 10 * 10
    return low, low + 9


def _summary_extensions(session: Session, row: Consultation, message_count: int) -> list[dict[str, Any]]:
    base = "urn:tianfu:fhir:StructureDefinition/"
    verified = service.verified_opinion(session, row.id)
    opinion: list[dict[str, Any]] = [{"url": "signed", "valueBoolean": verified is not None}]
    if verified is not None:
        opinion += [
            {"url": "versions", "valueInteger": len(verified.rows)},
            {"url": "signatureValid", "valueBoolean": verified.chain.valid},
            {"url": "firstSignedAt", "valueDateTime": fhir.iso(verified.rows[0].signed_at)},
            {"url": "lastSignedAt", "valueDateTime": fhir.iso(verified.latest.signed_at)},
            {"url": "signer", "valueReference": {"reference": f"Practitioner/{verified.latest.signer_id}"}},
        ]
    consents: list[ConsultConsent] = list(service.consents(session, row.id))
    states = []
    for kind in ("treatment", "patient-privacy"):
        latest = [c for c in consents if c.kind == kind]
        state = "missing" if not latest else "inactive" if latest[-1].withdrawn_at else "active"
        states.append({"url": kind, "valueCode": state})
    decision: list[dict[str, Any]] = [{"url": "recorded", "valueBoolean": row.decided_at is not None}]
    if row.decided_at is not None:
        decision.append({"url": "at", "valueDateTime": fhir.iso(row.decided_at)})
    return [
        {"url": base + "consult-opinion-summary", "extension": opinion},
        {"url": base + "consult-consent-states", "extension": states},
        {"url": base + "consult-decision", "extension": decision},
        {"url": base + "consult-message-count", "valueInteger": message_count},
        {"url": base + "consult-mode", "valueCode": row.mode},
        *([{"url": base + "consult-specialty", "valueString": row.specialty}] if row.specialty else []),
        {
            "url": base + "consult-institutions",
            "extension": [
                {
                    "url": "inviting",
                    "valueReference": {"reference": f"Organization/{row.inviting_institution_id}"},
                },
                {
                    "url": "invited",
                    "valueReference": {"reference": f"Organization/{row.invited_institution_id}"},
                },
            ],
        },
    ]


def regulator_resources(
    kernel: Kernel, session: Session, rows: Sequence[Consultation]
) -> list[dict[str, Any]]:
    """The minimised resources of ``rows`` (see the module docstring), directory entries included."""
    resources: list[dict[str, Any]] = []
    patients = {
        p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_({r.patient_id for r in rows})))
    }
    seen_patients: set[str] = set()
    audit_by_consultation: dict[str, list[AuditRecord]] = {}
    for record in _audit_records(session, [r.id for r in rows]):
        audit_by_consultation.setdefault(record.resource_id, []).append(record)
    message_counts = dict(
        session.execute(
            select(ConsultMessage.consultation_id, func.count())
            .where(ConsultMessage.consultation_id.in_([r.id for r in rows]))
            .group_by(ConsultMessage.consultation_id)
        ).all()
    )
    for row in rows:
        patient = patients[row.patient_id]
        alias = pseudonym(kernel, row.patient_id)
        reference = {"reference": f"Patient/{alias}"}
        history = _history(session, row.id)
        resources.append(
            fhir.task(
                row,
                history,
                patient_reference=reference,
                minimised=True,
                extensions=_summary_extensions(session, row, int(message_counts.get(row.id, 0))),
            )
        )
        if alias not in seen_patients:
            seen_patients.add(alias)
            resources.append(
                fhir.pseudonymous_patient(alias, patient.gender, age_band(patient.birth_date, row.created_at))
            )
        resources += [fhir.transition_provenance(row, h, minimised=True) for h in history]
        resources += [
            fhir.audit_event(row, r, patient_reference=reference)
            for r in audit_by_consultation.get(row.id, [])
        ]
    return resources + directory(session, resources, minimised=True)


def _period_query(since: datetime, until: datetime) -> Any:
    changed = (
        select(ConsultStatusChange.consultation_id)
        .where(ConsultStatusChange.at >= since, ConsultStatusChange.at < until)
        .distinct()
    )
    return select(Consultation).where(Consultation.id.in_(changed))


@regulator_router.get(
    "/export",
    summary="Regulator (省级监管平台): consultations that changed state in [since, until), minimised FHIR",
    responses={
        200: {
            "description": "A searchset Bundle, or NDJSON (one FHIR resource a line; the next page in Link)",
            "content": {
                FHIR_MEDIA_TYPE: {"schema": {"type": "object"}},
                NDJSON_MEDIA_TYPE: {"schema": {"type": "string"}},
            },
        }
    },
    response_class=Response,
)
def regulator_export(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Regulator,
    since: Annotated[IsoDateTime, Query(description="ISO date-time with a time zone, inclusive")],
    until: Annotated[IsoDateTime | None, Query(description="exclusive; default now")] = None,
    format: Annotated[Literal["bundle", "ndjson"], Query(description="bundle or ndjson")] = "bundle",
    count: Annotated[int, Query(alias="_count", ge=1, le=200)] = 50,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)] = 0,
) -> Response:
    end = until or utcnow()
    if since >= end:
        raise Invalid("since must be before until")
    query = _period_query(since, end)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Consultation.created_at, Consultation.id).limit(count).offset(offset)
    ).all()
    resources = regulator_resources(kernel, session, rows)
    kernel.audit.record(
        session,
        actor=principal.actor,
        action="consult.regulator.export",
        action_type="R",
        resource_type=service.RESOURCE,
        patient_ids=[r.patient_id for r in rows],
        purpose=principal.purpose,
        detail={
            "since": fhir.iso(since),
            "until": fhir.iso(end),
            "format": format,
            "offset": offset,
            "count": len(rows),
            "total": total,
            "consultations": [r.id for r in rows],
        },
    )
    session.commit()
    base = str(request.base_url).rstrip("/")

    def page(at: int) -> str:
        params = {
            "since": fhir.iso(since),
            "until": fhir.iso(end),
            "format": format,
            "_count": count,
            "_offset": at,
        }
        return f"{base}{regulator_router.prefix}/export?{urlencode(params)}"

    links = [{"relation": "self", "url": page(offset)}]
    if offset + count < total:
        links.append({"relation": "next", "url": page(offset + count)})
    if format == "ndjson":
        body = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in resources)
        headers = {
            "x-total-count": str(total),
            "link": ", ".join(f'<{x["url"]}>; rel="{x["relation"]}"' for x in links),
        }
        return Response(body.encode("utf-8"), media_type=NDJSON_MEDIA_TYPE, headers=headers)
    result = fhir.bundle(
        str(request.base_url), resources, now=utcnow(), bundle_type="searchset", total=total, links=links
    )
    return FhirResponse(result)
