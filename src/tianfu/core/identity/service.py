"""Accounts, login with lockout and second factor, and sessions (web cookies and API tokens)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE, Actor, AuditLog
from tianfu.core.db import utcnow
from tianfu.core.identity import passwords, totp
from tianfu.core.identity.models import AuthSession, User
from tianfu.core.patients.models import Location, Patient
from tianfu.core.security.permissions import Role
from tianfu.core.security.principal import Principal
from tianfu.core.settings import Settings

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,63}$")
TOUCH_INTERVAL = timedelta(seconds=30)  # how stale last_seen_at may get before we write it again


class AccountError(ValueError):
    """A user-management request that cannot be carried out; the message says why."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def actor_for(user: User | None, username: str, client_ip: str) -> Actor:
    if user is None:
        return Actor(user_id=None, username=username[:64], role="unknown", client_ip=client_ip)
    return Actor(user_id=user.id, username=user.username, role=user.role, client_ip=client_ip)


# --- login -------------------------------------------------------------------------------------------

LoginStatus = Literal["ok", "mfa_required", "mfa_enrolment_required", "invalid", "locked", "inactive"]


@dataclass
class LoginOutcome:
    status: LoginStatus
    token: str | None = None
    user: User | None = None
    locked_until: datetime | None = None


class Authenticator:
    def __init__(self, settings: Settings, audit: AuditLog, secret_box: totp.SecretBox) -> None:
        self.settings = settings
        self.audit = audit
        self.secret_box = secret_box

    def needs_second_factor(self, user: User) -> bool:
        return user.totp_enabled or user.role in self.settings.totp_required_roles

    def login(
        self,
        session: Session,
        *,
        username: str,
        password: str,
        kind: Literal["web", "api"],
        client_ip: str = "",
        user_agent: str = "",
        totp_code: str | None = None,
    ) -> LoginOutcome:
        """Check a password (and for API logins the TOTP code); the caller commits."""
        now = utcnow()
        # Locked for the rest of the transaction, so that concurrent guesses count one after another and a
        # TOTP code cannot be used twice (PostgreSQL; SQLite transactions already run one at a time).
        user = session.scalar(select(User).where(User.username == username.strip().lower()).with_for_update())
        actor = actor_for(user, username, client_ip)
        if user is not None and user.locked_until is not None and user.locked_until > now:
            passwords.verify_password(None, password)  # same cost as a real check
            self._fail(session, actor, "user.login_locked", "account locked")
            return LoginOutcome("locked", locked_until=user.locked_until)
        ok, new_hash = passwords.verify_password(user.password_hash if user else None, password)
        if user is None or not ok:
            return self._bad_credentials(session, user, actor, now, "wrong username or password")
        if not user.is_active:
            self._fail(session, actor, "user.login_failed", "account deactivated")
            return LoginOutcome("inactive")
        if new_hash:
            user.password_hash = new_hash
        if self.needs_second_factor(user):
            if not user.totp_enabled:
                if kind == "api":
                    self._fail(session, actor, "user.login_failed", "second factor required but not enrolled")
                    return LoginOutcome("mfa_enrolment_required", user=user)
                return self._start_session(
                    session,
                    user,
                    kind,
                    client_ip,
                    user_agent,
                    mfa_pending=True,
                    status="mfa_enrolment_required",
                )
            if kind == "api":
                if not totp_code or not self._accept_code(session, user, totp_code):
                    return self._bad_credentials(
                        session, user, actor, now, "wrong or missing second-factor code"
                    )
            else:
                return self._start_session(
                    session, user, kind, client_ip, user_agent, mfa_pending=True, status="mfa_required"
                )
        return self.complete_login(session, user, kind, client_ip, user_agent)

    def complete_second_factor(
        self, session: Session, auth: AuthSession, code: str, *, client_ip: str = "", user_agent: str = ""
    ) -> LoginOutcome:
        """Second step of a web login: a valid code replaces the pending session with a full one."""
        user = session.scalars(
            select(User)
            .where(User.id == auth.user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        actor = actor_for(user, user.username, client_ip)
        now = utcnow()
        if user.locked_until is not None and user.locked_until > now:
            self._fail(session, actor, "user.login_locked", "account locked")
            auth.revoked_at = now
            return LoginOutcome("locked", locked_until=user.locked_until)
        if not self._accept_code(session, user, code):
            outcome = self._bad_credentials(session, user, actor, now, "wrong second-factor code")
            if outcome.status == "locked":
                auth.revoked_at = now
            return outcome
        auth.revoked_at = now  # a new token after the second factor: no session fixation
        return self.complete_login(session, user, auth.kind, client_ip, user_agent)  # type: ignore[arg-type]

    def _accept_code(self, session: Session, user: User, code: str) -> bool:
        if not user.totp_secret_encrypted:
            return False
        step = totp.matching_step(
            self.secret_box.open(user.totp_secret_encrypted), code, last_step=user.totp_last_step
        )
        if step is None:
            return False
        user.totp_last_step = step
        return True

    def complete_login(
        self, session: Session, user: User, kind: Literal["web", "api"], client_ip: str, user_agent: str
    ) -> LoginOutcome:
        user.failed_login_count = 0
        user.locked_until = None
        user.last_login_at = utcnow()
        self.audit.record(
            session,
            actor=actor_for(user, user.username, client_ip),
            action="user.login",
            action_type="E",
            resource_type="User",
            resource_id=user.id,
            detail={"kind": kind, "second_factor": user.totp_enabled},
        )
        return self._start_session(session, user, kind, client_ip, user_agent, mfa_pending=False, status="ok")

    def _start_session(
        self,
        session: Session,
        user: User,
        kind: Literal["web", "api"],
        client_ip: str,
        user_agent: str,
        *,
        mfa_pending: bool,
        status: LoginStatus,
    ) -> LoginOutcome:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        lifetime = timedelta(minutes=10) if mfa_pending else timedelta(hours=self.settings.session_max_hours)
        session.add(
            AuthSession(
                token_hash=token_hash(token),
                user_id=user.id,
                kind=kind,
                mfa_pending=mfa_pending,
                csrf_token=secrets.token_urlsafe(24),
                created_at=now,
                last_seen_at=now,
                expires_at=now + lifetime,
                client_ip=client_ip[:64],
                user_agent=user_agent[:300],
            )
        )
        return LoginOutcome(status, token=token, user=user)

    def _bad_credentials(
        self, session: Session, user: User | None, actor: Actor, now: datetime, reason: str
    ) -> LoginOutcome:
        self._fail(session, actor, "user.login_failed", reason)
        if user is None:
            return LoginOutcome("invalid")
        user.failed_login_count += 1
        if user.failed_login_count >= self.settings.lockout_threshold:
            user.locked_until = now + timedelta(minutes=self.settings.lockout_minutes)
            user.failed_login_count = 0
            self._fail(
                session,
                actor,
                "user.locked",
                f"{self.settings.lockout_threshold} failed attempts; locked for "
                f"{self.settings.lockout_minutes} minutes",
            )
            session.execute(update(AuthSession).where(AuthSession.user_id == user.id).values(revoked_at=now))
            return LoginOutcome("locked", locked_until=user.locked_until)
        return LoginOutcome("invalid")

    def _fail(self, session: Session, actor: Actor, action: str, reason: str) -> None:
        self.audit.record(
            session,
            actor=actor,
            action=action,
            action_type="E",
            outcome=OUTCOME_MINOR_FAILURE,
            outcome_desc=reason,
            resource_type="User",
            resource_id=actor.user_id or "",
        )

    def reauthenticate(self, session: Session, user: User, password: str, *, client_ip: str = "") -> bool:
        """Confirm a signed-in user's password before a sensitive change. A wrong password is audited and
        counts toward the lockout, so that a hijacked session cannot be used to guess it."""
        ok, _ = passwords.verify_password(user.password_hash, password)
        if ok:
            return True
        self._bad_credentials(
            session,
            user,
            actor_for(user, user.username, client_ip),
            utcnow(),
            "wrong password when confirming a change",
        )
        return False

    # --- sessions ------------------------------------------------------------------------------------

    def resolve(self, session: Session, token: str) -> AuthSession | None:
        """The live session for a token, or None if unknown, revoked, expired or idle too long."""
        auth = session.get(AuthSession, token_hash(token))
        if auth is None or auth.revoked_at is not None:
            return None
        now = utcnow()
        if auth.expires_at <= now:
            return None
        if (
            auth.kind == "web"
            and auth.last_seen_at + timedelta(minutes=self.settings.session_idle_minutes) <= now
        ):
            auth.revoked_at = now
            return None
        if not auth.user.is_active:
            return None
        if now - auth.last_seen_at > TOUCH_INTERVAL:
            auth.last_seen_at = now
        return auth

    def logout(self, session: Session, auth: AuthSession, client_ip: str = "") -> None:
        auth.revoked_at = utcnow()
        self.audit.record(
            session,
            actor=actor_for(auth.user, auth.user.username, client_ip),
            action="user.logout",
            action_type="E",
            resource_type="User",
            resource_id=auth.user_id,
        )


def revoke_sessions(session: Session, user_id: str) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def principal_for(auth: AuthSession, client_ip: str) -> Principal:
    user = auth.user
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        organization_id=user.organization_id,
        patient_id=user.patient_id,
        ward_ids=tuple(w.id for w in user.wards),
        session_kind=auth.kind,
        csrf_token=auth.csrf_token,
        client_ip=client_ip,
    )


# --- accounts ----------------------------------------------------------------------------------------


@dataclass
class NewUser:
    username: str
    display_name: str
    role: str
    password: str
    organization_id: str | None = None
    ward_ids: Sequence[str] = ()
    patient_id: str | None = None
    licence_number: str = ""
    professional_title: str = ""
    specialty: str = ""
    practicing_since: date | None = None
    phone: str = ""


def _wards(session: Session, ward_ids: Sequence[str], organization_id: str | None) -> list[Location]:
    wards = list(session.scalars(select(Location).where(Location.id.in_(ward_ids), Location.kind == "ward")))
    if len(wards) != len(set(ward_ids)):
        raise AccountError("unknown ward")
    if any(w.organization_id != organization_id for w in wards):
        raise AccountError("a ward of another institution cannot be assigned")
    return wards


def create_user(session: Session, audit: AuditLog, *, actor: Actor, new: NewUser) -> User:
    username = new.username.strip().lower()
    if not USERNAME_PATTERN.match(username):
        raise AccountError("username: 3-64 lower-case letters, digits, '.', '_' or '-'")
    try:
        role = Role(new.role)
    except ValueError as exc:
        raise AccountError(f"unknown role {new.role!r}") from exc
    if session.scalar(select(User.id).where(User.username == username)):
        raise AccountError(f"username {username!r} is taken")
    if role == Role.PATIENT and not new.patient_id:
        raise AccountError("a patient account must be linked to a patient record")
    if role != Role.PATIENT and new.patient_id:
        raise AccountError("only a patient account is linked to a patient record")
    organization_id = new.organization_id
    if role == Role.PATIENT:
        patient = session.get(Patient, new.patient_id)
        if patient is None or patient.voided:
            raise AccountError("unknown patient record")
        if organization_id and patient.managing_organization_id != organization_id:
            raise AccountError("that patient is registered at another institution")
        if session.scalar(select(User.id).where(User.patient_id == patient.id)):
            raise AccountError("this patient already has an account")
        organization_id = patient.managing_organization_id
    elif not organization_id:
        raise AccountError("a staff account belongs to an institution")
    try:
        passwords.check_policy(new.password, username=username)
    except passwords.WeakPassword as exc:
        raise AccountError(str(exc)) from exc
    user = User(
        username=username,
        display_name=new.display_name.strip() or username,
        role=role.value,
        organization_id=organization_id,
        patient_id=new.patient_id,
        password_hash=passwords.hash_password(new.password),
        licence_number=new.licence_number,
        professional_title=new.professional_title,
        specialty=new.specialty,
        practicing_since=new.practicing_since,
        phone=new.phone,
    )
    user.wards = _wards(session, new.ward_ids, organization_id)
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.create",
        action_type="C",
        resource_type="User",
        resource_id=user.id,
        detail={"username": username, "role": role.value, "wards": [w.code for w in user.wards]},
    )
    return user


@dataclass
class UserChanges:
    display_name: str | None = None
    role: str | None = None
    is_active: bool | None = None
    ward_ids: Sequence[str] | None = None
    licence_number: str | None = None
    professional_title: str | None = None
    specialty: str | None = None
    practicing_since: date | None = None
    phone: str | None = None


def update_user(session: Session, audit: AuditLog, *, actor: Actor, user: User, changes: UserChanges) -> User:
    changed: dict[str, object] = {}
    if changes.role is not None and changes.role != user.role:
        try:
            new_role = Role(changes.role)
        except ValueError as exc:
            raise AccountError(f"unknown role {changes.role!r}") from exc
        if user.id == actor.user_id:
            raise AccountError("you cannot change your own role")
        if Role.PATIENT in (new_role, Role(user.role)):
            raise AccountError("patient accounts and staff accounts cannot be converted into each other")
        audit.record(
            session,
            actor=actor,
            action="user.role_change",
            action_type="U",
            resource_type="User",
            resource_id=user.id,
            detail={"username": user.username, "from": user.role, "to": new_role.value},
        )
        user.role = new_role.value
        revoke_sessions(session, user.id)  # new permissions apply from the next login
    if changes.is_active is not None and changes.is_active != user.is_active:
        if user.id == actor.user_id:
            raise AccountError("you cannot deactivate your own account")
        user.is_active = changes.is_active
        changed["is_active"] = changes.is_active
        if not changes.is_active:
            revoke_sessions(session, user.id)
    if changes.ward_ids is not None:
        wards = _wards(session, changes.ward_ids, user.organization_id)
        if {w.id for w in wards} != {w.id for w in user.wards}:
            user.wards = wards
            changed["wards"] = [w.code for w in wards]
    for name in (
        "display_name",
        "licence_number",
        "professional_title",
        "specialty",
        "practicing_since",
        "phone",
    ):
        value = getattr(changes, name)
        if value is not None and value != getattr(user, name):
            setattr(user, name, value)
            changed[name] = value.isoformat() if isinstance(value, date) else value
    if changed:
        audit.record(
            session,
            actor=actor,
            action="user.update",
            action_type="U",
            resource_type="User",
            resource_id=user.id,
            detail={"username": user.username, "changed": changed},
        )
    session.flush()
    return user


def set_password(
    session: Session,
    audit: AuditLog,
    *,
    actor: Actor,
    user: User,
    new_password: str,
    by_owner: bool,
) -> None:
    """Set a new password: the owner's change (after :meth:`Authenticator.reauthenticate`) or an
    administrator's reset. Either way every session of the account ends."""
    try:
        passwords.check_policy(new_password, username=user.username)
    except passwords.WeakPassword as exc:
        raise AccountError(str(exc)) from exc
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = utcnow()
    revoke_sessions(session, user.id)
    audit.record(
        session,
        actor=actor,
        action="user.password_change" if by_owner else "user.password_reset",
        action_type="U",
        resource_type="User",
        resource_id=user.id,
    )


def unlock(session: Session, audit: AuditLog, *, actor: Actor, user: User) -> None:
    user.locked_until = None
    user.failed_login_count = 0
    audit.record(
        session, actor=actor, action="user.unlock", action_type="U", resource_type="User", resource_id=user.id
    )


def begin_totp_enrolment(session: Session, user: User, box: totp.SecretBox) -> str:
    """Store a fresh, not yet active secret; returns its provisioning URI for the authenticator app."""
    if user.totp_enabled:
        raise AccountError("a second factor is already active; turn it off first")
    secret = totp.new_secret()
    user.totp_secret_encrypted = box.seal(secret)
    return totp.provisioning_uri(secret, user.username)


def pending_totp_uri(user: User, box: totp.SecretBox) -> str | None:
    if user.totp_enabled or not user.totp_secret_encrypted:
        return None
    return totp.provisioning_uri(box.open(user.totp_secret_encrypted), user.username)


def confirm_totp_enrolment(
    session: Session, audit: AuditLog, *, actor: Actor, user: User, box: totp.SecretBox, code: str
) -> bool:
    if user.totp_enabled or not user.totp_secret_encrypted:
        return False
    step = totp.matching_step(box.open(user.totp_secret_encrypted), code, last_step=0)
    if step is None:
        return False
    user.totp_enabled = True
    user.totp_last_step = step
    audit.record(
        session,
        actor=actor,
        action="user.totp_enable",
        action_type="U",
        resource_type="User",
        resource_id=user.id,
    )
    return True


def disable_totp(session: Session, audit: AuditLog, *, actor: Actor, user: User) -> None:
    user.totp_enabled = False
    user.totp_secret_encrypted = None
    user.totp_last_step = 0
    audit.record(
        session,
        actor=actor,
        action="user.totp_disable",
        action_type="U",
        resource_type="User",
        resource_id=user.id,
    )


def list_users(session: Session, *, organization_id: str | None) -> Sequence[User]:
    query = (
        select(User)
        .options(selectinload(User.wards), selectinload(User.organization))
        .order_by(User.role, User.username)
    )
    if organization_id is not None:
        query = query.where(User.organization_id == organization_id)
    return session.scalars(query).all()
