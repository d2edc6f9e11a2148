"""IHE PCD-01 over MLLP: the reader, the acknowledgements, and the listener with real sockets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tianfu.monitoring.ingest.hl7 import (
    END,
    START,
    HL7Error,
    acknowledgement,
    frame,
    parse_pcd01,
    parse_timestamp,
)
from tianfu.monitoring.ingest.mllp import MllpServer
from tianfu.monitoring.ingest.report import DeviceReport

# The example of monitoring.md §3.1, with the container rows of every VMD.
EXAMPLE = (
    "\r".join(
        [
            "MSH|^~\\&|CMS^00A0C9FFFE12AB34^EUI-64|CDH01|TIANFU|CDRHN|20250611083015+0800||ORU^R01^ORU_R01|CD01-000457|P|2.6"
            "|||NE|AL||UNICODE UTF-8|||PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
            "PID|||0098765^^^CDH01^MR||LI^MING^^^^^L||19610722|F",
            "PV1||I|RESP5^^07",
            "OBR|1|X^CMS|X^CMS|182777000^monitoring of patient^SCT|||20250611083015+0800",
            "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
            "OBX|2||69798^MDC_DEV_ECG_VMD^MDC|1.1.0.0|||||||X",
            "OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|96|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||20250611083015+0800"
            "||||00A0C9FFFE12AB34^EUI-64",
            "OBX|4|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|95|262688^MDC_DIM_PERCENT^MDC|||||R|||20250611083015+0800",
            "OBX|5|NM|151562^MDC_RESP_RATE^MDC|1.3.1.1|21|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R|||20250611083015+0800",
            "OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.4.1.1|104|266016^MDC_DIM_MMHG^MDC|||||R|||20250611082500+0800",
            "OBX|7|NM|150364^MDC_TEMP_BODY^MDC|1.5.1.1|100.04|268160^MDC_DIM_FAHR^MDC|||||R|||20250611080000+0800",
            "OBX|8|NM|999999^MDC_SOMETHING_NEW^MDC|1.6.1.1|3|262688^MDC_DIM_PERCENT^MDC|||||R",
        ]
    )
    + "\r"
)


def test_reads_the_pcd01_example() -> None:
    header, report = parse_pcd01(EXAMPLE.encode())
    assert header.control_id == "CD01-000457"
    assert report.device_id == "00A0C9FFFE12AB34"
    assert (report.patient_mrn, report.location) == ("0098765", "RESP5//07")
    values = {m.parameter: m.value for m in report.measurements}
    assert values["heart_rate"] == 96
    assert values["spo2"] == 95
    assert values["respiratory_rate"] == 21
    assert values["systolic_bp"] == 104
    assert values["temperature"] == pytest.approx(37.8)  # sent in °F, converted
    nibp = next(m for m in report.measurements if m.parameter == "systolic_bp")
    assert nibp.observed_at == datetime(
        2025, 6, 11, 0, 25, tzinfo=UTC
    )  # its own OBX-14, not the message time
    assert [u.code.split("^")[0] for u in report.unmapped] == ["999999"]  # kept, not dropped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20250611083015+0800", datetime(2025, 6, 11, 0, 30, 15, tzinfo=UTC)),
        ("20250611083015.25+0800", datetime(2025, 6, 11, 0, 30, 15, 250000, tzinfo=UTC)),
        ("202506110830-0500", datetime(2025, 6, 11, 13, 30, tzinfo=UTC)),
        ("20250611", datetime(2025, 6, 10, 16, 0, tzinfo=UTC)),  # no zone: China time
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("message", "ack", "code"),
    [
        ("PID|||1", "AR", "100"),
        ("MSH|^~\\&|CMS^DEV1|F|T|F|20250611083015||ADT^A01|C1|P|2.6\rEVN|A01", "AR", "200"),
        ("MSH|^~\\&|CMS^DEV1|F|T|F|20250611083015||ORU^R01||P|2.6\rOBR|1", "AR", "101"),
        ("MSH|^~\\&|CMS^DEV1|F|T|F|20250611083015||ORU^R01|C1|P|2.6\rOBX|1|NM|147842|1|60", "AR", "100"),
        (
            "MSH|^~\\&|CMS^DEV1|F|T|F|20250611083015||ORU^R01|C1|P|2.6\rOBR|1||||||20250611083015\r"
            "OBX|1|NM|147842^HR^MDC|1|sixty|264864|||||R",
            "AE",
            "102",
        ),
        (
            "MSH|^~\\&|CMS^DEV1|F|T|F|20250611083015||ORU^R01|C1|P|2.6\rOBR|1||||||2025-06-11\r"
            "OBX|1|NM|147842^HR^MDC|1|60|264864|||||R",
            "AE",
            "102",
        ),
        ("MSH|^~\\&|CMS^DEV1|F|T|F|20250611083015||ORU^R01|C1|P|2.6\rOBR|1", "AE", "101"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(message: str, ack: str, code: str) -> None:
    with pytest.raises(HL7Error) as caught:
        parse_pcd01(message.encode())
    assert (caught.value.ack, caught.value.code) == (ack, code)
    answer = acknowledgement(message.encode(), caught.value.ack, caught.value).decode()
    assert f"MSA|{ack}|" in answer
    assert f"ERR|||{code}^" in answer.replace(f"ERR||{caught.value.location}|", "ERR|||")


def test_acknowledgement_echoes_the_control_id() -> None:
    answer = acknowledgement(EXAMPLE.encode(), "AA").decode()
    msh, msa = answer.strip("\r").split("\r")
    assert msh.split("|")[8] == "ACK^R01^ACK"
    assert msh.split("|")[4] == "CMS^00A0C9FFFE12AB34^EUI-64"  # back to the sender
    assert msa == "MSA|AA|CD01-000457"


def test_non_utf8_garbage_still_gets_an_answer() -> None:
    with pytest.raises(HL7Error) as caught:
        parse_pcd01(b"\xff\xfe\x00garbage")
    assert b"MSA|AR|" in acknowledgement(b"\xff\xfe\x00garbage", "AR", caught.value)


class Collector:
    def __init__(self, fail: bool = False) -> None:
        self.reports: list[DeviceReport] = []
        self.rejected: list[tuple[bytes, str]] = []
        self.fail = fail

    async def report(self, report: DeviceReport) -> None:
        if self.fail:
            raise RuntimeError("bus unavailable")
        self.reports.append(report)

    async def reject(self, raw: bytes, reason: str, peer: str) -> None:
        self.rejected.append((raw, reason))


async def _exchange(port: int, messages: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for message in messages:
        writer.write(frame(message))
        await writer.drain()
        answers.append((await asyncio.wait_for(reader.readuntil(END), 20))[1:-2])
    writer.close()
    await writer.wait_closed()
    return answers


async def test_listener_acknowledges_each_message_on_one_connection() -> None:
    sink = Collector()
    server = MllpServer(sink.report, sink.reject, port=0)
    await server.start()
    try:
        second = EXAMPLE.replace("CD01-000457", "CD01-000458").encode()
        answers = await _exchange(
            server.port, [EXAMPLE.encode(), b"MSH|^~\\&|X|Y|Z|W|2025||ADT^A01|9|P|2.6", second]
        )
        assert [a.split(b"\r")[1] for a in answers] == [
            b"MSA|AA|CD01-000457",
            b"MSA|AR|9",
            b"MSA|AA|CD01-000458",
        ]
        assert [r.message_id for r in sink.reports] == ["CD01-000457", "CD01-000458"]
        assert len(sink.rejected) == 1
        assert "unsupported message type" in sink.rejected[0][1]
    finally:
        await server.stop()


async def test_a_stalled_client_does_not_block_others() -> None:
    sink = Collector()
    server = MllpServer(sink.report, sink.reject, port=0)
    await server.start()
    try:
        _, stalled = await asyncio.open_connection("127.0.0.1", server.port)
        stalled.write(START + EXAMPLE.encode()[:50])  # half a message, never finished
        await stalled.drain()
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(
                    _exchange(server.port, [EXAMPLE.replace("CD01-000457", f"M{i}").encode()])
                    for i in range(20)
                )
            ),
            timeout=10,
        )
        assert all(a[0].split(b"\r")[1].startswith(b"MSA|AA|M") for a in answers)
        assert len(sink.reports) == 20
        stalled.close()
    finally:
        await server.stop()


async def test_bus_failure_answers_ae_so_the_sender_retries() -> None:
    sink = Collector(fail=True)
    server = MllpServer(sink.report, sink.reject, port=0)
    await server.start()
    try:
        answer = (await _exchange(server.port, [EXAMPLE.encode()]))[0]
        assert b"MSA|AE|CD01-000457" in answer
        assert sink.rejected == []  # nothing wrong with the message: not a dead letter
    finally:
        await server.stop()


async def test_oversized_message_is_refused_and_the_connection_closed() -> None:
    sink = Collector()
    server = MllpServer(sink.report, sink.reject, port=0, max_message_bytes=1000)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(START + b"MSH|" + b"x" * 5000 + END)
        await writer.drain()
        answer = await reader.readuntil(END)
        assert b"MSA|AR|" in answer
        assert await reader.read() == b""  # closed
        writer.close()
    finally:
        await server.stop()


async def test_a_report_the_bus_takes_at_once_is_acknowledged_in_the_read_and_one_it_declines_awaited() -> (
    None
):
    sink = Collector()
    taken: list[str] = []

    def take(report: DeviceReport) -> bool:  # takes every other report; the rest go the awaited way
        if int(report.message_id[1:]) % 2:
            return False
        taken.append(report.message_id)
        return True

    server = MllpServer(sink.report, sink.reject, take_report=take, port=0)
    await server.start()
    try:
        ids = [f"M{i}" for i in range(6)]
        answers = await _exchange(server.port, [EXAMPLE.replace("CD01-000457", i).encode() for i in ids])
        assert [a.split(b"\r")[1] for a in answers] == [f"MSA|AA|{i}".encode() for i in ids]
        assert taken == ids[0::2]
        assert [r.message_id for r in sink.reports] == ids[1::2]
    finally:
        await server.stop()


async def test_messages_sent_back_to_back_are_handled_and_acknowledged_in_order() -> None:
    class Slow(Collector):
        async def report(self, report: DeviceReport) -> None:
            await asyncio.sleep(0.01 if report.message_id.endswith("0") else 0)
            await super().report(report)

    sink = Slow()
    server = MllpServer(sink.report, sink.reject, port=0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        ids = [f"M{i}" for i in range(12)]
        writer.write(b"".join(frame(EXAMPLE.replace("CD01-000457", i).encode()) for i in ids))  # one write
        await writer.drain()
        answers = [(await reader.readuntil(END)).split(b"\r")[1] for _ in ids]
        assert answers == [f"MSA|AA|{i}".encode() for i in ids]
        assert [r.message_id for r in sink.reports] == ids
        writer.close()
    finally:
        await server.stop()
