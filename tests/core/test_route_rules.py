"""Every route declares its access rule in one place: a permission requirement, or PUBLIC."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tianfu.app import create_app
from tianfu.core.http.deps import PUBLIC, Requirement
from tianfu.core.settings import Settings

PUBLIC_ROUTES = {
    ("POST", "/api/v1/auth/token"),
    ("GET", "/fhir/R4/metadata"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/docs"),
    ("GET", "/lang/{code}"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/login/mfa"),
    ("POST", "/login/mfa"),
    ("GET", "/login/enrol"),
    ("POST", "/login/enrol"),
    ("GET", "/api/v1/openapi.json"),
}


def rules(dependant: Dependant) -> list[object]:
    found: list[object] = []
    for sub in dependant.dependencies:
        if isinstance(sub.call, Requirement) or sub.call is PUBLIC:
            found.append(sub.call)
        found.extend(rules(sub))
    return found


def flat_routes(routes: list[Any]) -> list[APIRoute]:
    """APIRoutes, including those of included routers (FastAPI keeps those nested)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(flat_routes(route.original_router.routes))
    return found


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    return [
        (method, route) for route in flat_routes(app.routes) for method in sorted(route.methods - {"HEAD"})
    ]


def test_every_route_declares_exactly_one_rule(settings: Settings) -> None:
    app = create_app(settings)
    missing, doubled = [], []
    for method, route in api_routes(app):
        found = rules(route.dependant)
        if not found:
            missing.append(f"{method} {route.path}")
        elif len({id(r) for r in found}) > 1:
            doubled.append(f"{method} {route.path}: {found}")
    assert missing == [], "routes without an access rule"
    assert doubled == [], "routes with more than one access rule"


def test_public_routes_are_the_expected_few(settings: Settings) -> None:
    app = create_app(settings)
    public = {(method, route.path) for method, route in api_routes(app) if PUBLIC in rules(route.dependant)}
    assert public == PUBLIC_ROUTES - {("GET", "/api/v1/openapi.json")}
