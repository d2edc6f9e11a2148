"""/api/v1: tokens, the caller's own account, and user administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.orm import Session

from tianfu.core.errors import Forbidden, Invalid, Locked, NotFound, Unauthorized
from tianfu.core.http.deps import PUBLIC, DbDep, KernelDep, client_ip, require, resolve_auth_session
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.identity import service
from tianfu.core.identity.models import User
from tianfu.core.identity.schemas import (
    MeOut,
    PasswordChange,
    PasswordReset,
    TokenOut,
    TokenRequest,
    UserCreate,
    UserOut,
    UserUpdate,
    permissions_of,
)
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)

Self = Annotated[Principal, Depends(require(Permission.ACCOUNT_SELF))]
UserReader = Annotated[Principal, Depends(require(Permission.USER_READ))]
UserManager = Annotated[Principal, Depends(require(Permission.USER_MANAGE))]


def user_out(user: User) -> UserOut:
    return UserOut.model_validate(
        {
            **{k: getattr(user, k) for k in UserOut.model_fields if k != "ward_ids"},
            "ward_ids": [w.id for w in user.wards],
        }
    )


@router.post(
    "/auth/token",
    tags=["auth"],
    dependencies=[Depends(PUBLIC)],
    responses={423: PROBLEM_RESPONSES[422] | {"description": "Locked"}},
    summary="Exchange username and password (and TOTP code) for a bearer token",
)
def issue_token(request: Request, kernel: KernelDep, session: DbDep, body: TokenRequest) -> TokenOut:
    outcome = kernel.auth.login(
        session,
        username=body.username,
        password=body.password,
        kind="api",
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        totp_code=body.totp_code,
    )
    session.commit()
    if outcome.status == "locked":
        raise Locked("too many failed attempts; the account is locked for a while")
    if outcome.status == "mfa_enrolment_required":
        raise Forbidden("this account must enrol a second factor in the web interface first")
    if outcome.status != "ok" or outcome.token is None or outcome.user is None:
        raise Unauthorized("wrong username, password or second-factor code")
    return TokenOut(
        access_token=outcome.token,
        expires_in=kernel.settings.session_max_hours * 3600,
        user=user_out(outcome.user),
    )


@router.post(
    "/auth/logout", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT, summary="Revoke this token"
)
def logout(request: Request, kernel: KernelDep, session: DbDep, principal: Self) -> None:
    auth = resolve_auth_session(request, kernel, session)
    if auth is not None:
        kernel.auth.logout(session, auth, principal.client_ip)
        session.commit()


@router.get("/auth/me", tags=["auth"], summary="Who am I, and what may I do")
def me(session: DbDep, principal: Self) -> MeOut:
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("account no longer exists")
    return MeOut(**user_out(user).model_dump(), permissions=permissions_of(user.role))


@router.post(
    "/auth/password", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT, summary="Change my password"
)
def change_password(kernel: KernelDep, session: DbDep, principal: Self, body: PasswordChange) -> None:
    user = _user(session, principal.user_id)
    if not kernel.auth.reauthenticate(session, user, body.current_password, client_ip=principal.client_ip):
        session.commit()  # keep the audit record (and the failure count) of the wrong password
        raise Invalid("current password is wrong")
    try:
        service.set_password(
            session,
            kernel.audit,
            actor=principal.actor,
            user=user,
            new_password=body.new_password,
            by_owner=True,
        )
    except service.AccountError as exc:
        raise Invalid(str(exc)) from exc
    session.commit()


def _user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def _managed_user(session: Session, principal: Principal, user_id: str) -> User:
    user = _user(session, user_id)
    if user.organization_id != principal.organization_id:
        raise Forbidden("that account belongs to another institution")
    return user


@router.get("/users", tags=["users"], summary="Accounts of your institution")
def list_users(
    session: DbDep, principal: UserReader, role: Annotated[str | None, Query(max_length=20)] = None
) -> list[UserOut]:
    users = service.list_users(session, organization_id=principal.organization_id)
    return [user_out(u) for u in users if role is None or u.role == role]


@router.post("/users", tags=["users"], status_code=status.HTTP_201_CREATED, summary="Create an account")
def create_user(kernel: KernelDep, session: DbDep, principal: UserManager, body: UserCreate) -> UserOut:
    organization_id = body.organization_id or principal.organization_id
    if organization_id != principal.organization_id:
        raise Forbidden("you can only create accounts in your own institution")
    try:
        user = service.create_user(
            session,
            kernel.audit,
            actor=principal.actor,
            new=service.NewUser(**(body.model_dump() | {"organization_id": organization_id})),
        )
    except service.AccountError as exc:
        raise Invalid(str(exc)) from exc
    session.commit()
    return user_out(user)


@router.get("/users/{user_id}", tags=["users"], summary="One account")
def read_user(session: DbDep, principal: UserReader, user_id: str) -> UserOut:
    return user_out(_managed_user(session, principal, user_id))


@router.patch("/users/{user_id}", tags=["users"], summary="Change role, wards, status or details")
def update_user(
    kernel: KernelDep, session: DbDep, principal: UserManager, user_id: str, body: UserUpdate
) -> UserOut:
    user = _managed_user(session, principal, user_id)
    try:
        service.update_user(
            session,
            kernel.audit,
            actor=principal.actor,
            user=user,
            changes=service.UserChanges(**body.model_dump(exclude_unset=True)),
        )
    except service.AccountError as exc:
        raise Invalid(str(exc)) from exc
    session.commit()
    return user_out(user)


@router.post("/users/{user_id}/unlock", tags=["users"], summary="Lift a lockout")
def unlock_user(kernel: KernelDep, session: DbDep, principal: UserManager, user_id: str) -> UserOut:
    user = _managed_user(session, principal, user_id)
    service.unlock(session, kernel.audit, actor=principal.actor, user=user)
    session.commit()
    return user_out(user)


@router.post(
    "/users/{user_id}/password",
    tags=["users"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password for someone (ends their sessions)",
)
def reset_password(
    kernel: KernelDep, session: DbDep, principal: UserManager, user_id: str, body: PasswordReset
) -> None:
    user = _managed_user(session, principal, user_id)
    try:
        service.set_password(
            session,
            kernel.audit,
            actor=principal.actor,
            user=user,
            new_password=body.new_password,
            by_owner=False,
        )
    except service.AccountError as exc:
        raise Invalid(str(exc)) from exc
    session.commit()
