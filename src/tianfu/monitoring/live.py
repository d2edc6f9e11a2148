"""The live picture of every monitored bed, kept in memory and pushed to central stations.

Workers publish the new states of a ward's beds on the bus (``tianfu.monitoring.bed.<ward>``), together,
within a tenth of a second of a report or alarm change; every web process keeps the latest state per bed
from those events and streams changes of a ward to its open central-station pages (Server-Sent Events).
Nothing here is stored: the database has the downsampled record and the alarm history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tianfu.core.bus import Event

STREAM_QUEUE = 2000  # per client: a page that stops reading is dropped rather than slowing the others


@dataclass(eq=False)  # clients are kept in a set, by identity
class _Client:
    ward_id: str | None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE))
    dropped: bool = False


class LiveWards:
    def __init__(self) -> None:
        self.beds: dict[str, dict[str, Any]] = {}  # bed id → latest state
        self._clients: set[_Client] = set()

    def apply(self, states: list[dict[str, Any]]) -> None:
        fresh = []
        for state in states:
            previous = self.beds.get(state["bed_id"])
            if previous is not None and previous.get("seq", -1) > state.get("seq", 0):
                continue  # an older update arriving late
            self.beds[state["bed_id"]] = state
            fresh.append(state)
        messages: dict[int, str] = {}  # each state encoded once, and only if someone watches its ward
        for client in list(self._clients):
            for index, state in enumerate(fresh):
                if client.ward_id is not None and client.ward_id != state.get("ward_id"):
                    continue
                message = messages.get(index)
                if message is None:
                    message = messages[index] = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
                try:
                    client.queue.put_nowait(message)
                except asyncio.QueueFull:
                    client.dropped = True
                    self._clients.discard(client)
                    break

    async def on_event(self, event: Event) -> None:
        """A ward's changed beds (``{"beds": [state, ...]}``)."""
        self.apply(event.data["beds"])

    def ward(self, ward_id: str) -> list[dict[str, Any]]:
        return [s for s in self.beds.values() if s.get("ward_id") == ward_id]

    async def stream(self, ward_id: str | None, *, heartbeat_s: float = 15.0) -> AsyncIterator[str]:
        """Server-Sent Events: the current state of each bed of the ward first, then every change."""
        client = _Client(ward_id)
        self._clients.add(client)
        try:
            for state in list(self.beds.values()):
                if ward_id is None or state.get("ward_id") == ward_id:
                    yield f"data: {json.dumps(state, ensure_ascii=False, separators=(',', ':'))}\n\n"
            while not client.dropped:
                try:
                    message = await asyncio.wait_for(client.queue.get(), timeout=heartbeat_s)
                except TimeoutError:
                    yield ": heartbeat\n\n"  # keeps proxies from closing an idle stream
                    continue
                yield f"data: {message}\n\n"
        finally:
            with contextlib.suppress(KeyError):
                self._clients.remove(client)
