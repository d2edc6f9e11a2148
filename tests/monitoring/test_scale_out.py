"""Scale-out on the real services: two ``tianfu monitor worker`` processes on NATS JetStream and PostgreSQL;
one is killed (SIGKILL) mid-stream and started again. No observation may be lost, no alarm duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, make_url, select

from tests.conftest import BACKEND, TEST_SECRET, _pg_admin, _port_open, _settings, mark_used, require_service
from tianfu.core.bus.nats import NatsJetStreamBus
from tianfu.core.kernel import Kernel
from tianfu.core.migrate import upgrade
from tianfu.core.patients.models import Encounter
from tianfu.demo import seed
from tianfu.monitoring.ingest.report import DeviceReport, Measurement, partition_of, report_subject
from tianfu.monitoring.tables import AlarmEpisode, AlarmEvent, MonitoringDevice, VitalSample

PARTITIONS = 2
ROUNDS = 100  # reports per device, a quarter of a second apart
PACE_S = 0.25
LOW_FROM = 5  # SpO2 84 % from this report on: one "SpO2 low" alarm per bed, raised 15 s later (report ~65)
KILL_AT = 75  # after the alarm was raised and stored, before the worker saved the engine's state again
CI_POSTGRES = os.environ.get("TIANFU_TEST_POSTGRES_URL", "")
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if BACKEND == "postgresql":  # the PostgreSQL pass: its own copy of the demo database
        yield request.getfixturevalue("database_url")
        return
    if CI_POSTGRES:
        pytest.skip("runs in the PostgreSQL pass of make test")
    require_service(_port_open("127.0.0.1", 5432), "PostgreSQL at 127.0.0.1:5432")
    mark_used(request, "postgresql")
    name = f"tianfu_scale_{uuid.uuid4().hex[:10]}"
    with _pg_admin(LOCAL_POSTGRES) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(LOCAL_POSTGRES).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    kernel = Kernel(_settings(url, tmp_path))
    seed(kernel)
    kernel.engine.dispose()
    yield url
    with _pg_admin(LOCAL_POSTGRES) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Worker:
    def __init__(self, env: dict[str, str], partition: int) -> None:
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "tianfu"),
                "monitor",
                "worker",
                "--partitions",
                str(partition),
            ],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.ready = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if "monitoring worker for partitions" in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(60):
            raise AssertionError("worker did not start:\n" + "".join(self.log))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _report(device: str, index: int, at: datetime) -> DeviceReport:
    spo2 = 84.0 if index >= LOW_FROM else 97.0
    values = {"heart_rate": 80.0 + index % 3, "spo2": spo2, "respiratory_rate": 16.0, "systolic_bp": 120.0}
    return DeviceReport(
        device_id=device,
        source="test",
        message_id=f"{device}-{index}",
        received_at=at,
        measurements=[Measurement(p, v, at, "test") for p, v in values.items()],
    )


async def test_killed_worker_loses_no_observation_and_duplicates_no_alarm(
    postgres_url: str, nats_url: str, tmp_path: Path
) -> None:
    kernel = Kernel(_settings(postgres_url, tmp_path))
    candidates = [f"SCALE-{n}" for n in range(20)]
    chosen = [
        d for p in range(PARTITIONS) for d in [c for c in candidates if partition_of(c, PARTITIONS) == p][:2]
    ]
    with kernel.sessions() as session, session.begin():
        beds = session.scalars(
            select(Encounter.bed_id).where(Encounter.status == "in-progress", Encounter.bed_id.is_not(None))
        ).all()[:4]
        assert len(beds) == 4, "the demo hospital has at least four occupied beds"
        for identifier, bed in zip(chosen, beds, strict=True):
            session.add(MonitoringDevice(identifier=identifier, label=identifier, bed_id=bed))
    run = uuid.uuid4().hex[:8]
    env = os.environ | {
        "TIANFU_DATABASE_URL": postgres_url,
        "TIANFU_SECRET_KEY": TEST_SECRET,
        "TIANFU_DEMO": "0",
        "TIANFU_VAR_DIR": str(tmp_path),
        "TIANFU_BUS_URL": nats_url,
        "TIANFU_BUS_STREAM": f"SCALE_{run}",
        "TIANFU_BUS_NAMESPACE": f"scale{run}",
        "TIANFU_PARTITIONS": str(PARTITIONS),
        "TIANFU_SAMPLE_INTERVAL_S": "0",  # every report is stored: each can be counted
    }
    workers = [Worker(env, 0), Worker(env, 1)]
    bus = NatsJetStreamBus(nats_url, stream=env["TIANFU_BUS_STREAM"], namespace=env["TIANFU_BUS_NAMESPACE"])
    try:
        for worker in workers:
            worker.wait_ready()
        await bus.start()
        for index in range(ROUNDS):
            if index == KILL_AT:
                workers[0].process.send_signal(signal.SIGKILL)  # no goodbye: whatever it had in hand is lost
                workers[0].process.wait()
            if index == KILL_AT + 8:
                workers[0] = Worker(env, 0)
            at = datetime.now(UTC)
            for device in chosen:
                item = _report(device, index, at)
                await bus.publish(
                    report_subject(device, PARTITIONS), item.to_data(), event_id=item.message_id
                )
            await asyncio.sleep(PACE_S)
        workers[0].wait_ready()

        with kernel.sessions() as session:
            device_pks = dict(
                session.execute(
                    select(MonitoringDevice.identifier, MonitoringDevice.id).where(
                        MonitoringDevice.identifier.in_(chosen)
                    )
                ).all()
            )

        def stored() -> dict[str, int]:
            with kernel.sessions() as session:
                rows = session.execute(
                    select(VitalSample.device_id, func.count())
                    .where(VitalSample.device_id.in_(device_pks.values()), VitalSample.resolution == "minute")
                    .group_by(VitalSample.device_id)
                ).all()
            return {device: count for device, count in rows}

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stored() != {pk: ROUNDS for pk in device_pks.values()}:
            await asyncio.sleep(0.5)
        assert stored() == {pk: ROUNDS for pk in device_pks.values()}, "observations were lost"

        with kernel.sessions() as session:
            episodes = session.scalars(
                select(AlarmEpisode).where(AlarmEpisode.device_id.in_(device_pks.values()))
            ).all()
            listing = "\n".join(f"{e.device_id} {e.condition} {e.raised_at} {e.state}" for e in episodes)
            spo2_low = sorted(e.device_id for e in episodes if e.condition == "limit:spo2_low")
            assert spo2_low == sorted(device_pks.values()), listing  # each bed's alarm, exactly once
            per_condition = Counter((e.bed_id, e.condition) for e in episodes)
            assert max(per_condition.values()) == 1, listing  # nothing raised twice
            raised = session.execute(
                select(AlarmEvent.episode_id, func.count())
                .where(AlarmEvent.event == "raised", AlarmEvent.episode_id.in_([e.id for e in episodes]))
                .group_by(AlarmEvent.episode_id)
            ).all()
            assert all(count == 1 for _, count in raised)
    finally:
        for worker in workers:
            worker.stop()
        await bus.close()
        kernel.engine.dispose()
        await _delete_stream(nats_url, env["TIANFU_BUS_STREAM"])


async def _delete_stream(url: str, stream: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    connection = await nats.connect(url)
    try:
        with contextlib.suppress(NotFoundError):
            await connection.jetstream().delete_stream(stream)
    finally:
        await connection.close()
