"""Errors at the HTTP edge: RFC 9457 problem documents, FHIR OperationOutcome, or an error page.

Nothing a client sends may produce an unexplained 500: validation failures, malformed JSON, oversized
bodies, unknown routes and domain errors all become clear 4xx answers.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tianfu.core.errors import DomainError, Unauthorized

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
FHIR_MEDIA_TYPE = "application/fhir+json"

_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    423: "Account locked",
    429: "Too many requests",
    500: "Internal server error",
}
_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid",
    423: "locked",
    429: "too-many-requests",
    500: "internal",
}
_FHIR_CODES = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    423: "security",
    429: "throttled",
    500: "exception",
}


class ProblemDetail(BaseModel):
    """RFC 9457 problem document (``application/problem+json``)."""

    type: str = Field(examples=["urn:tianfu:problem:not-found"])
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[dict[str, Any]] | None = None


def _wants_page(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/fhir/", "/metrics", "/healthz", "/readyz", "/openapi")):
        return False
    return "text/html" in request.headers.get("accept", "")


def is_fhir(request: Request) -> bool:
    return request.url.path.startswith("/fhir/")


def operation_outcome(status: int, detail: str, *, diagnostics: list[str] | None = None) -> dict[str, Any]:
    issues = [
        {
            "severity": "error" if status >= 400 else "information",
            "code": _FHIR_CODES.get(status, "processing"),
            "diagnostics": message,
        }
        for message in (diagnostics or [detail])
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}


def problem(
    request: Request,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if is_fhir(request):
        diagnostics = (
            [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors] if errors else None
        )
        return JSONResponse(
            operation_outcome(status, detail, diagnostics=diagnostics),
            status_code=status,
            media_type=FHIR_MEDIA_TYPE,
            headers=headers,
        )
    if _wants_page(request):
        from tianfu.web.rendering import render_error_page

        return render_error_page(request, status, title or _TITLES.get(status, "Error"), detail)
    body: dict[str, Any] = {
        "type": f"urn:tianfu:problem:{slug or _SLUGS.get(status, 'error')}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _clean_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    cleaned = []
    for error in exc.errors():
        cleaned.append(
            {
                "loc": list(error.get("loc", ())),
                "msg": str(error.get("msg", "")),
                "type": error.get("type", ""),
            }
        )
    return cleaned


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        if isinstance(exc, Unauthorized) and _wants_page(request) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            from urllib.parse import quote

            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        headers = {"WWW-Authenticate": 'Bearer realm="tianfu"'} if isinstance(exc, Unauthorized) else None
        # A service may list what failed (a consultation's refused gates) as ``errors=[...]``.
        errors = exc.extra.get("errors")
        return problem(
            request, exc.status, exc.detail, slug=exc.slug, title=exc.title, errors=errors, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = _clean_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(
                request, 400, "the request body is not valid JSON", slug="malformed-json", errors=errors
            )
        return problem(request, 422, "the request does not match the schema", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        return problem(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(request, 500, "an unexpected error occurred; it has been logged")


# Documented on every API route so clients (and schemathesis) know what errors look like.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ProblemDetail,
        "description": _TITLES[status],
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
    }
    for status in (400, 401, 403, 404, 409, 413, 422)
}
