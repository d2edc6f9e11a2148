"""Domain errors. Services raise these; the HTTP edge turns them into RFC 9457 problem documents
(OperationOutcome on FHIR routes, an error page for people)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class Unauthorized(DomainError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class Invalid(DomainError):
    status = 422
    slug = "invalid"
    title = "Invalid request"


class Locked(DomainError):
    status = 423
    slug = "locked"
    title = "Account locked"
