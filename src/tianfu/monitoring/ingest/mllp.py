"""HL7 v2 over MLLP: an asyncio TCP listener for bedside monitors and gateways.

Each connection is read message by message (a connection's messages keep their order); connections are
independent, so a slow or broken client never holds up the others. A message is acknowledged AA only
after the handler accepted it (the bus has it); a refused one gets AE/AR with an ERR segment and is kept
in the dead-letter store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tianfu.monitoring.ingest.hl7 import END, START, HL7Error, acknowledgement, frame, parse_pcd01
from tianfu.monitoring.ingest.report import DeviceReport

log = logging.getLogger(__name__)

ReportHandler = Callable[[DeviceReport], Awaitable[None]]
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
        host: str = "127.0.0.1",
        port: int = 2575,
        max_message_bytes: int = 1_048_576,
        idle_timeout_s: float = 300.0,
    ) -> None:
        self.on_report = on_report
        self.on_reject = on_reject
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.stats = MllpStats()
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_client, self.host, self.port, limit=self.max_message_bytes + 16, backlog=1024
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._clients):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        peer = "{}:{}".format(*writer.get_extra_info("peername", ("?", 0))[:2])
        self.stats.connections += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):  # no task per read, unlike wait_for
                        chunk = await reader.readuntil(END)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return  # closed, reset or idle: drop the connection, others are unaffected
                except asyncio.LimitOverrunError:
                    await self._refuse(writer, b"", HL7Error("AR", "207", "message too large"), peer)
                    return
                start = chunk.find(START)
                if start < 0:
                    continue  # noise between frames
                message = chunk[start + 1 : -len(END)]
                await self._handle(message, writer, peer)
        finally:
            self.stats.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._clients.discard(task)

    async def _handle(self, message: bytes, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            _, report = parse_pcd01(message)
        except HL7Error as error:
            await self._refuse(writer, message, error, peer)
            return
        try:
            await self.on_report(report)
        except Exception as exc:  # the bus did not take it: the sender must retry, so say AE
            log.exception("could not accept a report from %s", peer)
            await self._refuse(
                writer, message, HL7Error("AE", "207", f"not accepted now, retry: {exc}"), peer, keep=False
            )
            return
        self.stats.accepted += 1
        writer.write(frame(acknowledgement(message, "AA")))
        await writer.drain()

    async def _refuse(
        self, writer: asyncio.StreamWriter, message: bytes, error: HL7Error, peer: str, *, keep: bool = True
    ) -> None:
        self.stats.rejected += 1
        if keep:
            try:
                await self.on_reject(message, f"{error.ack} {error.code}: {error.text}", peer)
            except Exception:
                log.exception("could not store a refused message from %s", peer)
        writer.write(frame(acknowledgement(message, error.ack, error)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
