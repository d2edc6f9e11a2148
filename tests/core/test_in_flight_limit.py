"""The in-flight limit: at most N requests run at once, yet a slow client never holds a place."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from tianfu.core.http.middleware import InFlightLimit


def _scope(method: str = "GET", path: str = "/api/v1/x") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def _drain(message: dict[str, Any]) -> None:
    return None


def test_at_most_the_limit_run_at_once() -> None:
    running, peak = 0, 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = InFlightLimit(app, limit=2)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await asyncio.gather(*(limited(_scope(), receive, _drain) for _ in range(10)))

    asyncio.run(main())
    assert peak == 2


def test_a_slow_upload_does_not_hold_a_place() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message.get("body", b"")})

    limited = InFlightLimit(app, limit=1)

    async def main() -> list[str]:
        order: list[str] = []
        uploaded = asyncio.Event()

        async def slow_receive() -> dict[str, Any]:
            await uploaded.wait()  # the client is still sending its body
            return {"type": "http.request", "body": b"data", "more_body": False}

        async def quick_receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def record(name: str, message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                order.append(name)

        slow = asyncio.create_task(limited(_scope("POST"), slow_receive, lambda m: record("slow", m)))
        await asyncio.sleep(0)
        await asyncio.wait_for(limited(_scope(), quick_receive, lambda m: record("quick", m)), timeout=1)
        uploaded.set()
        await slow
        return order

    assert asyncio.run(main()) == ["quick", "slow"]


def test_the_place_is_given_back_when_the_response_starts() -> None:
    stream_open = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/stream":
            await stream_open.wait()  # a live stream stays open for as long as the page does
        await send({"type": "http.response.body", "body": b""})

    limited = InFlightLimit(app, limit=1)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        stream = asyncio.create_task(limited(_scope(path="/stream"), receive, _drain))
        await asyncio.sleep(0)
        await asyncio.wait_for(limited(_scope(), receive, _drain), timeout=1)
        stream_open.set()
        await stream

    asyncio.run(main())


def test_a_failing_request_gives_its_place_back() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    limited = InFlightLimit(app, limit=1)

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        for _ in range(3):
            with contextlib.suppress(RuntimeError):
                await asyncio.wait_for(limited(_scope(), receive, _drain), timeout=1)

    asyncio.run(main())


def test_a_body_larger_than_the_buffer_is_read_ahead_to_disk() -> None:
    chunks = [bytes([65 + i]) * 100_000 for i in range(5)]
    read_before_admission: list[int] = []
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        read_before_admission.append(calls)
        received = b""
        while True:
            message = await receive()
            received += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": received})

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": chunks[calls - 1], "more_body": calls < len(chunks)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(InFlightLimit(app, limit=1, buffer_bytes=1_000)(_scope("POST"), receive, send))
    assert read_before_admission == [5]  # the whole upload arrived before the request took a place
    assert sent[-1]["body"] == b"".join(chunks)


def test_a_client_gone_during_the_upload_is_told_to_the_app() -> None:
    messages = iter(
        [
            {"type": "http.request", "body": b"part", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())

    async def receive() -> dict[str, Any]:
        return next(messages)

    asyncio.run(InFlightLimit(app, limit=1)(_scope("POST"), receive, _drain))
    assert seen == [
        {"type": "http.request", "body": b"part", "more_body": True},  # not passed on as complete
        {"type": "http.disconnect"},
    ]
