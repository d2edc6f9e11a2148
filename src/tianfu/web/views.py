"""Pages for people: sign-in, home, patients, user administration, audit, account.

Pages use the same services and the same permission checks as the JSON API; forms carry the session's
CSRF token. A request from htmx (``HX-Request``) gets only the fragment it asked for.
"""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tianfu.core import i18n
from tianfu.core.audit import service as audit_service
from tianfu.core.audit.views import access_log_entries, record_meta_access
from tianfu.core.db import utcnow
from tianfu.core.deadletter import service as deadletters
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from tianfu.core.http.deps import (
    PUBLIC,
    SESSION_COOKIE,
    DbDep,
    KernelDep,
    client_ip,
    optional_principal,
    require,
    resolve_auth_session,
)
from tianfu.core.i18n import _
from tianfu.core.identity import service as identity
from tianfu.core.identity import totp
from tianfu.core.identity.models import AuthSession, User
from tianfu.core.kernel import Kernel
from tianfu.core.patients import service as patients
from tianfu.core.patients.models import Encounter, Location, Patient
from tianfu.core.plugins import CAPABILITIES, installed_modules
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal
from tianfu.web.rendering import local_name, localtime, module_link, redirect, render

router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "tianfu_login_csrf"
Signed = Annotated[Principal, Depends(require(Permission.ACCOUNT_SELF))]
Reader = Annotated[Principal, Depends(require(Permission.PATIENT_READ))]
AdtClerk = Annotated[Principal, Depends(require(Permission.ENCOUNTER_WRITE))]
UserReader = Annotated[Principal, Depends(require(Permission.USER_READ))]
UserManager = Annotated[Principal, Depends(require(Permission.USER_MANAGE))]
Auditor = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _set_session_cookie(response: Response, kernel: Kernel, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", secure=kernel.settings.cookie_secure, path="/"
    )


# --- language, sign-in, second factor, sign-out ------------------------------------------------------


@router.get("/lang/{code}", dependencies=[Depends(PUBLIC)])
def switch_language(request: Request, code: str, next: str | None = None) -> Response:
    response = redirect(
        _safe_next(
            next or request.headers.get("referer", "/").split(str(request.base_url).rstrip("/"), 1)[-1]
        )
    )
    if code in i18n.LANGUAGES:
        response.set_cookie(i18n.LANG_COOKIE, code, max_age=365 * 86400, samesite="lax", path="/")
    return response


@router.get("/login", dependencies=[Depends(PUBLIC)])
def login_page(
    request: Request,
    principal: Annotated[Principal | None, Depends(optional_principal)],
    next: str | None = None,
) -> Response:
    if principal is not None:
        return redirect(_safe_next(next))
    return _login_form(request, next=_safe_next(next))


def _login_form(
    request: Request, *, next: str, error: str = "", username: str = "", status: int = 200
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {"next": next, "error": error, "username": username, "login_csrf": token},
        status_code=status,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
    return response


@router.post("/login", dependencies=[Depends(PUBLIC)])
def login(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    login_csrf: Annotated[str, Form(max_length=64)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    target = _safe_next(next)
    if not login_csrf or login_csrf != request.cookies.get(LOGIN_CSRF_COOKIE):
        return _login_form(
            request,
            next=target,
            username=username,
            status=400,
            error=_("The sign-in form expired. Please try again."),
        )
    outcome = kernel.auth.login(
        session,
        username=username,
        password=password,
        kind="web",
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    session.commit()
    if outcome.status == "locked":
        until = localtime(outcome.locked_until, "%H:%M")
        return _login_form(
            request,
            next=target,
            username=username,
            status=423,
            error=_("Too many failed attempts. The account is locked until %(time)s.", time=until),
        )
    if outcome.status == "inactive":
        return _login_form(
            request,
            next=target,
            username=username,
            status=403,
            error=_("This account is deactivated. Please contact the administrator."),
        )
    if outcome.status == "invalid" or outcome.token is None:
        return _login_form(
            request, next=target, username=username, status=401, error=_("Wrong username or password.")
        )
    step = {"mfa_required": "/login/mfa", "mfa_enrolment_required": "/login/enrol"}.get(outcome.status)
    response = redirect(f"{step}?next={quote(target)}" if step else target)
    _set_session_cookie(response, kernel, outcome.token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _pending(request: Request, kernel: Kernel, session: Session) -> AuthSession | None:
    auth = resolve_auth_session(request, kernel, session)
    return auth if auth is not None and auth.mfa_pending else None


@router.get("/login/mfa", dependencies=[Depends(PUBLIC)])
def mfa_page(request: Request, kernel: KernelDep, session: DbDep, next: str | None = None) -> Response:
    if _pending(request, kernel, session) is None:
        return redirect("/login")
    return render(request, "login_mfa.html", {"next": _safe_next(next), "error": ""})


@router.post("/login/mfa", dependencies=[Depends(PUBLIC)])
def mfa_submit(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    code: Annotated[str, Form(max_length=12)],
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    auth = _pending(request, kernel, session)
    if auth is None:
        return redirect("/login")
    outcome = kernel.auth.complete_second_factor(
        session, auth, code, client_ip=client_ip(request), user_agent=request.headers.get("user-agent", "")
    )
    session.commit()
    if outcome.status == "locked":
        return redirect("/login", _("Too many failed attempts. The account is locked for a while."))
    if outcome.status != "ok" or outcome.token is None:
        return render(
            request,
            "login_mfa.html",
            {"next": _safe_next(next), "error": _("Wrong code. Try again.")},
            status_code=401,
        )
    response = redirect(_safe_next(next))
    _set_session_cookie(response, kernel, outcome.token)
    return response


@router.get("/login/enrol", dependencies=[Depends(PUBLIC)])
def enrol_page(request: Request, kernel: KernelDep, session: DbDep, next: str | None = None) -> Response:
    auth = _pending(request, kernel, session)
    if auth is None:
        return redirect("/login")
    user = auth.user
    if user.totp_enabled:
        return redirect(f"/login/mfa?next={quote(_safe_next(next))}")
    uri = identity.pending_totp_uri(user, kernel.secret_box) or identity.begin_totp_enrolment(
        session, user, kernel.secret_box
    )
    session.commit()
    return render(
        request,
        "login_enrol.html",
        {
            "next": _safe_next(next),
            "qr": totp.qr_svg(uri),
            "secret": uri.split("secret=")[1].split("&")[0],
            "error": "",
        },
    )


@router.post("/login/enrol", dependencies=[Depends(PUBLIC)])
def enrol_submit(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    code: Annotated[str, Form(max_length=12)],
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    auth = _pending(request, kernel, session)
    if auth is None:
        return redirect("/login")
    user = auth.user
    actor = identity.actor_for(user, user.username, client_ip(request))
    if not identity.confirm_totp_enrolment(
        session, kernel.audit, actor=actor, user=user, box=kernel.secret_box, code=code
    ):
        uri = identity.pending_totp_uri(user, kernel.secret_box) or ""
        return render(
            request,
            "login_enrol.html",
            {
                "next": _safe_next(next),
                "qr": totp.qr_svg(uri),
                "secret": uri.split("secret=")[1].split("&")[0] if uri else "",
                "error": _("Wrong code. Try again."),
            },
            status_code=401,
        )
    auth.revoked_at = utcnow()
    outcome = kernel.auth.complete_login(
        session, user, "web", client_ip(request), request.headers.get("user-agent", "")
    )
    session.commit()
    response = redirect(_safe_next(next))
    if outcome.token:
        _set_session_cookie(response, kernel, outcome.token)
    return response


@router.post("/logout")
def logout(request: Request, kernel: KernelDep, session: DbDep, principal: Signed) -> Response:
    auth = resolve_auth_session(request, kernel, session)
    if auth is not None:
        kernel.auth.logout(session, auth, principal.client_ip)
        session.commit()
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- home --------------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request, kernel: KernelDep, session: DbDep, principal: Signed) -> Response:
    installed = {m.key: m for m in installed_modules()}
    tiles = [
        {"capability": c, "module": m, "href": module_link(m, principal) if m else ""}
        for c in CAPABILITIES
        for m in [installed.get(c.key)]
    ]
    context: dict[str, Any] = {"tiles": tiles}
    if (
        principal.role in {Role.NURSE, Role.PHYSICIAN, Role.RADIOLOGIST, Role.ADMIN}
        and principal.organization_id
    ):
        census = patients.ward_census(session, principal.organization_id)
        context["census"] = census
        context["census_chart"] = {
            "wards": [local_name(c.ward) for c in census],
            "occupied": [c.occupied for c in census],
            "free": [max(c.beds - c.occupied, 0) for c in census],
            "labels": {"occupied": _("Occupied"), "free": _("Free")},
        }
        context["my_wards"] = [c for c in census if c.ward.id in principal.ward_ids]
    if principal.role == Role.AUDITOR:
        since = utcnow() - timedelta(hours=24)
        context["failed_logins"] = audit_service.count(
            session, audit_service.search(action_prefix="user.login", since=since, outcome_failed=True)
        )
        context["lockouts"] = audit_service.count(
            session, audit_service.search(action_prefix="user.locked", since=since)
        )
        context["break_glass"] = session.scalars(
            audit_service.search(
                action_prefix="patient.break_glass", since=utcnow() - timedelta(days=7)
            ).limit(50)
        ).all()
        record_meta_access(session, kernel.audit, principal, "audit.dashboard")
        session.commit()
    if principal.can(Permission.DEAD_LETTER_MANAGE):
        context["dead_letters"] = session.scalar(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.resolved_at.is_(None))
        )
    return render(request, "home.html", context)


# --- patients ----------------------------------------------------------------------------------------


def _wards_of(session: Session, principal: Principal) -> list[Location]:
    if not principal.organization_id:
        return []
    return list(patients.locations(session, organization_id=principal.organization_id, kind="ward"))


@router.get("/patients")
def patient_list(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    q: Annotated[str, Query(max_length=100)] = "",
    ward: Annotated[str, Query(max_length=36)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    if principal.role == Role.PATIENT:
        return redirect("/me/record")
    per_page = 25
    query = patients.PatientQuery(text=q, ward_id=ward or None, limit=per_page, offset=(page - 1) * per_page)
    rows, total = patients.search_patients(session, kernel.audit, principal, query)
    session.commit()
    context = {
        "patients": [(p, patients.current_encounter(p)) for p in rows],
        "total": total,
        "q": q,
        "ward": ward,
        "page": page,
        "pages": max(1, -(-total // per_page)),
        "wards": _wards_of(session, principal),
    }
    if request.headers.get("hx-request"):
        return render(request, "patients/_rows.html", context)
    return render(request, "patients/list.html", context)


@router.get("/patients/new")
def patient_new(
    request: Request, principal: Annotated[Principal, Depends(require(Permission.PATIENT_WRITE))]
) -> Response:
    return render(request, "patients/new.html", {"form": {}, "error": ""})


@router.post("/patients/new")
def patient_create(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.PATIENT_WRITE))],
    name: Annotated[str, Form(max_length=100)],
    gender: Annotated[str, Form(max_length=10)],
    birth_date: Annotated[str, Form(max_length=10)] = "",
    national_id: Annotated[str, Form(max_length=18)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
    address: Annotated[str, Form(max_length=300)] = "",
    mrn: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    form = {
        "name": name,
        "gender": gender,
        "birth_date": birth_date,
        "national_id": national_id,
        "phone": phone,
        "address": address,
        "mrn": mrn,
    }
    try:
        born = date.fromisoformat(birth_date) if birth_date else None
        patient = patients.register_patient(
            session,
            kernel.audit,
            principal,
            patients.PatientFields(
                name=name,
                gender=gender,
                birth_date=born,
                national_id=national_id,
                phone=phone,
                address=address,
                mrn=mrn or None,
            ),
        )
    except (DomainError, ValueError) as exc:
        session.rollback()
        return render(request, "patients/new.html", {"form": form, "error": str(exc)}, status_code=422)
    session.commit()
    return redirect(f"/patients/{patient.id}", _("Patient registered."))


@router.get("/patients/{patient_id}")
def patient_page(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, patient_id: str
) -> Response:
    try:
        patient = patients.read_patient(session, kernel.audit, principal, patient_id)
    except Forbidden:
        if principal.can(Permission.BREAK_GLASS):
            target = session.get(Patient, patient_id)
            return render(
                request,
                "patients/no_access.html",
                {"patient_id": patient_id, "patient": target},
                status_code=403,
            )
        raise
    session.commit()
    return render(request, "patients/detail.html", _patient_context(session, principal, patient))


def _patient_context(session: Session, principal: Principal, patient: Patient) -> dict[str, Any]:
    encounter = patients.current_encounter(patient)
    context: dict[str, Any] = {
        "patient": patient,
        "encounter": encounter,
        "encounters": patient.encounters,
        "mask": patients.mask_national_id,
    }
    if principal.can(Permission.ENCOUNTER_WRITE) and principal.organization_id:
        wards = _wards_of(session, principal)
        occupied = set(
            session.scalars(
                select(Encounter.bed_id).where(
                    Encounter.status == "in-progress", Encounter.bed_id.is_not(None)
                )
            )
        )
        context["wards"] = wards
        context["free_beds"] = {
            w.id: [
                {"id": b.id, "name": local_name(b)}
                for b in patients.beds_of_ward(session, w.id)
                if b.id not in occupied
            ]
            for w in wards
        }
        context["physicians"] = patients.staff(
            session, organization_id=principal.organization_id, role="physician"
        )
    context["panels"] = [
        panel
        for module in installed_modules()
        for make_panel in module.patient_panels
        if (panel := make_panel(session, principal, patient)) is not None
    ]
    return context


def _form_action(session: Session, url: str, action: Any) -> Response:
    try:
        action()
    except DomainError as exc:
        session.rollback()
        return redirect(url, f"⚠ {exc.detail}")
    session.commit()
    return redirect(url, _("Saved."))


@router.post("/patients/{patient_id}/admit")
def patient_admit(
    kernel: KernelDep,
    session: DbDep,
    principal: AdtClerk,
    patient_id: str,
    ward_id: Annotated[str, Form(max_length=36)],
    bed_id: Annotated[str, Form(max_length=36)] = "",
    attending_id: Annotated[str, Form(max_length=36)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    return _form_action(
        session,
        f"/patients/{patient_id}",
        lambda: patients.admit(
            session,
            kernel.audit,
            principal,
            patient_id,
            ward_id=ward_id,
            bed_id=bed_id or None,
            attending_id=attending_id or None,
            reason=reason,
        ),
    )


@router.post("/encounters/{encounter_id}/transfer")
def encounter_transfer(
    kernel: KernelDep,
    session: DbDep,
    principal: AdtClerk,
    encounter_id: str,
    ward_id: Annotated[str, Form(max_length=36)],
    bed_id: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    encounter = session.get(Encounter, encounter_id)
    if encounter is None:
        raise NotFound(f"no encounter {encounter_id}")
    return _form_action(
        session,
        f"/patients/{encounter.patient_id}",
        lambda: patients.transfer(
            session, kernel.audit, principal, encounter_id, ward_id=ward_id, bed_id=bed_id or None
        ),
    )


@router.post("/encounters/{encounter_id}/discharge")
def encounter_discharge(
    kernel: KernelDep, session: DbDep, principal: AdtClerk, encounter_id: str
) -> Response:
    encounter = session.get(Encounter, encounter_id)
    if encounter is None:
        raise NotFound(f"no encounter {encounter_id}")
    return _form_action(
        session,
        f"/patients/{encounter.patient_id}",
        lambda: patients.discharge(session, kernel.audit, principal, encounter_id),
    )


@router.post("/patients/{patient_id}/break-glass")
def patient_break_glass(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.BREAK_GLASS))],
    patient_id: str,
    reason: Annotated[str, Form(max_length=500)],
) -> Response:
    try:
        patients.break_glass(
            session,
            kernel.audit,
            principal,
            patient_id,
            reason=reason,
            minutes=kernel.settings.break_glass_minutes,
        )
    except Invalid as exc:
        session.rollback()
        return render(
            request,
            "patients/no_access.html",
            {"patient_id": patient_id, "patient": session.get(Patient, patient_id), "error": exc.detail},
            status_code=422,
        )
    session.commit()
    return redirect(f"/patients/{patient_id}", _("Emergency access granted. This access will be reviewed."))


# --- a patient's own pages ---------------------------------------------------------------------------


@router.get("/me/record")
def my_record(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.OWN_RECORD_READ))],
) -> Response:
    if principal.patient_id is None:
        raise NotFound("this account is not linked to a patient record")
    patient = patients.read_patient(session, kernel.audit, principal, principal.patient_id)
    session.commit()
    return render(request, "patients/detail.html", _patient_context(session, principal, patient))


@router.get("/me/access-log")
def my_access_log(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.OWN_RECORD_READ))],
) -> Response:
    entries, total = (
        ([], 0) if principal.patient_id is None else access_log_entries(session, principal.patient_id, 200, 0)
    )
    if principal.patient_id:
        record_meta_access(session, kernel.audit, principal, "audit.own_log", patient_id=principal.patient_id)
        session.commit()
    return render(request, "audit/access_log.html", {"entries": entries, "total": total, "own": True})


# --- user administration -----------------------------------------------------------------------------


ROLE_CHOICES = [r.value for r in Role]


@router.get("/admin/users")
def users_page(request: Request, session: DbDep, principal: UserReader) -> Response:
    users = identity.list_users(session, organization_id=principal.organization_id)
    counts: dict[str, int] = {}
    for u in users:
        counts[u.role] = counts.get(u.role, 0) + 1
    return render(request, "admin/users.html", {"users": users, "now": utcnow(), "role_counts": counts})


@router.get("/admin/users/new")
def user_new(request: Request, session: DbDep, principal: UserManager) -> Response:
    return render(
        request,
        "admin/user_form.html",
        {
            "user": None,
            "roles": ROLE_CHOICES,
            "form": {},
            "wards": _wards_of(session, principal),
            "error": "",
        },
    )


@router.post("/admin/users/new")
def user_create(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: UserManager,
    username: Annotated[str, Form(max_length=64)],
    display_name: Annotated[str, Form(max_length=100)],
    role: Annotated[str, Form(max_length=20)],
    password: Annotated[str, Form(max_length=256)],
    ward_ids: Annotated[list[str], Form(max_length=50)] = [],  # noqa: B006 - FastAPI copies defaults
    patient_id: Annotated[str, Form(max_length=36)] = "",
    licence_number: Annotated[str, Form(max_length=64)] = "",
    professional_title: Annotated[str, Form(max_length=50)] = "",
    specialty: Annotated[str, Form(max_length=100)] = "",
    practicing_since: Annotated[str, Form(max_length=10)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    fields = {
        "username": username,
        "display_name": display_name,
        "role": role,
        "licence_number": licence_number,
        "professional_title": professional_title,
        "specialty": specialty,
        "practicing_since": practicing_since,
        "phone": phone,
        "patient_id": patient_id,
    }
    try:
        since = date.fromisoformat(practicing_since) if practicing_since else None
        user = identity.create_user(
            session,
            kernel.audit,
            actor=principal.actor,
            new=identity.NewUser(
                username=username,
                display_name=display_name,
                role=role,
                password=password,
                organization_id=principal.organization_id,
                ward_ids=ward_ids,
                patient_id=patient_id or None,
                licence_number=licence_number,
                professional_title=professional_title,
                specialty=specialty,
                practicing_since=since,
                phone=phone,
            ),
        )
    except (identity.AccountError, ValueError) as exc:
        session.rollback()
        return render(
            request,
            "admin/user_form.html",
            {
                "user": None,
                "roles": ROLE_CHOICES,
                "form": fields | {"ward_ids": ward_ids},
                "wards": _wards_of(session, principal),
                "error": str(exc),
            },
            status_code=422,
        )
    session.commit()
    return redirect(f"/admin/users/{user.id}", _("Account created."))


def _managed(session: Session, principal: Principal, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if user.organization_id != principal.organization_id:
        raise Forbidden("that account belongs to another institution")
    return user


@router.get("/admin/users/{user_id}")
def user_edit(request: Request, session: DbDep, principal: UserReader, user_id: str) -> Response:
    user = _managed(session, principal, user_id)
    return render(
        request,
        "admin/user_form.html",
        {
            "user": user,
            "roles": ROLE_CHOICES,
            "now": utcnow(),
            "wards": _wards_of(session, principal),
            "error": "",
            "form": {},
        },
    )


@router.post("/admin/users/{user_id}")
def user_update(
    kernel: KernelDep,
    session: DbDep,
    principal: UserManager,
    user_id: str,
    display_name: Annotated[str, Form(max_length=100)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    is_active: Annotated[str, Form(max_length=3)] = "",
    ward_ids: Annotated[list[str], Form(max_length=50)] = [],  # noqa: B006 - FastAPI copies defaults
    licence_number: Annotated[str, Form(max_length=64)] = "",
    professional_title: Annotated[str, Form(max_length=50)] = "",
    specialty: Annotated[str, Form(max_length=100)] = "",
    practicing_since: Annotated[str, Form(max_length=10)] = "",
    phone: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    user = _managed(session, principal, user_id)
    try:
        since = date.fromisoformat(practicing_since) if practicing_since else None
        identity.update_user(
            session,
            kernel.audit,
            actor=principal.actor,
            user=user,
            changes=identity.UserChanges(
                display_name=display_name or None,
                role=role or None,
                is_active=is_active == "on",
                ward_ids=ward_ids if user.role != Role.PATIENT else None,
                licence_number=licence_number,
                professional_title=professional_title,
                specialty=specialty,
                practicing_since=since,
                phone=phone,
            ),
        )
    except (identity.AccountError, ValueError) as exc:
        session.rollback()
        return redirect(f"/admin/users/{user_id}", f"⚠ {exc}")
    session.commit()
    return redirect(f"/admin/users/{user_id}", _("Saved."))


@router.post("/admin/users/{user_id}/unlock")
def user_unlock(kernel: KernelDep, session: DbDep, principal: UserManager, user_id: str) -> Response:
    user = _managed(session, principal, user_id)
    identity.unlock(session, kernel.audit, actor=principal.actor, user=user)
    session.commit()
    return redirect(f"/admin/users/{user_id}", _("Account unlocked."))


@router.post("/admin/users/{user_id}/password")
def user_reset_password(
    kernel: KernelDep,
    session: DbDep,
    principal: UserManager,
    user_id: str,
    new_password: Annotated[str, Form(max_length=256)],
) -> Response:
    user = _managed(session, principal, user_id)
    try:
        identity.set_password(
            session,
            kernel.audit,
            actor=principal.actor,
            user=user,
            new_password=new_password,
            by_owner=False,
        )
    except identity.AccountError as exc:
        session.rollback()
        return redirect(f"/admin/users/{user_id}", f"⚠ {exc}")
    session.commit()
    return redirect(f"/admin/users/{user_id}", _("Password reset; the user's sessions were ended."))


@router.get("/admin/dead-letters")
def dead_letters_page(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.DEAD_LETTER_MANAGE))],
    include_resolved: bool = False,
) -> Response:
    rows = session.scalars(deadletters.listing(unresolved_only=not include_resolved).limit(200)).all()
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
    return render(request, "admin/dead_letters.html", {"rows": rows, "include_resolved": include_resolved})


@router.post("/admin/dead-letters/{dead_letter_id}/resolve")
def dead_letter_resolve(
    kernel: KernelDep,
    session: DbDep,
    principal: Annotated[Principal, Depends(require(Permission.DEAD_LETTER_MANAGE))],
    dead_letter_id: str,
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    row = session.get(DeadLetter, dead_letter_id)
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    deadletters.resolve(session, row, by=principal.username, note=note)
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
    return redirect("/admin/dead-letters", _("Marked as resolved."))


# --- audit -------------------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Auditor,
    username: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    patient: Annotated[str, Query(max_length=36)] = "",
    failed: bool = False,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    per_page = 50
    query = audit_service.search(
        actor_username=username or None,
        action_prefix=action or None,
        patient_id=patient or None,
        outcome_failed=True if failed else None,
    )
    total = audit_service.count(session, query)
    rows = session.scalars(query.limit(per_page).offset((page - 1) * per_page)).all()
    since = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    activity = {
        hour: (total_, failed_) for hour, total_, failed_ in audit_service.hourly_activity(session, since)
    }
    hours = [since + timedelta(hours=i) for i in range(24)]
    chart = {
        "hours": [localtime(h, "%H:00") for h in hours],
        "ok": [activity.get(h, (0, 0))[0] - activity.get(h, (0, 0))[1] for h in hours],
        "failed": [activity.get(h, (0, 0))[1] for h in hours],
        "labels": {"ok": _("Succeeded"), "failed": _("Failed or denied")},
    }
    record_meta_access(
        session,
        kernel.audit,
        principal,
        "audit.search",
        username=username or None,
        action=action or None,
        returned=len(rows),
        **({"patient_id": patient} if patient else {}),
    )
    session.commit()
    context = {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // per_page)),
        "chart": chart,
        "filters": {"username": username, "action": action, "patient": patient, "failed": failed},
    }
    if request.headers.get("hx-request"):
        return render(request, "audit/_rows.html", context)
    return render(request, "audit/index.html", context)


@router.get("/audit/verify")
def audit_verify(request: Request, kernel: KernelDep, session: DbDep, principal: Auditor) -> HTMLResponse:
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
    return render(request, "audit/_verify.html", {"result": result})


@router.get("/audit/patients/{patient_id}")
def audit_patient(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Auditor,
    patient_id: Annotated[str, Path(max_length=36)],
) -> Response:
    entries, total = access_log_entries(session, patient_id, 500, 0)
    record_meta_access(session, kernel.audit, principal, "audit.patient_log", patient_id=patient_id)
    session.commit()
    return render(
        request,
        "audit/access_log.html",
        {"entries": entries, "total": total, "own": False, "patient_id": patient_id},
    )


# --- my account --------------------------------------------------------------------------------------


@router.get("/account")
def account_page(request: Request, kernel: KernelDep, session: DbDep, principal: Signed) -> Response:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("account no longer exists")
    uri = identity.pending_totp_uri(user, kernel.secret_box)
    return render(
        request,
        "account/index.html",
        {
            "user": user,
            "qr": totp.qr_svg(uri) if uri else None,
            "secret": uri.split("secret=")[1].split("&")[0] if uri else "",
            "totp_required": user.role in kernel.settings.totp_required_roles,
        },
    )


@router.post("/account/password")
def account_password(
    kernel: KernelDep,
    session: DbDep,
    principal: Signed,
    current_password: Annotated[str, Form(max_length=256)],
    new_password: Annotated[str, Form(max_length=256)],
) -> Response:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("account no longer exists")
    if not kernel.auth.reauthenticate(session, user, current_password, client_ip=principal.client_ip):
        session.commit()  # keeps the audit record (and the failure count) of the wrong password
        return redirect("/account", _("⚠ Wrong password."))
    try:
        identity.set_password(
            session, kernel.audit, actor=principal.actor, user=user, new_password=new_password, by_owner=True
        )
    except identity.AccountError as exc:
        session.rollback()
        return redirect("/account", f"⚠ {exc}")
    session.commit()
    return redirect("/login", _("Password changed. Please sign in again."))


@router.post("/account/totp/begin")
def account_totp_begin(kernel: KernelDep, session: DbDep, principal: Signed) -> Response:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("account no longer exists")
    try:
        identity.begin_totp_enrolment(session, user, kernel.secret_box)
    except identity.AccountError as exc:
        raise Conflict(str(exc)) from exc
    session.commit()
    return redirect("/account#totp")


@router.post("/account/totp/confirm")
def account_totp_confirm(
    kernel: KernelDep, session: DbDep, principal: Signed, code: Annotated[str, Form(max_length=12)]
) -> Response:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("account no longer exists")
    ok = identity.confirm_totp_enrolment(
        session, kernel.audit, actor=principal.actor, user=user, box=kernel.secret_box, code=code
    )
    session.commit()
    return redirect("/account#totp", _("Second factor is on.") if ok else _("⚠ Wrong code. Try again."))


@router.post("/account/totp/disable")
def account_totp_disable(
    kernel: KernelDep, session: DbDep, principal: Signed, password: Annotated[str, Form(max_length=256)]
) -> Response:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("account no longer exists")
    if user.role in kernel.settings.totp_required_roles:
        return redirect("/account#totp", _("⚠ Your role must use a second factor."))
    if not kernel.auth.reauthenticate(session, user, password, client_ip=principal.client_ip):
        session.commit()
        return redirect("/account#totp", _("⚠ Wrong password."))
    identity.disable_totp(session, kernel.audit, actor=principal.actor, user=user)
    session.commit()
    return redirect("/account#totp", _("Second factor is off."))
