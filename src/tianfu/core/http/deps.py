"""Typed FastAPI dependencies: the kernel, a database session, the caller, and permission checks.

Every route declares exactly one access rule: :func:`require` with permissions, or :data:`PUBLIC`.
``tests/core/test_route_rules.py`` fails if a route declares neither, and the authorisation-matrix
test calls every route as every role.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE
from tianfu.core.errors import Forbidden, Unauthorized
from tianfu.core.identity.models import AuthSession
from tianfu.core.identity.service import principal_for
from tianfu.core.kernel import Kernel
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal

SESSION_COOKIE = "tianfu_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def get_kernel(request: Request) -> Kernel:
    kernel: Kernel = request.app.state.kernel
    return kernel


KernelDep = Annotated[Kernel, Depends(get_kernel)]


def get_session(kernel: KernelDep) -> Iterator[Session]:
    with kernel.sessions() as session:
        yield session


DbDep = Annotated[Session, Depends(get_session)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _token(request: Request) -> tuple[str | None, str]:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip(), "api"
    return request.cookies.get(SESSION_COOKIE), "web"


def resolve_auth_session(request: Request, kernel: Kernel, session: Session) -> AuthSession | None:
    token, kind = _token(request)
    if not token:
        return None
    auth = kernel.auth.resolve(session, token)
    if auth is None or auth.kind != kind:
        return None
    return auth


def optional_principal(request: Request, kernel: KernelDep, session: DbDep) -> Principal | None:
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    auth = resolve_auth_session(request, kernel, session)
    if auth is None or auth.mfa_pending:
        return None
    principal = principal_for(auth, client_ip(request))
    request.state.principal = principal
    return principal


def current_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise Unauthorized("sign in, or send a valid bearer token")
    return principal


async def check_csrf(
    request: Request, principal: Annotated[Principal, Depends(current_principal)]
) -> Principal:
    """Cookie sessions must echo their CSRF token on unsafe methods (bearer tokens need not)."""
    if principal.session_kind != "web" or request.method not in UNSAFE_METHODS:
        return principal
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or sent != principal.csrf_token:
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")
    return principal


class Requirement:
    """Dependency that admits a caller holding all of ``permissions`` and audits a refusal."""

    def __init__(self, *permissions: Permission) -> None:
        if not permissions:
            raise ValueError("name at least one permission; use PUBLIC for public routes")
        self.permissions = permissions

    def __call__(
        self,
        request: Request,
        kernel: KernelDep,
        session: DbDep,
        principal: Annotated[Principal, Depends(check_csrf)],
    ) -> Principal:
        missing = [p for p in self.permissions if not principal.can(p)]
        if missing:
            session.rollback()
            kernel.audit.record(
                session,
                actor=principal.actor,
                action="access.denied",
                action_type="E",
                outcome=OUTCOME_MINOR_FAILURE,
                outcome_desc=f"role {principal.role} lacks {', '.join(missing)}",
                resource_type="Route",
                resource_id=f"{request.method} {request.url.path}",
            )
            session.commit()
            raise Forbidden(f"your role ({principal.role}) may not do this")
        return principal

    def __repr__(self) -> str:
        return f"require({', '.join(self.permissions)})"


def require(*permissions: Permission) -> Requirement:
    return Requirement(*permissions)


class _Public:
    """Marks a route as reachable without signing in (login, health, static assets)."""

    def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "PUBLIC"


PUBLIC = _Public()
