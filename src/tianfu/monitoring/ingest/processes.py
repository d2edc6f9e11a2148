"""The HL7 MLLP listener in child processes, feeding the server's in-process bus (``TIANFU_HL7_PROCESSES``).

At thousands of monitors, reading, parsing and acknowledging their messages costs about as much as scoring
them, and one Python process uses one core. With ``TIANFU_HL7_PROCESSES=N`` the server keeps the
listening socket and hands it to N child processes (``python -m tianfu.monitoring.ingest.processes``):
each accepts connections, reads and parses messages and acknowledges them, and relays accepted reports and
refused messages to the server over a private socket pair, in batches (one write per turn of its event
loop). The server puts the reports on its bus and stores refused messages as dead letters; the scoring
stays in the server, which holds every bed's state.

An acknowledgement means what it means in process: the report is in the server's memory, on its way to
scoring (nothing is durable on the in-process bus; scale-out with JetStream uses ``tianfu monitor listen``
processes instead). A child that dies is started again; its monitors reconnect and resend what was not
acknowledged. A child whose server is gone stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from tianfu.monitoring.ingest.mllp import MllpServer, MllpStats
from tianfu.monitoring.ingest.report import DeviceReport

log = logging.getLogger(__name__)

# A relayed batch: a 4-byte length, then a pickled list of items (from our own child, never from outside):
REPORT = "r"  # ("r", subject, data, event id)
REFUSED = "x"  # ("x", raw message, reason, peer)
CONNECTIONS = "c"  # ("c", open connections), every STATS_EVERY_S
STATS_EVERY_S = 1.0
RESTART_AFTER_S = 1.0
STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
# The child stops taking reports while this much is written and not yet read by the server.
RELAY_HIGH_WATER = 4 * 1024 * 1024

Publish = Callable[[str, dict[str, Any], str], None]
Refused = Callable[[bytes, str, str], Awaitable[None]]


# --- in the server ---------------------------------------------------------------------------------------


class MllpProcesses:
    """The listener as ``processes`` children; what they accept goes to ``publish``, what they refuse to
    ``refused`` (the dead-letter store). Offers what :class:`MllpServer` offers the server: ``port``,
    ``stats``, ``start`` and ``stop``."""

    def __init__(
        self,
        publish: Publish,
        refused: Refused,
        *,
        host: str,
        port: int,
        processes: int,
        partitions: int,
    ) -> None:
        self.publish = publish
        self.refused = refused
        self.host = host
        self.port = port
        self.processes = processes
        self.partitions = partitions
        self.stats = MllpStats()
        self._listener: socket.socket | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # by index: a restarted child takes its place
        self._relays: dict[int, asyncio.Transport] = {}
        self._connections: dict[int, int] = {}
        self._ended: dict[int, asyncio.Future[None]] = {}
        self._ready: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def children(self) -> list[subprocess.Popen[bytes]]:
        return list(self._children.values())

    async def start(self) -> None:
        self._listener = socket.create_server((self.host, self.port), backlog=1024)
        self.port = self._listener.getsockname()[1]
        for index in range(self.processes):
            await self._spawn(index)
        try:  # each child says how many connections it has as soon as it listens
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(r) for r in self._ready.values())), START_TIMEOUT_S
            )
        except TimeoutError:
            await self.stop()
            raise RuntimeError("the HL7 listener processes did not start") from None
        log.info("MLLP listening on %s:%s in %d processes", self.host, self.port, self.processes)

    async def _spawn(self, index: int) -> None:
        assert self._listener is not None
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "tianfu.monitoring.ingest.processes",
            f"--listen-fd={self._listener.fileno()}",
            f"--relay-fd={theirs.fileno()}",
            f"--partitions={self.partitions}",
        ]
        child = subprocess.Popen(command, pass_fds=(self._listener.fileno(), theirs.fileno()))  # noqa: S603
        theirs.close()
        self._children[index] = child
        self._ended[index] = asyncio.get_running_loop().create_future()
        self._ready[index] = asyncio.get_running_loop().create_future()
        transport, _ = await asyncio.get_running_loop().create_connection(
            lambda: _RelayReader(self, index), sock=ours
        )
        self._relays[index] = transport

    def _take(self, index: int, items: list[tuple[Any, ...]]) -> None:
        stats = self.stats
        publish = self.publish
        for item in items:
            kind = item[0]
            if kind == REPORT:
                publish(item[1], item[2], item[3])
                stats.accepted += 1
            elif kind == REFUSED:
                stats.rejected += 1
                self._track(asyncio.ensure_future(self._store_refused(item[1], item[2], item[3])))
            elif kind == CONNECTIONS:
                self._connections[index] = item[1]
                stats.connections = sum(self._connections.values())
                if not self._ready[index].done():
                    self._ready[index].set_result(None)

    async def _store_refused(self, raw: bytes, reason: str, peer: str) -> None:
        try:
            await self.refused(raw, reason, peer)
        except Exception:
            log.exception("could not store a refused message from %s", peer)

    def _relay_ended(self, index: int) -> None:
        """The child closed its end: it stopped or died. Unless the server is stopping, start another."""
        self._relays.pop(index, None)
        self._connections.pop(index, None)
        ended = self._ended.get(index)
        if ended is not None and not ended.done():
            ended.set_result(None)
        if not self._stopping:
            self._track(asyncio.ensure_future(self._restart(index)))

    async def _restart(self, index: int) -> None:
        child = self._children.get(index)
        code = await asyncio.to_thread(child.wait) if child is not None else None
        log.error("HL7 listener process %d exited (code %s); starting it again", index, code)
        while not self._stopping:
            await asyncio.sleep(RESTART_AFTER_S)
            try:
                await self._spawn(index)
                return
            except Exception:
                log.exception("could not start HL7 listener process %d", index)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Children stop accepting, close their connections and relay what they took; then they exit."""
        self._stopping = True
        for child in self._children.values():
            if child.poll() is None:
                child.terminate()
        for index, child in self._children.items():
            try:
                await asyncio.to_thread(child.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("HL7 listener process %d did not stop; killing it", index)
                child.kill()
                await asyncio.to_thread(child.wait)
            with contextlib.suppress(asyncio.TimeoutError):  # the last batches are read to the end
                await asyncio.wait_for(asyncio.shield(self._ended[index]), STOP_TIMEOUT_S)
        for transport in self._relays.values():
            transport.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            self._listener.close()


class _RelayReader(asyncio.Protocol):
    def __init__(self, owner: MllpProcesses, index: int) -> None:
        self.owner = owner
        self.index = index
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while len(buffer) - start >= 4:
            size = int.from_bytes(buffer[start : start + 4], "big")
            end = start + 4 + size
            if len(buffer) < end:
                break
            items = pickle.loads(buffer[start + 4 : end])  # noqa: S301 - written by our own child process
            start = end
            try:
                self.owner._take(self.index, items)
            except Exception:  # a batch the bus would not take must not stop the relay
                log.exception("could not take a batch from HL7 listener process %d", self.index)
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._relay_ended(self.index)


# --- in a child ------------------------------------------------------------------------------------------


class _Relay(asyncio.Protocol):
    """The child's side: reports and refused messages, batched per turn of the event loop."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.transport: asyncio.Transport | None = None
        self.items: list[tuple[Any, ...]] = []
        self.flush_scheduled = False
        self.paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=RELAY_HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.writable.set()  # waiting reports find the relay closed

    def pause_writing(self) -> None:
        self.paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.paused = False
        self.writable.set()

    def take(self, report: DeviceReport) -> bool:
        if self.paused:
            return False
        self._put((REPORT, *report.bus_event(self.partitions)))
        return True

    async def accept(self, report: DeviceReport) -> None:
        await self.writable.wait()
        self._put((REPORT, *report.bus_event(self.partitions)))

    async def refuse(self, raw: bytes, reason: str, peer: str) -> None:
        self._put((REFUSED, raw, reason, peer))

    def _put(self, item: tuple[Any, ...]) -> None:
        if self.closed.is_set():
            raise ConnectionError("the server is gone")
        self.items.append(item)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if not self.items or self.transport is None or self.closed.is_set():
            return
        body = pickle.dumps(self.items, protocol=pickle.HIGHEST_PROTOCOL)
        self.items = []
        self.transport.write(len(body).to_bytes(4, "big") + body)


async def _serve(listen_fd: int, relay_fd: int, partitions: int) -> None:
    loop = asyncio.get_running_loop()
    relay = _Relay(partitions)
    transport, _ = await loop.create_connection(lambda: relay, sock=socket.socket(fileno=relay_fd))
    server = MllpServer(
        relay.accept, relay.refuse, take_report=relay.take, sock=socket.socket(fileno=listen_fd)
    )
    await server.start()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)

    async def report_connections() -> None:
        while True:
            relay._put((CONNECTIONS, server.stats.connections))
            await asyncio.sleep(STATS_EVERY_S)

    reporter = asyncio.ensure_future(report_connections())
    waits = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(relay.closed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in (reporter, *waits):
        task.cancel()
    await server.stop()
    relay.flush()
    if not relay.closed.is_set():
        transport.write_eof()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(relay.closed.wait(), STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--relay-fd", type=int, required=True)
    parser.add_argument("--partitions", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s hl7-listener[{os.getpid()}] %(levelname)s %(message)s"
    )
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # the standard loop works, slower
        loop_factory = None
    # Ctrl-C at a terminal reaches the whole process group: the server, which stops its children itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(args.listen_fd, args.relay_fd, args.partitions))
    log.info("stopped after %.0f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
