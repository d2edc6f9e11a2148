"""Replay recorded patients into a running Tianfu, over the same HL7 MLLP path monitors use.

Sources are real recordings: PhysioNet 2019 ``.psv`` stays (one row per hour) and MIMIC-III numerics
CSV files (one row per minute). Each recording becomes one simulated bedside monitor that sends a PCD-01
message per row, ``speed`` times faster than real time, stamped with the current time so that the ward
looks live. Values missing in the recording are simply not sent (a real monitor would not send them).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import math
import tarfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tianfu.monitoring.ingest.codes import PARAMETER_TO_MDC
from tianfu.monitoring.ingest.hl7 import END, format_timestamp, frame

UNITS = {
    "heart_rate": "264864^MDC_DIM_BEAT_PER_MIN^MDC",
    "pulse_rate": "264864^MDC_DIM_BEAT_PER_MIN^MDC",
    "spo2": "262688^MDC_DIM_PERCENT^MDC",
    "respiratory_rate": "264928^MDC_DIM_RESP_PER_MIN^MDC",
    "systolic_bp": "266016^MDC_DIM_MMHG^MDC",
    "diastolic_bp": "266016^MDC_DIM_MMHG^MDC",
    "mean_bp": "266016^MDC_DIM_MMHG^MDC",
    "temperature": "268192^MDC_DIM_DEGC^MDC",
    "etco2": "266016^MDC_DIM_MMHG^MDC",
}
PSV_COLUMNS = {
    "HR": "heart_rate",
    "O2Sat": "spo2",
    "Temp": "temperature",
    "SBP": "systolic_bp",
    "MAP": "mean_bp",
    "DBP": "diastolic_bp",
    "Resp": "respiratory_rate",
    "EtCO2": "etco2",
}
NUMERICS_COLUMNS = {
    "HR_bpm": "heart_rate",
    "PULSE_bpm": "pulse_rate",
    "RESP_pm": "respiratory_rate",
    "SpO2_%": "spo2",
    "NBPSys_mmHg": "systolic_bp",
    "NBPDias_mmHg": "diastolic_bp",
    "NBPMean_mmHg": "mean_bp",
}


@dataclass
class Recording:
    name: str
    interval_s: float  # real time between rows: 3600 (PhysioNet) or 60 (MIMIC numerics)
    rows: list[dict[str, float]] = field(default_factory=list)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_psv(name: str, text: str) -> Recording:
    reader = csv.DictReader(io.StringIO(text), delimiter="|")
    recording = Recording(name=name, interval_s=3600.0)
    for row in reader:
        values = {
            p: v for column, p in PSV_COLUMNS.items() if (v := _number(row.get(column, ""))) is not None
        }
        recording.rows.append(values)
    return recording


def read_numerics(name: str, text: str) -> Recording:
    """MIMIC numerics: zeros are sent as they are, because a monitor reports 0 when a sensor is off."""
    reader = csv.DictReader(io.StringIO(text))
    recording = Recording(name=name, interval_s=60.0)
    for row in reader:
        values = {
            p: v for column, p in NUMERICS_COLUMNS.items() if (v := _number(row.get(column, ""))) is not None
        }
        recording.rows.append(values)
    return recording


def load(paths: Iterable[Path]) -> list[Recording]:
    """Recordings from .psv and .csv files, directories of them, or a .tar.gz of .psv stays."""
    recordings: list[Recording] = []
    for path in paths:
        if path.is_dir():
            recordings += load(sorted(p for p in path.iterdir() if p.suffix in {".psv", ".csv"}))
        elif path.name.endswith(".tar.gz"):
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile() and member.name.endswith(".psv"):
                        handle = archive.extractfile(member)
                        if handle is not None:
                            recordings.append(read_psv(Path(member.name).stem, handle.read().decode()))
        elif path.suffix == ".psv":
            recordings.append(read_psv(path.stem, path.read_text()))
        elif path.suffix == ".csv":
            recordings.append(read_numerics(path.stem, path.read_text()))
    return recordings


_counter = itertools.count(1)


def pcd01(device_id: str, values: dict[str, float], at: datetime) -> bytes:
    """A PCD-01 ORU^R01 message as a bedside monitor sends it."""
    stamp = format_timestamp(at)
    control = f"{device_id[-6:]}{next(_counter):09d}"
    lines = [
        f"MSH|^~\\&|REPLAY^{device_id}^EUI-64|TIANFU-REPLAY|TIANFU|TIANFU|{stamp}||ORU^R01^ORU_R01|{control}|P|2.6"
        "|||NE|AL||UNICODE UTF-8|||PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        f"OBR|1|{control}^REPLAY|{control}^REPLAY|182777000^monitoring of patient^SCT|||{stamp}",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X",
    ]
    for index, (parameter, value) in enumerate(values.items(), start=2):
        code = PARAMETER_TO_MDC[parameter]
        lines.append(f"OBX|{index}|NM|{code}^^MDC|1.{index}.1.1|{value:g}|{UNITS[parameter]}|||||R|||{stamp}")
    return ("\r".join(lines) + "\r").encode()


@dataclass
class Monitor:
    """A simulated monitor: one recording, one device identifier."""

    device_id: str
    recording: Recording
    loop: bool = True

    def rows(self) -> Iterator[dict[str, float]]:
        while True:
            yield from self.recording.rows
            if not self.loop:
                return


async def send(host: str, port: int, monitor: Monitor, *, speed: float, stop: asyncio.Event) -> int:
    """Send the monitor's rows over one MLLP connection; returns how many were acknowledged AA."""
    reader, writer = await asyncio.open_connection(host, port)
    pause = monitor.recording.interval_s / speed
    accepted = 0
    try:
        for values in monitor.rows():
            if stop.is_set():
                break
            if values:
                writer.write(frame(pcd01(monitor.device_id, values, datetime.now(UTC))))
                await writer.drain()
                answer = await reader.readuntil(END)
                accepted += b"MSA|AA|" in answer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
    finally:
        writer.close()
    return accepted


async def replay(
    host: str, port: int, monitors: list[Monitor], *, speed: float, seconds: float | None = None
) -> AsyncIterator[int]:
    """Run every monitor at once; yields the running count of acknowledged messages each second."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(send(host, port, m, speed=speed, stop=stop)) for m in monitors]
    started = asyncio.get_running_loop().time()
    try:
        while not all(t.done() for t in tasks):
            await asyncio.sleep(1.0)
            yield sum(t.result() for t in tasks if t.done() and not t.exception())
            if seconds is not None and asyncio.get_running_loop().time() - started >= seconds:
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
