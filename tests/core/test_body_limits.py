"""Per-path body limits: a larger limit for some prefixes is still enforced by the kernel."""

from __future__ import annotations

import asyncio
from typing import Any

from tianfu.core.http.middleware import BodySizeLimit


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _status(
    path: str, size: int, *, chunked: bool, limits: tuple[tuple[str, int], ...] = (("/datasets", 10_000),)
) -> int:
    app = BodySizeLimit(_echo, max_bytes=1_000, larger_limits=limits)
    headers = [] if chunked else [(b"content-length", str(size).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x" * size, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


def test_a_larger_limit_applies_only_under_its_prefix() -> None:
    for chunked in (False, True):
        assert _status("/datasets/upload", 5_000, chunked=chunked) == 200
        assert _status("/datasets/upload", 20_000, chunked=chunked) == 413
        assert _status("/api/v1/patients", 5_000, chunked=chunked) == 413
        assert _status("/api/v1/patients", 500, chunked=chunked) == 200


def test_a_star_in_a_prefix_stands_for_one_path_segment() -> None:
    app_limits = (("/consultations/*/attachments", 10_000),)
    for path, expected in (
        ("/consultations/c1/attachments", 200),
        ("/consultations/c1/messages", 413),
        ("/consultations/c1/x/attachments", 413),
    ):
        assert _status(path, 5_000, chunked=False, limits=app_limits) == expected
