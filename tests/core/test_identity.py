"""Login, lockout, second factor and sessions (service level)."""

from __future__ import annotations

from datetime import timedelta

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tianfu.core.audit.models import AuditRecord
from tianfu.core.db import utcnow
from tianfu.core.identity import service as identity
from tianfu.core.identity.models import AuthSession, User
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings
from tianfu.demo import DEMO_PASSWORD


def _login(
    kernel: Kernel, db: Session, username: str, password: str = DEMO_PASSWORD, **kw: object
) -> identity.LoginOutcome:
    outcome = kernel.auth.login(db, username=username, password=password, kind=kw.pop("kind", "api"), **kw)  # type: ignore[arg-type]
    db.commit()
    return outcome


def _actions(db: Session, since_seq: int) -> list[str]:
    return list(
        db.scalars(select(AuditRecord.action).where(AuditRecord.seq > since_seq).order_by(AuditRecord.seq))
    )


def _last_seq(db: Session) -> int:
    return db.scalar(select(AuditRecord.seq).order_by(AuditRecord.seq.desc()).limit(1)) or 0


def test_successful_login_is_audited_and_creates_a_session(kernel: Kernel, db: Session) -> None:
    before = _last_seq(db)
    outcome = _login(kernel, db, "nurse.wang", client_ip="10.1.2.3")
    assert outcome.status == "ok"
    assert outcome.token
    assert _actions(db, before) == ["user.login"]
    auth = kernel.auth.resolve(db, outcome.token)
    assert auth is not None
    assert auth.user.username == "nurse.wang"
    stored = db.scalars(select(AuthSession.token_hash)).all()
    assert outcome.token not in stored  # only the hash is kept


def test_username_is_case_insensitive(kernel: Kernel, db: Session) -> None:
    assert _login(kernel, db, "  Nurse.Wang ").status == "ok"


def test_wrong_password_and_unknown_user_look_the_same(kernel: Kernel, db: Session) -> None:
    before = _last_seq(db)
    assert _login(kernel, db, "nurse.wang", "wrong-password!").status == "invalid"
    assert _login(kernel, db, "nobody", "wrong-password!").status == "invalid"
    assert _actions(db, before) == ["user.login_failed", "user.login_failed"]


def test_lockout_after_repeated_failures(kernel: Kernel, db: Session) -> None:
    threshold = kernel.settings.lockout_threshold
    before = _last_seq(db)
    outcomes = [_login(kernel, db, "nurse.li", "wrong-password!").status for _ in range(threshold)]
    assert outcomes[-1] == "locked"
    assert outcomes[:-1] == ["invalid"] * (threshold - 1)
    assert "user.locked" in _actions(db, before)
    # Even the right password is refused while locked.
    assert _login(kernel, db, "nurse.li").status == "locked"
    user = db.scalars(select(User).where(User.username == "nurse.li")).one()
    user.locked_until = utcnow() - timedelta(seconds=1)
    db.commit()
    assert _login(kernel, db, "nurse.li").status == "ok"


def test_lockout_ends_existing_sessions(kernel: Kernel, db: Session) -> None:
    token = _login(kernel, db, "nurse.li").token
    assert token is not None
    for _ in range(kernel.settings.lockout_threshold):
        _login(kernel, db, "nurse.li", "wrong-password!")
    assert kernel.auth.resolve(db, token) is None


def test_deactivated_account_cannot_sign_in(kernel: Kernel, db: Session, demo: Demo) -> None:
    user = db.scalars(select(User).where(User.username == "nurse.li")).one()
    user.is_active = False
    db.commit()
    assert _login(kernel, db, "nurse.li").status == "inactive"


def test_idle_web_session_expires(kernel: Kernel, db: Session) -> None:
    outcome = _login(kernel, db, "nurse.wang", kind="web")
    assert outcome.token is not None
    auth = kernel.auth.resolve(db, outcome.token)
    assert auth is not None
    auth.last_seen_at = utcnow() - timedelta(minutes=kernel.settings.session_idle_minutes + 1)
    db.commit()
    assert kernel.auth.resolve(db, outcome.token) is None


def test_recent_activity_keeps_a_web_session_alive(kernel: Kernel, db: Session) -> None:
    outcome = _login(kernel, db, "nurse.wang", kind="web")
    assert outcome.token is not None
    auth = kernel.auth.resolve(db, outcome.token)
    assert auth is not None
    auth.last_seen_at = utcnow() - timedelta(minutes=kernel.settings.session_idle_minutes - 1)
    db.commit()
    refreshed = kernel.auth.resolve(db, outcome.token)
    assert refreshed is not None
    assert refreshed.last_seen_at > utcnow() - timedelta(seconds=5)


def test_expired_token_is_refused(kernel: Kernel, db: Session) -> None:
    outcome = _login(kernel, db, "nurse.wang")
    assert outcome.token is not None
    auth = kernel.auth.resolve(db, outcome.token)
    assert auth is not None
    auth.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    assert kernel.auth.resolve(db, outcome.token) is None


def _enrol(kernel: Kernel, db: Session, username: str) -> str:
    user = db.scalars(select(User).where(User.username == username)).one()
    uri = identity.begin_totp_enrolment(db, user, kernel.secret_box)
    secret = uri.split("secret=")[1].split("&")[0]
    actor = identity.actor_for(user, user.username, "")
    assert identity.confirm_totp_enrolment(
        db, kernel.audit, actor=actor, user=user, box=kernel.secret_box, code=pyotp.TOTP(secret).now()
    )
    user.totp_last_step = 0  # let the test use the current code again
    db.commit()
    return secret


def test_api_login_with_second_factor(kernel: Kernel, db: Session) -> None:
    secret = _enrol(kernel, db, "dr.zhang")
    assert _login(kernel, db, "dr.zhang").status == "invalid"  # code missing
    assert _login(kernel, db, "dr.zhang", totp_code="000000").status == "invalid"
    assert _login(kernel, db, "dr.zhang", totp_code=pyotp.TOTP(secret).now()).status == "ok"


def test_web_login_with_second_factor_replaces_the_pending_session(kernel: Kernel, db: Session) -> None:
    secret = _enrol(kernel, db, "dr.zhang")
    first = _login(kernel, db, "dr.zhang", kind="web")
    assert first.status == "mfa_required"
    assert first.token is not None
    pending = kernel.auth.resolve(db, first.token)
    assert pending is not None
    assert pending.mfa_pending
    wrong = kernel.auth.complete_second_factor(db, pending, "000000")
    assert wrong.status == "invalid"
    done = kernel.auth.complete_second_factor(db, pending, pyotp.TOTP(secret).now())
    db.commit()
    assert done.status == "ok"
    assert done.token != first.token
    assert kernel.auth.resolve(db, first.token) is None


def test_role_policy_forces_enrolment(make_settings: object, db: Session) -> None:
    settings: Settings = make_settings(totp_required_roles=["physician"])  # type: ignore[operator]
    kernel = Kernel(settings)
    try:
        assert _login(kernel, db, "dr.zhang", kind="web").status == "mfa_enrolment_required"
        assert _login(kernel, db, "dr.zhang", kind="api").status == "mfa_enrolment_required"
        assert _login(kernel, db, "nurse.wang", kind="web").status == "ok"
    finally:
        kernel.engine.dispose()


def test_role_change_is_audited_and_ends_sessions(kernel: Kernel, db: Session, demo: Demo) -> None:
    token = _login(kernel, db, "nurse.li").token
    assert token is not None
    admin = demo.user("admin")
    target = db.scalars(select(User).where(User.username == "nurse.li")).one()
    identity.update_user(
        db,
        kernel.audit,
        actor=identity.actor_for(admin, "admin", ""),
        user=target,
        changes=identity.UserChanges(role="physician"),
    )
    db.commit()
    assert kernel.auth.resolve(db, token) is None
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "user.role_change")).one()
    assert record.detail == {"username": "nurse.li", "from": "nurse", "to": "physician"}


def test_password_change_requires_the_current_password(kernel: Kernel, db: Session) -> None:
    user = db.scalars(select(User).where(User.username == "nurse.wang")).one()
    before = _last_seq(db)
    assert not kernel.auth.reauthenticate(db, user, "wrong-password")
    db.commit()
    assert user.failed_login_count == 1  # counts toward the lockout, like a failed sign-in
    assert _actions(db, before) == ["user.login_failed"]
    assert kernel.auth.reauthenticate(db, user, DEMO_PASSWORD)
    identity.set_password(
        db,
        kernel.audit,
        actor=identity.actor_for(user, user.username, ""),
        user=user,
        new_password="Another-pass-77",
        by_owner=True,
    )
    db.commit()
    assert _login(kernel, db, "nurse.wang", "Another-pass-77").status == "ok"
    assert _login(kernel, db, "nurse.wang").status == "invalid"
