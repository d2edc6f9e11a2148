"""The HL7 listener in child processes (TIANFU_HL7_PROCESSES): real processes, real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.monitoring.test_ingest_hl7 import EXAMPLE, _exchange
from tianfu.monitoring.ingest.processes import MllpProcesses
from tianfu.monitoring.ingest.report import DeviceReport, report_subject

PARTITIONS = 4


class Sink:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], str]] = []
        self.refused: list[tuple[bytes, str, str]] = []

    def publish(self, subject: str, data: dict[str, Any], event_id: str) -> None:
        self.published.append((subject, data, event_id))

    async def refuse(self, raw: bytes, reason: str, peer: str) -> None:
        self.refused.append((raw, reason, peer))


@pytest.fixture
async def listener() -> AsyncIterator[tuple[MllpProcesses, Sink]]:
    sink = Sink()
    processes = MllpProcesses(
        sink.publish, sink.refuse, host="127.0.0.1", port=0, processes=1, partitions=PARTITIONS
    )
    await processes.start()
    try:
        yield processes, sink
    finally:
        await processes.stop()


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_child_acknowledges_and_relays_reports_and_refused_messages(
    listener: tuple[MllpProcesses, Sink],
) -> None:
    processes, sink = listener
    answers = await _exchange(processes.port, [EXAMPLE.encode(), b"MSH|^~\\&|X|Y|Z|W|2025||ADT^A01|9|P|2.6"])
    assert [a.split(b"\r")[1] for a in answers] == [b"MSA|AA|CD01-000457", b"MSA|AR|9"]
    await _until(lambda: bool(sink.published and sink.refused))
    subject, data, event_id = sink.published[0]
    report = DeviceReport.from_data(data)
    # what the server's own listener would have put on the bus
    assert (subject, event_id) == (
        report_subject(report.device_id, PARTITIONS),
        f"{report.device_id}/CD01-000457",
    )
    assert {m.parameter for m in report.measurements} >= {"heart_rate", "spo2", "respiratory_rate"}
    raw, reason, _ = sink.refused[0]
    assert raw.startswith(b"MSH|")
    assert "unsupported message type" in reason
    assert (processes.stats.accepted, processes.stats.rejected) == (1, 1)


async def test_many_connections_messages_keep_their_order(listener: tuple[MllpProcesses, Sink]) -> None:
    processes, sink = listener

    async def monitor(index: int) -> list[bytes]:
        messages = [EXAMPLE.replace("CD01-000457", f"M{index}-{n}").encode() for n in range(20)]
        return await _exchange(processes.port, messages)

    answers = await asyncio.gather(*(monitor(i) for i in range(10)))
    assert all(a.split(b"\r")[1].startswith(b"MSA|AA|") for each in answers for a in each)
    await _until(lambda: len(sink.published) == 200)
    for index in range(10):
        ids = [e for _, _, e in sink.published if e.split("/")[1].startswith(f"M{index}-")]
        assert ids == [f"{ids[0].split('/')[0]}/M{index}-{n}" for n in range(20)]


async def test_a_child_that_dies_is_started_again(listener: tuple[MllpProcesses, Sink]) -> None:
    processes, sink = listener
    first = processes.children[0]
    os.kill(first.pid, signal.SIGKILL)
    await _until(lambda: processes.children[0] is not first)
    await _until(lambda: processes.children[0].poll() is None)

    async def accepted() -> bool:
        try:
            answer = await _exchange(processes.port, [EXAMPLE.encode()])
        except (ConnectionError, TimeoutError):
            return False
        return answer[0].split(b"\r")[1] == b"MSA|AA|CD01-000457"

    deadline = asyncio.get_running_loop().time() + 20
    while not await accepted():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    await _until(lambda: bool(sink.published))


async def test_stop_ends_the_children() -> None:
    sink = Sink()
    processes = MllpProcesses(
        sink.publish, sink.refuse, host="127.0.0.1", port=0, processes=2, partitions=PARTITIONS
    )
    await processes.start()
    await _exchange(processes.port, [EXAMPLE.encode()])
    children = processes.children
    await processes.stop()
    assert [c.poll() for c in children] == [0, 0]
    await _until(lambda: len(sink.published) == 1)  # what was taken before the stop is relayed
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", processes.port)
