"""ASGI middleware: request size limit, security headers, Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Refuses bodies larger than ``max_bytes`` with 413, whether or not Content-Length is sent.

    A body without Content-Length (chunked) is read up to the limit before the app sees it, then
    replayed: an exception raised from inside ``receive`` would reach FastAPI's body parser, which
    reports every such failure as a generic 400.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        own_limit_paths: tuple[str, ...] = (),
        larger_limits: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Routes that take large uploads (DICOM) enforce their own, larger limit.
        self.own_limit_paths = own_limit_paths
        # Path prefixes allowed a larger body than the default, enforced here all the same (datasets,
        # attachments). A ``*`` in a prefix stands for one path segment (``/consultations/*/files``).
        self.larger_limits = tuple(
            (re.compile(re.escape(prefix).replace(r"\*", "[^/]+")), limit) for prefix, limit in larger_limits
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        own_limit = bool(self.own_limit_paths) and path.startswith(self.own_limit_paths)
        if scope["type"] != "http" or own_limit:
            await self.app(scope, receive, send)
            return
        max_bytes = next((n for prefix, n in self.larger_limits if prefix.match(path)), self.max_bytes)
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > max_bytes:
                await self._reject(scope, send, max_bytes)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > max_bytes:
                await self._reject(scope, send, max_bytes)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        await self.app(scope, _replay(replay, receive), send)

    async def _reject(self, scope: Scope, send: Send, max_bytes: int) -> None:
        fhir = scope.get("path", "").startswith("/fhir/")
        if fhir:
            body: dict[str, Any] = {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "too-long",
                        "diagnostics": f"body larger than {max_bytes} bytes",
                    }
                ],
            }
            media = b"application/fhir+json"
        else:
            body = {
                "type": "urn:tianfu:problem:too-large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"the body is larger than {max_bytes} bytes",
                "instance": scope.get("path", ""),
            }
            media = b"application/problem+json"
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", media),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class SecurityHeaders:
    """Headers every page needs: no framing, no sniffing, scripts only from ourselves."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            b"frame-ancestors 'none'; form-action 'self'",
        ),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Metrics:
    """Request counts and latency per route template (never per raw path: ids would explode labels)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "tianfu_http_requests", "HTTP requests handled", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "tianfu_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(method, template, str(status)).inc()
            self.latency.labels(method, template).observe(time.perf_counter() - start)


class _SpooledBody:
    """A request body read ahead: in memory up to ``max_memory`` bytes, on disk beyond (uploads)."""

    CHUNK = 64 * 1024

    def __init__(self, max_memory: int) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=max_memory)  # noqa: SIM115 - closed in close()
        self.size = 0
        self.tail: Message | None = None  # a message after the body (the client went away)

    async def read_all(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                self.tail = message
                return
            chunk = message.get("body", b"")
            self.file.write(chunk)
            self.size += len(chunk)
            if not message.get("more_body", False):
                return

    def replay(self, receive: Receive) -> Receive:
        self.file.seek(0)
        left = self.size
        started = False

        async def next_message() -> Message:
            nonlocal left, started
            if left > 0 or not started:
                started = True
                chunk = self.file.read(min(self.CHUNK, left))
                left -= len(chunk)
                # A body cut short by a client that went away is not passed on as complete.
                return {"type": "http.request", "body": chunk, "more_body": left > 0 or self.tail is not None}
            if self.tail is not None:
                tail, self.tail = self.tail, None
                return tail
            return await receive()

        return next_message

    def close(self) -> None:
        self.file.close()


class InFlightLimit:
    """Runs at most ``limit`` requests at once; the others wait in the event loop, holding nothing.

    A request's transaction spans several worker-thread hops (session dependency, principal, endpoint).
    Unlimited, a burst of requests takes every worker thread (anyio's 40) waiting for the database
    (SQLite's write lock, taken by ``BEGIN IMMEDIATE``, or a pooled PostgreSQL connection) while the
    request that holds it waits for a thread: they all fail after ``busy_timeout`` or the pool timeout.
    So that a slow client cannot hold a place, the request body is read before the request is admitted
    (in memory up to ``buffer_bytes``, on disk beyond, so that large uploads cost no memory; the size
    limit outside this has already capped it), and the place is given back as soon as the response
    starts (live streams, large downloads). Routes that enforce their own, larger body limit (DICOM STOW)
    are let through unqueued.
    """

    def __init__(
        self, app: ASGIApp, limit: int, buffer_bytes: int = 1 << 20, unqueued_paths: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.buffer_bytes = buffer_bytes
        self.unqueued_paths = unqueued_paths
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:  # one app may be served by successive loops
            self._gate = (loop, asyncio.Semaphore(self.limit))
        return self._gate[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or (self.unqueued_paths and path.startswith(self.unqueued_paths)):
            await self.app(scope, receive, send)
            return
        body: _SpooledBody | None = None
        if scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            body = _SpooledBody(self.buffer_bytes)
            try:
                await body.read_all(receive)
            except BaseException:
                body.close()
                raise
        replay = body.replay(receive) if body is not None else receive

        gate = self._semaphore()
        await gate.acquire()
        held = True

        async def send_and_release(message: Message) -> None:
            nonlocal held
            if held and message["type"] == "http.response.start":
                held = False
                gate.release()
            await send(message)

        try:
            await self.app(scope, replay, send_and_release)
        finally:
            if held:
                gate.release()
            if body is not None:
                body.close()
