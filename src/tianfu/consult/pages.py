"""Remote consultation's pages (/consult): the inviting and the invited side, and the auditor's view.

Pages read and write through :mod:`tianfu.consult.service` like the JSON API does (same checks, same
audit); forms post here and come back with a message, or, when the workflow refuses, the same page
again listing every failed gate. The discussion updates live through ``/consult/{id}/stream``: a
short, database-backed Server-Sent Events stream (new messages, status changes), so it works with
any bus and any number of server processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tianfu.consult import service
from tianfu.consult import workflow as wf
from tianfu.consult.tables import Consultation, ConsultMessage, OpinionVersion
from tianfu.core import i18n
from tianfu.core.audit.service import AuditLog
from tianfu.core.db import utcnow
from tianfu.core.errors import Forbidden, Invalid
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.i18n import _
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Organization, Patient
from tianfu.core.patients.service import PatientQuery, search_patients, staff
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal
from tianfu.web.rendering import localtime, redirect, render

router = APIRouter(prefix="/consult", include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Writer = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
Id = Annotated[str, Path(max_length=64)]
Short = Annotated[str, Form(max_length=300)]
Long = Annotated[str, Form(max_length=20000)]

STREAM_LIFETIME_S = 300.0  # the browser reconnects (EventSource) with Last-Event-ID
STREAM_POLL_S = 1.0
STREAM_LOOKBACK = 20  # messages re-read behind the count each poll
STREAM_HEARTBEAT_S = 15.0
WIZARD_STEPS = ("patient", "institution", "details", "consents", "review")
# Actions a plain form fires; submit, sign and the decision have their own routes.
FormAction = Literal["receive", "accept", "reject", "start", "hold", "resume", "cancel", "fail"]
STATUS_EN = {
    "draft": "Draft",
    "requested": "Requested",
    "received": "Received, under review",
    "accepted": "Accepted, to be scheduled",
    "rejected": "Rejected",
    "in-progress": "In progress",
    "on-hold": "On hold",
    "completed": "Opinion issued",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "entered-in-error": "Entered in error",
}


# ---- helpers -------------------------------------------------------------------------------------


def status_label(row: Consultation) -> str:
    """The business status (会诊业务状态) in the page language."""
    if i18n.current_language() == "zh_CN":
        return row.business_status
    if row.business_status == wf.DECIDED_BUSINESS_STATUS:
        return "Decision recorded by the inviting side"
    return STATUS_EN.get(row.status, row.status)


def refusal_messages(exc: Invalid) -> list[str]:
    """Every failed gate of a refusal, in the page language; the plain message otherwise."""
    errors = exc.extra.get("errors") or []
    zh = i18n.current_language() == "zh_CN"
    found = [
        f"{e.get('message_zh') if zh else e.get('message')} ({e.get('requirement')})"
        for e in errors
        if isinstance(e, dict)
    ]
    return found or [exc.detail]


@dataclass
class Directory:
    """Names for ids shown on a page (people, institutions, patients)."""

    users: dict[str, User]
    organizations: dict[str, Organization]
    patients: dict[str, Patient]

    def user(self, user_id: str | None) -> str:
        user = self.users.get(user_id or "")
        return user.display_name if user else ""

    def org(self, organization_id: str | None) -> str:
        org = self.organizations.get(organization_id or "")
        if org is None:
            return ""
        return org.name_en if org.name_en and i18n.current_language() == "en" else org.name

    def patient(self, patient_id: str) -> Patient | None:
        return self.patients.get(patient_id)


def directory(session: Session, rows: Sequence[Consultation], extra_users: Sequence[str] = ()) -> Directory:
    user_ids = {r.requester_id for r in rows} | {
        r.assigned_consultant_id for r in rows if r.assigned_consultant_id
    }
    user_ids |= set(extra_users)
    users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    organizations = {o.id: o for o in session.scalars(select(Organization))}
    patient_ids = {r.patient_id for r in rows}
    patients = (
        {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))}
        if patient_ids
        else {}
    )
    return Directory(users, organizations, patients)


def deadline_state(row: Consultation, now: datetime | None = None) -> str:
    """'overdue', 'due' (within the last quarter of the response window or 4 h), or ''."""
    if row.response_due_at is None or row.status not in (wf.TaskStatus.REQUESTED, wf.TaskStatus.RECEIVED):
        return ""
    now = now or utcnow()
    due = row.response_due_at if row.response_due_at.tzinfo else row.response_due_at.replace(tzinfo=UTC)
    if due <= now:
        return "overdue"
    return "due" if due - now <= timedelta(hours=4) else ""


def _partners(session: Session, principal: Principal) -> list[Organization]:
    """Institutions the caller's institution has an active cooperation agreement with (TC-01)."""
    own = principal.organization_id or ""
    found = []
    for org in session.scalars(
        select(Organization).where(Organization.id != own).order_by(Organization.code)
    ):
        agreement = service.agreement_between(session, own, org.id)
        if agreement is not None and agreement.status == wf.AgreementStatus.ACTIVE:
            found.append(org)
    return found


def _my_patients(session: Session, audit: AuditLog, principal: Principal) -> Sequence[Patient]:
    """Patients the physician has a care relationship with (the kernel's visibility rule)."""
    rows, _total = search_patients(session, audit, principal, PatientQuery(limit=200))
    return rows


def _message_json(message: ConsultMessage, names: Directory) -> dict[str, Any]:
    return {
        "id": message.id,
        "author": names.user(message.author_id),
        "institution": names.org(message.author_institution_id),
        "author_id": message.author_id,
        "body": message.body,
        "attachment_ids": list(message.attachment_ids or []),
        "sent_at": message.sent_at.isoformat(),
    }


# ---- lists ---------------------------------------------------------------------------------------


@router.get("")
def home(request: Request, kernel: KernelDep, session: DbDep, principal: Reader) -> HTMLResponse:
    mine = service.my_requests(session, kernel.audit, principal)
    queue = service.incoming(session, kernel.audit, principal)
    names = directory(session, [*mine, *queue])
    session.commit()
    return render(
        request,
        "consult/home.html",
        {
            "mine": mine,
            "incoming": queue,
            "names": names,
            "status_label": status_label,
            "deadline_state": deadline_state,
            "can_request": principal.role == Role.PHYSICIAN,
        },
    )


@router.get("/review")
def review_list(request: Request, kernel: KernelDep, session: DbDep, principal: Auditor) -> HTMLResponse:
    rows = service.review_list(session, kernel.audit, principal)
    names = directory(session, rows)
    session.commit()
    return render(
        request,
        "consult/review.html",
        {"rows": rows, "names": names, "status_label": status_label},
    )


@router.get("/review/{consultation_id}")
def review_detail(
    request: Request, kernel: KernelDep, session: DbDep, principal: Auditor, consultation_id: Id
) -> HTMLResponse:
    row = service.review_get(session, kernel.audit, principal, consultation_id)
    verified = service.verified_opinion(session, row.id)
    names = directory(session, [row], [h.actor_id for h in service.history(session, row.id)])
    context = {
        "row": row,
        "names": names,
        "history": service.history(session, row.id),
        "opinion": _opinion_view(verified),
        "status_label": status_label,
    }
    session.commit()
    return render(request, "consult/review_detail.html", context)


# ---- the new-request wizard ----------------------------------------------------------------------


@router.get("/new")
def new_request(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    patient_id: Annotated[str, Query(max_length=36)] = "",
) -> HTMLResponse:
    if principal.role != Role.PHYSICIAN:
        raise Forbidden("only a physician of the inviting institution can request a consultation")
    patients = _my_patients(session, kernel.audit, principal)
    chosen = next((p for p in patients if p.id == patient_id), None)
    context = {
        "step": "institution" if chosen else "patient",
        "steps": WIZARD_STEPS,
        "patients": patients,
        "patient": chosen,
        "partners": _partners(session, principal) if chosen else [],
        "titles": list(wf.ProfessionalTitle),
        "row": None,
    }
    session.commit()
    return render(request, "consult/wizard.html", context)


@router.post("/new")
def create_draft(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    patient_id: Annotated[str, Form(max_length=36)],
    invited_institution_id: Annotated[str, Form(max_length=36)],
    specialty: Annotated[str, Form(max_length=100)],
    title: Annotated[str, Form(max_length=2)] = "",
) -> Response:
    try:
        row = service.create_draft(
            session,
            kernel.audit,
            principal,
            patient_id=patient_id,
            invited_institution_id=invited_institution_id,
            fields=service.DraftFields(specialty=specialty.strip(), title=int(title) if title else None),
        )
    except (Invalid, ValueError) as exc:
        session.rollback()
        return redirect(
            "/consult/new?" + urlencode({"patient_id": patient_id}), f"⚠ {getattr(exc, 'detail', exc)}"
        )
    session.commit()
    return redirect(f"/consult/{row.id}/wizard/details")


@router.get("/{consultation_id}/wizard/{step}")
def wizard_step(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    step: Literal["institution", "details", "consents", "review"],
) -> Response:
    row = _own_draft(session, kernel, principal, consultation_id)
    return _render_wizard(request, session, principal, row, step)


def _own_draft(session: Session, kernel: Kernel, principal: Principal, consultation_id: str) -> Consultation:
    row = service.get(session, kernel.audit, principal, consultation_id)
    if row.requester_id != principal.user_id:
        raise Forbidden("only the inviting physician edits the request")
    return row


def _render_wizard(
    request: Request,
    session: Session,
    principal: Principal,
    row: Consultation,
    step: str,
    errors: list[str] | None = None,
) -> Response:
    if row.status != wf.TaskStatus.DRAFT:
        session.commit()
        return redirect(f"/consult/{row.id}")
    context = {
        "step": step,
        "steps": WIZARD_STEPS,
        "row": row,
        "patient": session.get(Patient, row.patient_id),
        "invited": session.get(Organization, row.invited_institution_id),
        "partners": _partners(session, principal),
        "titles": list(wf.ProfessionalTitle),
        "consents": [c for c in service.consents(session, row.id) if c.withdrawn_at is None],
        "errors": errors or [],
        "now": datetime.now(UTC),
    }
    session.commit()
    return render(request, "consult/wizard.html", context, status_code=422 if errors else 200)


def _when(text: str) -> datetime | None:
    """A datetime-local field (China time) as an aware datetime; empty → None."""
    if not text:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC) - timedelta(hours=8)
    return value


@router.post("/{consultation_id}/wizard/institution")
def save_institution(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    specialty: Annotated[str, Form(max_length=100)],
    title: Annotated[str, Form(max_length=2)] = "",
) -> Response:
    row = _own_draft(session, kernel, principal, consultation_id)
    try:
        service.update_draft(
            session,
            kernel.audit,
            principal,
            row.id,
            service.DraftFields(specialty=specialty.strip(), title=int(title) if title else None),
        )
    except (Invalid, ValueError) as exc:
        session.rollback()
        return redirect(f"/consult/{consultation_id}/wizard/institution", f"⚠ {getattr(exc, 'detail', exc)}")
    session.commit()
    return redirect(f"/consult/{consultation_id}/wizard/details")


@router.post("/{consultation_id}/wizard/details")
def save_details(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    reason: Annotated[str, Form(max_length=4000)],
    purpose: Annotated[str, Form(max_length=4000)],
    case_summary: Long,
    time_frame_earliest: Annotated[str, Form(max_length=40)] = "",
    time_frame_latest: Annotated[str, Form(max_length=40)] = "",
    priority: Annotated[Literal["routine", "urgent", "asap", "stat"], Form()] = "routine",
) -> Response:
    row = _own_draft(session, kernel, principal, consultation_id)
    try:
        fields = service.DraftFields(
            reason=reason.strip(),
            purpose=purpose.strip(),
            case_summary=case_summary.strip(),
            time_frame_earliest=_when(time_frame_earliest),
            time_frame_latest=_when(time_frame_latest),
            priority=priority,
        )
        service.update_draft(session, kernel.audit, principal, row.id, fields)
    except (Invalid, ValueError) as exc:
        session.rollback()
        return redirect(f"/consult/{consultation_id}/wizard/details", f"⚠ {getattr(exc, 'detail', exc)}")
    session.commit()
    return redirect(f"/consult/{consultation_id}/wizard/consents")


@router.post("/{consultation_id}/wizard/consents")
def save_consents(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    treatment_ref: Short = "",
    privacy_ref: Short = "",
    signed_by: Annotated[Literal["patient", "guardian", "close-relative"], Form()] = "patient",
    signer_name: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    row = _own_draft(session, kernel, principal, consultation_id)
    have = {c.kind for c in service.consents(session, row.id) if c.withdrawn_at is None}
    try:
        for kind, ref in (
            (wf.ConsentKind.TREATMENT.value, treatment_ref),
            (wf.ConsentKind.DATA_SHARING.value, privacy_ref),
        ):
            if ref.strip() and kind not in have:
                service.record_consent(
                    session,
                    kernel.audit,
                    principal,
                    row.id,
                    kind=kind,
                    signed_form_ref=ref.strip(),
                    signed_by=signed_by,
                    signer_name=signer_name.strip(),
                )
    except Invalid as exc:
        session.rollback()
        return redirect(f"/consult/{consultation_id}/wizard/consents", f"⚠ {exc.detail}")
    session.commit()
    return redirect(f"/consult/{consultation_id}/wizard/review")


@router.post("/{consultation_id}/submit")
def submit(
    request: Request, kernel: KernelDep, session: DbDep, principal: Writer, consultation_id: Id
) -> Response:
    row = _own_draft(session, kernel, principal, consultation_id)
    try:
        service.transition(session, kernel.audit, principal, row.id, wf.Action.SUBMIT)
    except Invalid as exc:
        row = service.load(session, principal, consultation_id)
        return _render_wizard(request, session, principal, row, "review", refusal_messages(exc))
    session.commit()
    return redirect(f"/consult/{consultation_id}", _("The request was submitted."))


# ---- one consultation ----------------------------------------------------------------------------


def _opinion_view(verified: service.VerifiedOpinion | None) -> dict[str, Any] | None:
    if verified is None:
        return None
    versions = []
    for row, result in zip(verified.rows, verified.chain.versions, strict=True):
        try:
            content = json.loads(row.canonical_content)
        except ValueError:
            content = {}
        versions.append(
            {"row": row, "content": content if isinstance(content, dict) else {}, "result": result}
        )
    return {"valid": verified.chain.valid, "problems": list(verified.chain.problems), "versions": versions}


def _consultant_choices(session: Session, row: Consultation, on: datetime) -> list[dict[str, Any]]:
    """The invited institution's consultants, each with the gates it would fail (TC-05, TC-03)."""
    snapshot = service.snapshot(session, row)
    choices = []
    for user in staff(session, organization_id=row.invited_institution_id, role=Role.CONSULTANT):
        refusals = wf.check_consultant(
            service.clinician(session, user.id), snapshot.invitation, row.invited_institution_id, on.date()
        )
        zh = i18n.current_language() == "zh_CN"
        choices.append({"user": user, "problems": [r.message_zh if zh else r.message_en for r in refusals]})
    return choices


def _render_detail(
    request: Request,
    kernel: Kernel,
    session: Session,
    principal: Principal,
    consultation_id: str,
    errors: list[str] | None = None,
) -> HTMLResponse:
    row = service.get(session, kernel.audit, principal, consultation_id)
    messages = service.messages(session, kernel.audit, principal, row.id)
    verified = service.read_opinion(session, kernel.audit, principal, row.id)
    history = service.history(session, row.id)
    names = directory(session, [row], [m.author_id for m in messages] + [h.actor_id for h in history])
    actions = [
        a.value for a in wf.available_actions(service.snapshot(session, row), service.actor_for(principal))
    ]
    now = utcnow()
    context = {
        "row": row,
        "names": names,
        "messages": messages,
        "message_json": [_message_json(m, names) for m in messages],
        "history": history,
        "opinion": _opinion_view(verified),
        "actions": actions,
        "is_requester": row.requester_id == principal.user_id,
        "is_assigned": row.assigned_consultant_id == principal.user_id,
        "consultants": _consultant_choices(session, row, now) if "accept" in actions else [],
        "consents": service.consents(session, row.id),
        "status_label": status_label,
        "deadline_state": deadline_state(row, now),
        "errors": errors or [],
        "open_for_messages": row.status not in service.CLOSED_FOR_MESSAGES,
    }
    session.commit()
    return render(request, "consult/detail.html", context, status_code=422 if errors else 200)


@router.get("/{consultation_id}")
def detail(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> HTMLResponse:
    return _render_detail(request, kernel, session, principal, consultation_id)


@router.post("/{consultation_id}/actions/{action}")
def act(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    action: FormAction,
    reason: Annotated[str, Form(max_length=4000)] = "",
    consultant_id: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    try:
        service.transition(
            session,
            kernel.audit,
            principal,
            consultation_id,
            wf.Action(action),
            reason=reason.strip() or None,
            consultant_id=consultant_id or None,
        )
    except Invalid as exc:
        session.rollback()
        return _render_detail(request, kernel, session, principal, consultation_id, refusal_messages(exc))
    session.commit()
    return redirect(f"/consult/{consultation_id}", _("Saved."))


@router.post("/{consultation_id}/decision")
def record_decision(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    decision: Annotated[str, Form(min_length=1, max_length=8000)],
) -> Response:
    try:
        service.transition(
            session,
            kernel.audit,
            principal,
            consultation_id,
            wf.Action.RECORD_DECISION,
            decision=decision.strip(),
        )
    except Invalid as exc:
        session.rollback()
        return _render_detail(request, kernel, session, principal, consultation_id, refusal_messages(exc))
    session.commit()
    return redirect(f"/consult/{consultation_id}#opinion", _("Your decision was recorded."))


@router.post("/{consultation_id}/messages")
def post_message(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    body: Annotated[str, Form(min_length=1, max_length=8000)],
) -> Response:
    try:
        service.post_message(session, kernel.audit, principal, consultation_id, body=body.strip())
    except Invalid as exc:
        session.rollback()
        return redirect(f"/consult/{consultation_id}#discussion", f"⚠ {exc.detail}")
    session.commit()
    return redirect(f"/consult/{consultation_id}#discussion")


# ---- the case packet -----------------------------------------------------------------------------


def iso_local(text: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A case-packet ISO-8601 time in China time, as the pages show every time."""
    if not isinstance(text, str) or not text:
        return ""
    try:
        return localtime(datetime.fromisoformat(text), fmt)
    except ValueError:
        return text


def _trend_chart(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An ECharts spec from the vital-sign section: full series when given, else first/min/max/last."""
    trends = [i for i in items if i.get("kind") == "trend"]
    if not trends:
        return None
    series = [i for i in trends if isinstance(i.get("series"), list) and i["series"]]
    if series:
        return {
            "type": "series",
            "series": [{"name": i.get("vital", ""), "data": i["series"]} for i in series],
        }
    return {
        "type": "range",
        "categories": [i.get("vital", "") for i in trends],
        "first": [i.get("first") for i in trends],
        "last": [i.get("last") for i in trends],
        "min": [i.get("min") for i in trends],
        "max": [i.get("max") for i in trends],
    }


@router.get("/{consultation_id}/packet")
def packet(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> HTMLResponse:
    row = service.get(session, kernel.audit, principal, consultation_id)
    session.commit()  # the read is audited even when the case packet is refused below
    try:
        sections = service.read_case_packet(session, kernel.audit, principal, row.id)
        refused = ""
    except Forbidden as exc:
        session.rollback()
        sections, refused = [], exc.detail
    row = service.load(session, principal, consultation_id)
    names = directory(session, [row])
    vitals = next((s for s in sections if s.module == "monitoring"), None)
    context = {
        "row": row,
        "names": names,
        "sections": sections,
        "refused": refused,
        "chart": _trend_chart(vitals.items) if vitals else None,
        "iso": iso_local,
        "status_label": status_label,
    }
    session.commit()
    return render(request, "consult/packet.html", context, status_code=403 if refused else 200)


# ---- the report ----------------------------------------------------------------------------------


def _ai_suggestions(session: Session, row: Consultation, principal: Principal, kernel: Kernel) -> list[str]:
    """AI outputs in the case packet, shown beside the editor as suggestions; never part of the form."""
    try:
        sections = service.read_case_packet(session, kernel.audit, principal, row.id)
    except Forbidden:
        session.rollback()
        return []
    found = []
    for section in sections:
        for item in section.items:
            for finding in item.get("findings") or []:
                probability = finding.get("probability")
                found.append(
                    f"{item.get('description') or item.get('modalities') or ''} · {finding.get('label')}"
                    + (f" ({probability:.0%})" if isinstance(probability, float) else "")
                )
            for condition in item.get("ai_conditions") or []:
                probability = condition.get("probability")
                found.append(
                    f"{_('Triage')} · {condition.get('name')}"
                    + (f" ({probability:.0%})" if isinstance(probability, float) else "")
                )
    return found


@router.get("/{consultation_id}/report")
def report(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, consultation_id: Id
) -> HTMLResponse:
    return _render_report(request, kernel, session, principal, consultation_id)


def _render_report(
    request: Request,
    kernel: Kernel,
    session: Session,
    principal: Principal,
    consultation_id: str,
    errors: list[str] | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    row = service.get(session, kernel.audit, principal, consultation_id)
    verified = service.read_opinion(session, kernel.audit, principal, row.id)
    is_assigned = row.assigned_consultant_id == principal.user_id
    opinion = _opinion_view(verified)
    can_sign = is_assigned and verified is None and row.status == wf.TaskStatus.IN_PROGRESS
    can_amend = (
        is_assigned and opinion is not None and opinion["valid"] and row.status == wf.TaskStatus.COMPLETED
    )
    session.commit()  # the reads above are audited whatever the case packet says below
    suggestions = _ai_suggestions(session, row, principal, kernel) if can_sign or can_amend else []
    row = service.load(session, principal, consultation_id)
    latest = opinion["versions"][-1]["content"] if opinion else {}
    names = directory(session, [row], [v["row"].signer_id for v in opinion["versions"]] if opinion else [])
    context = {
        "row": row,
        "names": names,
        "opinion": opinion,
        "can_sign": can_sign,
        "can_amend": can_amend,
        "pin_enrolled": (can_sign or can_amend) and service.has_signing_key(session, principal.user_id),
        "suggestions": suggestions,
        "form": form
        or {k: str(latest.get(k, "")) for k in ("findings", "diagnosis", "opinion", "recommendations")},
        "errors": errors or [],
        "status_label": status_label,
    }
    session.commit()
    return render(request, "consult/report.html", context, status_code=422 if errors else 200)


def _pin_message(exc: Invalid | Forbidden) -> list[str]:
    """The signing-PIN refusals in the page language (empty for any other refusal)."""
    code = exc.extra.get("code")
    if code == "pin_too_short":
        return [_("The signing PIN needs at least %(n)s characters.", n=service.PIN_MIN_LENGTH)]
    if code == "pin_not_set":
        return [_("Set your signing PIN first: enter it twice.")]
    if code == "pin_mismatch":
        return [_("The signing PIN and its repetition differ.")]
    if code == "wrong_signing_pin" and exc.extra.get("tries_left"):
        return [_("Wrong signing PIN: %(left)s tries left.", left=exc.extra["tries_left"])]
    if code == "password_required":
        return [_("Enrolling a new signing key needs your login password.")]
    if code in {"wrong_signing_pin", "signing_key_locked"}:
        return [
            _(
                "Your signing key is locked after too many wrong PINs: ask an administrator to unlock it, "
                "or enrol a new key with a new PIN."
            )
        ]
    return []


@router.post("/{consultation_id}/report")
def sign_report(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    consultation_id: Id,
    opinion: Annotated[str, Form(max_length=20000)] = "",
    findings: Long = "",
    diagnosis: Annotated[str, Form(max_length=4000)] = "",
    recommendations: Long = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
    amend: Annotated[str, Form(max_length=1)] = "",
    signing_pin: Annotated[str, Form(max_length=200)] = "",
    signing_pin_confirmation: Annotated[str | None, Form(max_length=200)] = None,
    new_signing_key: Annotated[str, Form(max_length=1)] = "",
    password: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    content = {
        "findings": findings.strip(),
        "diagnosis": diagnosis.strip(),
        "opinion": opinion.strip(),
        "recommendations": recommendations.strip(),
    }
    try:
        if not content["opinion"]:
            raise Invalid(_("The opinion (诊疗意见) is required."))
        password_confirmed = bool(new_signing_key) and service.confirm_login_password(
            session, kernel.auth, principal, password
        )
        if new_signing_key and not password_confirmed:
            raise Forbidden("a new signing key needs your login password", code="password_required")
        if amend:
            if not reason.strip():
                raise Invalid(_("An amendment needs a reason."))
            service.amend_opinion(
                session,
                kernel.audit,
                kernel.secret_box,
                principal,
                consultation_id,
                content,
                reason.strip(),
                pin=signing_pin,
                pin_confirmation=signing_pin_confirmation or None,
                new_key=bool(new_signing_key),
                password_confirmed=password_confirmed,
            )
        else:
            service.sign_opinion(
                session,
                kernel.audit,
                kernel.secret_box,
                principal,
                consultation_id,
                content,
                pin=signing_pin,
                pin_confirmation=signing_pin_confirmation or None,
                new_key=bool(new_signing_key),
                password_confirmed=password_confirmed,
            )
    except (Invalid, Forbidden) as exc:
        if isinstance(exc, Forbidden) and exc.extra.get("code") not in {
            "wrong_signing_pin",
            "signing_key_locked",
            "password_required",
        }:
            raise
        session.rollback()
        return _render_report(
            request,
            kernel,
            session,
            principal,
            consultation_id,
            _pin_message(exc) or (refusal_messages(exc) if isinstance(exc, Invalid) else [exc.detail]),
            content,
        )
    session.commit()
    message = _("The amendment was signed.") if amend else _("The opinion was signed.")
    return redirect(f"/consult/{consultation_id}/report", message)


# ---- live updates --------------------------------------------------------------------------------


def _poll(kernel: Kernel, consultation_id: str, start: int) -> tuple[list[dict[str, Any]], str, int]:
    """Messages from the ``start``-th on, the status line and the number of opinion versions."""
    with kernel.sessions() as session:
        row = session.get(Consultation, consultation_id)
        if row is None:
            return [], "", 0
        new = session.scalars(
            select(ConsultMessage)
            .where(ConsultMessage.consultation_id == consultation_id)
            .order_by(ConsultMessage.sent_at, ConsultMessage.id)
            .offset(start)
        ).all()
        names = directory(session, [], [m.author_id for m in new])
        versions = session.scalar(
            select(func.count(OpinionVersion.id)).where(OpinionVersion.consultation_id == consultation_id)
        )
        return [_message_json(m, names) for m in new], f"{row.status}|{row.business_status}", versions or 0


async def events(
    kernel: Kernel,
    consultation_id: str,
    seen: int,
    *,
    lifetime_s: float = STREAM_LIFETIME_S,
    poll_s: float = STREAM_POLL_S,
    heartbeat_s: float = STREAM_HEARTBEAT_S,
) -> AsyncIterator[str]:
    """SSE frames: ``message`` per new message (id: how many seen), ``status`` when the status changes."""
    loop = asyncio.get_running_loop()
    started = last_sent = loop.time()
    state: tuple[str, int] | None = None
    sent: set[str] | None = None  # ids already on the page or pushed
    yield "retry: 2000\n\n"
    while loop.time() - started < lifetime_s:
        # Read a few messages back: on PostgreSQL a message can commit after a later-stamped one was
        # pushed, landing behind the count; the ids tell what is new.
        start = max(0, seen - STREAM_LOOKBACK)
        listed, status, versions = await asyncio.to_thread(_poll, kernel, consultation_id, start)
        if sent is None:
            sent = {m["id"] for m in listed[: seen - start]}
        new = [m for m in listed if m["id"] not in sent]
        for message in new:
            sent.add(message["id"])
            seen += 1
            yield f"id: {seen}\nevent: message\ndata: {json.dumps(message, ensure_ascii=False)}\n\n"
            last_sent = loop.time()
        if state is not None and (status, versions) != state:
            payload = {"status": status.split("|")[0], "business_status": status.split("|", 1)[-1]}
            yield f"id: {seen}\nevent: status\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
            last_sent = loop.time()
        state = (status, versions)
        if loop.time() - last_sent >= heartbeat_s:
            yield ": keep-alive\n\n"
            last_sent = loop.time()
        await asyncio.sleep(poll_s)


@router.get(
    "/{consultation_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream(
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    consultation_id: Id,
    seen: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    last_event_id: Annotated[str, Header(max_length=20)] = "",
) -> StreamingResponse:
    row = service.get(session, kernel.audit, principal, consultation_id)  # checks and audits who watches
    session.commit()
    if last_event_id.isdigit():
        seen = max(seen, int(last_event_id))
    return StreamingResponse(
        events(kernel, row.id, seen),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
