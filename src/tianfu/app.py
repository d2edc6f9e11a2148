"""The ASGI application: kernel routes, FHIR, pages, and every installed module."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from tianfu import __version__
from tianfu.core import i18n
from tianfu.core.audit import views as audit_views
from tianfu.core.bus import Subscription
from tianfu.core.deadletter import views as deadletter_views
from tianfu.core.fhir import router as fhir_router
from tianfu.core.http import health, problems
from tianfu.core.http.deps import PUBLIC
from tianfu.core.http.middleware import BodySizeLimit, InFlightLimit, Metrics, SecurityHeaders
from tianfu.core.identity import views as identity_views
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import views as model_output_views
from tianfu.core.patients import views as patient_views
from tianfu.core.plugins import installed_modules
from tianfu.core.settings import Settings, get_settings
from tianfu.web import views as web_views

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "web" / "static"


class LanguageMiddleware:
    """Picks the page language from the ``tianfu_lang`` cookie, else the configured default."""

    def __init__(self, app: ASGIApp, default: str) -> None:
        self.app = app
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            language = self.default
            for name, value in scope.get("headers", []):
                if name == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        key, _, val = part.strip().partition("=")
                        if key == i18n.LANG_COOKIE and val in i18n.LANGUAGES:
                            language = val
            i18n.set_language(language)
        await self.app(scope, receive, send)


SERVER_GC_THRESHOLDS = (100_000, 50, 100)  # young, middle, old generation (CPython's: 700, 10, 10)


async def start_modules(kernel: Kernel) -> tuple[list[Subscription], list[Callable[[], Awaitable[None]]]]:
    subscriptions: list[Subscription] = []
    stoppers: list[Callable[[], Awaitable[None]]] = []
    for module in installed_modules():
        for consumer in module.consumers:
            subscriptions.append(
                await kernel.bus.subscribe(
                    consumer.subject_filter,
                    consumer.durable,
                    consumer.make_handler(kernel),
                    max_deliver=consumer.max_deliver,
                )
            )
        for service in module.services:
            stoppers.append(await service(kernel))
    return subscriptions, stoppers


def create_app(
    settings: Settings | None = None, *, kernel: Kernel | None = None, run_modules: bool = True
) -> FastAPI:
    settings = settings or get_settings()
    kernel = kernel or Kernel(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await kernel.start()
        subscriptions, stoppers = await start_modules(kernel) if run_modules else ([], [])
        # What start-up loaded (code, settings, the modules' state: thousands of monitored beds) lives as
        # long as the server: frozen, full collections no longer scan it. Collections are also made rarer:
        # at thousands of device reports a second the default thresholds cost about a tenth of a core and
        # pause the event loop often (measured by `tianfu bench monitoring`).
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*SERVER_GC_THRESHOLDS)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            for stop in stoppers:
                await stop()
            for subscription in subscriptions:
                await subscription.stop()
            await kernel.stop()

    app = FastAPI(
        title="Tianfu 天府智医 API",
        version=__version__,
        description="Smart-healthcare platform of a regional hospital network. Errors are RFC 9457 problem "
        "documents; FHIR R4 endpoints live under /fhir/R4 and answer errors with OperationOutcome.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.kernel = kernel
    registry = CollectorRegistry()
    registry.register(health.KernelCollector(kernel))
    app.state.metrics_registry = registry
    problems.install(app)

    for router in (
        identity_views.router,
        patient_views.router,
        audit_views.router,
        model_output_views.router,
        deadletter_views.router,
        fhir_router.router,
        health.router,
        web_views.router,
    ):
        app.include_router(router)
    for module in installed_modules():
        for module_router in (
            module.api_router,
            module.fhir_router,
            module.page_router,
            *module.extra_routers,
            *(module.late_routers() if module.late_routers else ()),
        ):
            if module_router is not None:
                app.include_router(module_router)

    @app.get("/api/docs", include_in_schema=False, dependencies=[Depends(PUBLIC)])
    def api_docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json",
            title="Tianfu API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/img/favicon.svg",
        )
        # Swagger UI starts itself with an inline script; allow that on this page only.
        page.headers["content-security-policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        )
        return page

    for module in installed_modules():
        if module.static_dir is not None:
            app.mount(
                f"/static/{module.key}", StaticFiles(directory=module.static_dir), name=f"static-{module.key}"
            )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Outermost first when reading bottom-up: the size limit sees the raw request before anything else.
    app.add_middleware(LanguageMiddleware, default=settings.default_locale)
    app.add_middleware(SecurityHeaders)
    own_limits = tuple(path for module in installed_modules() for path in module.own_body_limit_paths)
    larger = tuple(limit for module in installed_modules() for limit in module.larger_body_limits)
    # SQLite has one writer and every transaction here takes the write lock. PostgreSQL: every request
    # appends to the one audit chain, so more than a few at once only queue on its row lock; 8 gave the
    # lowest tail latency with 100 users (tianfu bench consult: p99 about 200 ms, against 500 ms at 24).
    concurrent = settings.max_concurrent_requests or (2 if kernel.engine.dialect.name == "sqlite" else 8)
    app.add_middleware(
        InFlightLimit, limit=concurrent, buffer_bytes=settings.max_body_bytes, unqueued_paths=own_limits
    )
    app.add_middleware(Metrics, registry=registry)  # outside the limit: latency includes the wait
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_body_bytes, own_limit_paths=own_limits, larger_limits=larger
    )
    return app
