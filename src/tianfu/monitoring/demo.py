"""The demo ward's monitors: real recordings placed at the demo beds, and a feed that plays them live.

``seed`` (run by ``tianfu demo``) registers one monitor per occupied demo bed, assigns it a recording
from ``demo_data/``, charts the patient as alert and on room air, and stores the recording's first hours
as the patient's past day (hourly rows), so that trends and the sepsis model have a history at once.
``start_feed`` (run by ``tianfu serve`` in demo mode) then plays the rest of each recording through the
HL7 MLLP listener, as the monitors would, one recorded hour every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from importlib import resources
from pathlib import Path

from sqlalchemy import select

from tianfu.core.db import utcnow
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Encounter, Location
from tianfu.monitoring.pipeline import PHYSIONET_COLUMNS
from tianfu.monitoring.replay import Monitor, Recording, read_numerics, read_psv, send
from tianfu.monitoring.scores import News2Result, news2_from_mapping
from tianfu.monitoring.tables import MonitoringDevice, NursingObservation, VitalSample

log = logging.getLogger(__name__)

DEMO_MANUFACTURER = "Tianfu demo"
HISTORY_HOURS = 24
# bed code → recording; the numerics record has sensor-off stretches (technical alarms)
ASSIGNMENTS = {
    "CARD1-01": "p000078.psv",
    "CARD1-02": "p000188.psv",
    "CARD1-05": "p000021.psv",
    "CARD1-07": "s00001_numerics_1min.csv",
    "RESP-03": "p000272.psv",
    "RESP-04": "p000031.psv",
    "ICU-02": "p000018.psv",
    "EDOBS-01": "p000001.psv",
    "GEN-01": "p000032.psv",
    "GEN-02": "p000024.psv",
}
UNPLACED_DEVICE = ("TF-WEAR-0001", "p000178.psv")  # a wearable nobody has placed yet: unassociated data


def recording(name: str) -> Recording:
    text = resources.files("tianfu.monitoring").joinpath("demo_data", name).read_text()
    return read_psv(Path(name).stem, text) if name.endswith(".psv") else read_numerics(Path(name).stem, text)


def seed(kernel: Kernel) -> None:
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    with kernel.sessions() as session:
        beds = {b.code: b for b in session.scalars(select(Location).where(Location.kind == "bed"))}
        for code, name in [*ASSIGNMENTS.items(), (None, UNPLACED_DEVICE[1])]:
            bed = beds.get(code) if code else None
            identifier = f"TF-MON-{code}" if code else UNPLACED_DEVICE[0]
            session.add(
                MonitoringDevice(
                    identifier=identifier,
                    kind="monitor" if code else "wearable",
                    label=f"监护仪 {code}" if code else "可穿戴设备 0001",
                    manufacturer=DEMO_MANUFACTURER,
                    model=f"replay:{name}",
                    organization_id=bed.organization_id if bed else None,
                    bed_id=bed.id if bed else None,
                )
            )
            if bed is None:
                continue
            encounter = session.scalar(
                select(Encounter).where(Encounter.bed_id == bed.id, Encounter.status == "in-progress")
            )
            if encounter is None:
                continue
            for kind, value in (("consciousness", "A"), ("oxygen", "oxygen" if code == "ICU-02" else "air")):
                session.add(
                    NursingObservation(
                        patient_id=encounter.patient_id,
                        kind=kind,
                        value=value,
                        observed_at=utcnow() - timedelta(minutes=30),
                    )
                )
            rows = recording(name).rows
            if name.endswith(".psv"):
                history = rows[:HISTORY_HOURS]
                for index, values in enumerate(history):
                    at = now - timedelta(hours=len(history) - index)
                    kept = {p: v for p, v in values.items() if p in PHYSIONET_COLUMNS}
                    score = _news2_of(kept, on_oxygen=code == "ICU-02")
                    session.add(
                        VitalSample(
                            resolution="hour",
                            observed_at=at,
                            bed_id=bed.id,
                            patient_id=encounter.patient_id,
                            source="demo-history",
                            news2=score.total if score else None,
                            news2_partial=score.partial if score else False,
                            **kept,
                        )
                    )
        session.commit()


def _news2_of(values: dict[str, float], *, on_oxygen: bool) -> News2Result | None:
    names = {
        "heart_rate": "pulse",
        "spo2": "spo2",
        "respiratory_rate": "respiratory_rate",
        "systolic_bp": "systolic_bp",
        "temperature": "temperature",
    }
    observation: dict[str, object] = {names[k]: v for k, v in values.items() if k in names}
    try:
        return news2_from_mapping(observation | {"on_oxygen": on_oxygen, "consciousness": "A"})
    except ValueError:  # an implausible recorded value: the hour goes unscored
        return None


async def start_feed(
    kernel: Kernel, *, host: str, port: int, hour_every_s: float = 8.0
) -> Callable[[], Awaitable[None]]:
    """Play every demo monitor's recording into the MLLP listener, looping; returns a stopper."""

    def monitors() -> list[Monitor]:
        with kernel.sessions() as session:
            devices = session.scalars(
                select(MonitoringDevice).where(
                    MonitoringDevice.manufacturer == DEMO_MANUFACTURER, MonitoringDevice.active.is_(True)
                )
            ).all()
            found = []
            for device in devices:
                name = device.model.removeprefix("replay:")
                data = recording(name)
                if name.endswith(".psv"):
                    data.rows = data.rows[HISTORY_HOURS:] or data.rows
                found.append(Monitor(device.identifier, data, loop=True))
            return found

    simulated = await asyncio.to_thread(monitors)
    stop = asyncio.Event()

    async def play(monitor: Monitor) -> None:
        # PhysioNet rows are hourly: one every few seconds. Minute numerics: one every 2 seconds.
        speed = monitor.recording.interval_s / (hour_every_s if monitor.recording.interval_s >= 3600 else 2.0)
        while not stop.is_set():
            try:
                await send(host, port, monitor, speed=speed, stop=stop)
            except (ConnectionError, OSError) as exc:
                log.warning("demo feed for %s: %s; retrying", monitor.device_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=2.0)

    tasks = [asyncio.create_task(play(m), name=f"demo-feed-{m.device_id}") for m in simulated]

    async def stopper() -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return stopper
