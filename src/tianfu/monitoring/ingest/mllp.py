"""HL7 v2 over MLLP: an asyncio TCP listener for bedside monitors and gateways.

Each connection is read message by message (a connection's messages keep their order); connections are
independent, so a slow or broken client never holds up the others. A message is acknowledged AA only
after the handler accepted it (the bus has it); a refused one gets AE/AR with an ERR segment and is kept
in the dead-letter store.

A protocol object per connection rather than a stream and a task: at thousands of messages a second the
task switch per message cost more than reading the message. When the handler can take a report at once
(the in-process bus), the message is read, handed over and acknowledged within the read callback; when it
has to wait (JetStream, the dead-letter store), the connection stops reading until it is done, so its
messages stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from tianfu.monitoring.ingest.hl7 import END, START, HL7Error, acknowledgement, frame, parse_pcd01
from tianfu.monitoring.ingest.report import DeviceReport

log = logging.getLogger(__name__)

ReportHandler = Callable[[DeviceReport], Awaitable[None]]
ReportTaker = Callable[[DeviceReport], bool]  # True: taken now; False: use the awaitable handler
RejectHandler = Callable[[bytes, str, str], Awaitable[None]]  # raw message, reason, peer


@dataclass
class MllpStats:
    connections: int = 0
    accepted: int = 0
    rejected: int = 0


class MllpServer:
    def __init__(
        self,
        on_report: ReportHandler,
        on_reject: RejectHandler,
        *,
        take_report: ReportTaker | None = None,
        host: str = "127.0.0.1",
        port: int = 2575,
        max_message_bytes: int = 1_048_576,
        idle_timeout_s: float = 300.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.on_report = on_report
        self.on_reject = on_reject
        self.take_report = take_report
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.sock = sock  # a listening socket to serve instead of binding host:port (listener processes)
        self.stats = MllpStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(lambda: _Connection(self), sock=self.sock, backlog=1024)
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.host, self.port, backlog=1024
            )
        if self.port == 0 or self.sock is not None:
            self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._close_idle(), name="mllp-idle")
        log.info("MLLP listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _close_idle(self) -> None:
        """Drop connections silent for longer than the idle timeout (a sweep: no timer per message)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(30.0, self.idle_timeout_s / 4))
            horizon = loop.time() - self.idle_timeout_s
            for connection in list(self._connections):
                if connection.last_active < horizon and not connection.busy:
                    connection.close()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handle_now(self, message: bytes, connection: _Connection) -> Awaitable[None] | None:
        """Handle a message within the read callback if possible; otherwise what remains to be awaited."""
        try:
            _, report = parse_pcd01(message)
        except HL7Error as error:
            return self._refuse(connection, message, error)
        if self.take_report is not None:
            try:
                taken = self.take_report(report)
            except Exception as exc:
                return self._retry_later(connection, message, exc)
            if taken:
                self.stats.accepted += 1
                connection.send(frame(acknowledgement(message, "AA")))
                return None
        return self._accept(connection, message, report)

    async def _accept(self, connection: _Connection, message: bytes, report: DeviceReport) -> None:
        try:
            await self.on_report(report)
        except Exception as exc:
            await self._retry_later(connection, message, exc)
            return
        self.stats.accepted += 1
        connection.send(frame(acknowledgement(message, "AA")))

    def _retry_later(self, connection: _Connection, message: bytes, exc: Exception) -> Awaitable[None]:
        """The bus did not take the report: AE, so that the sender retries; not a dead letter."""
        log.exception("could not accept a report from %s", connection.peer, exc_info=exc)
        retry = HL7Error("AE", "207", f"not accepted now, retry: {exc}")
        return self._refuse(connection, message, retry, keep=False)

    async def _refuse(
        self,
        connection: _Connection,
        message: bytes,
        error: HL7Error,
        *,
        keep: bool = True,
        close: bool = False,
    ) -> None:
        self.stats.rejected += 1
        if keep:
            try:
                await self.on_reject(message, f"{error.ack} {error.code}: {error.text}", connection.peer)
            except Exception:
                log.exception("could not store a refused message from %s", connection.peer)
        connection.send(frame(acknowledgement(message, error.ack, error)))
        if close:
            connection.close()


class _Connection(asyncio.Protocol):
    """One monitor's connection: frames taken from the byte stream in order, one message at a time."""

    def __init__(self, server: MllpServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.busy = False  # a message is being handled asynchronously: later ones wait in the buffer
        self.write_paused = False  # the peer does not read its acknowledgements: stop reading from it
        self.closed = False
        self.last_active = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.last_active = asyncio.get_running_loop().time()
        self.server.stats.connections += 1
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.stats.connections -= 1
        self.server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = asyncio.get_running_loop().time()
        self.buffer += data
        if not self.busy:
            self._take_frames()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._reading()

    def send(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()
        self.closed = True

    def _reading(self) -> None:
        if self.closed or self.transport is None:
            return
        if self.busy or self.write_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _take_frames(self) -> None:
        server, buffer = self.server, self.buffer
        limit = server.max_message_bytes + len(START) + len(END)
        while not self.closed:
            end = buffer.find(END)
            if end < 0 and len(buffer) <= limit:
                return  # the rest of the message is still on its way
            if end < 0 or end > limit:
                self._wait(server._refuse(self, b"", HL7Error("AR", "207", "message too large"), close=True))
                return
            chunk = bytes(buffer[:end])
            del buffer[: end + len(END)]
            start = chunk.find(START)
            if start < 0:
                continue  # noise between frames
            pending = server._handle_now(chunk[start + 1 :], self)
            if pending is not None:
                self._wait(pending)
                return

    def _wait(self, pending: Awaitable[None]) -> None:
        self.busy = True
        self._reading()
        self.server._track(asyncio.ensure_future(self._finish(pending)))

    async def _finish(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            self.busy = False
            self._reading()
            if not self.closed:
                self._take_frames()
