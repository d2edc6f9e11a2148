"""``tianfu bench monitoring``: the whole path under load, measured from outside.

A throw-away hospital of ``beds`` occupied beds (50 per ward) is created; Tianfu is started as
``tianfu serve`` would run it (HTTP server, HL7 MLLP listener, pipeline, in-process bus); a separate load
process then plays ``beds`` bedside monitors, each on its own MLLP connection sending one PCD-01 report
every ``1/rate`` seconds and waiting for the ACK, and one central-station client follows one ward's
Server-Sent Events stream. Every report carries its send time (OBX-14, to the millisecond); the client
measures, for each bed update it receives, the delay from send to visible, and separately for updates that
show a newly raised alarm (a share of the beds, a third by default, alternate a systolic pressure of 200
and 120 mmHg, which raises and clears a medium alarm, no delay, at every other report). With
``top_of_hour_at``, every bed closes its hour at that moment of the measurement, as at the top of the hour
(when every patient's hour is scored by the sepsis model at once). Server CPU and memory come from
``/proc``; the parser comparison parses the same messages with Tianfu's reader and the
``hl7`` library.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BEDS_PER_WARD = 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _p99_by_minute(latencies: list[float], sent: list[float]) -> list[float]:
    """p99 in ms of each whole or partial minute of the measured window, by send time: over a long run one
    stall shows as one bad minute, not as a p99 nobody can place."""
    minutes: dict[int, list[float]] = {}
    for latency, at in zip(latencies, sent, strict=True):
        minutes.setdefault(int(at // 60), []).append(latency)
    return [round(_percentile(minutes[m], 0.99) * 1000, 1) for m in sorted(minutes)]


# --- the hospital under load -------------------------------------------------------------------------


def build_hospital(database_url: str, var_dir: Path, beds: int) -> tuple[str, list[str]]:
    """A hospital with ``beds`` admitted patients, each bed with a monitor; returns a ward id and the
    monitors' identifiers. Bulk inserts: thousands of rows in seconds."""
    from sqlalchemy import insert

    from tianfu.core.db import new_id, utcnow
    from tianfu.core.kernel import Kernel
    from tianfu.core.migrate import upgrade
    from tianfu.core.patients.models import Encounter, Location, Organization, Patient
    from tianfu.core.settings import Settings
    from tianfu.demo import seed
    from tianfu.monitoring.tables import MonitoringDevice

    upgrade(database_url)
    kernel = Kernel(Settings(demo=True, database_url=database_url, var_dir=var_dir))
    seed(kernel)
    org = new_id()
    now = utcnow()
    wards = [new_id() for _ in range((beds + BEDS_PER_WARD - 1) // BEDS_PER_WARD)]
    locations: list[dict[str, Any]] = [
        {
            "id": w,
            "organization_id": org,
            "parent_id": None,
            "kind": "ward",
            "code": f"W{i:03d}",
            "name": f"负载病区{i:03d}",
            "name_en": f"Load ward {i}",
            "specialty": "",
            "active": True,
        }
        for i, w in enumerate(wards)
    ]
    patients, encounters, devices, identifiers = [], [], [], []
    for n in range(beds):
        bed_id, patient_id = new_id(), new_id()
        ward = wards[n // BEDS_PER_WARD]
        identifier = f"LOAD{n:05d}"
        identifiers.append(identifier)
        locations.append(
            {
                "id": bed_id,
                "organization_id": org,
                "parent_id": ward,
                "kind": "bed",
                "code": f"B{n:05d}",
                "name": f"{n % BEDS_PER_WARD + 1:02d}床",
                "name_en": "",
                "specialty": "",
                "active": True,
            }
        )
        patients.append(
            {
                "id": patient_id,
                "mrn": f"L{n:06d}",
                "managing_organization_id": org,
                "name": f"负载患者{n}",
                "family_name": "",
                "given_name": "",
                "gender": "female",
                "birth_date": None,
                "national_id": "",
                "phone": "",
                "address": "",
                "created_at": now,
                "updated_at": now,
                "voided": False,
                "void_reason": "",
            }
        )
        encounters.append(
            {
                "id": new_id(),
                "patient_id": patient_id,
                "organization_id": org,
                "encounter_class": "IMP",
                "status": "in-progress",
                "ward_id": ward,
                "bed_id": bed_id,
                "attending_id": None,
                "reason": "",
                "period_start": now - timedelta(hours=2),
                "period_end": None,
            }
        )
        devices.append(
            {
                "id": new_id(),
                "identifier": identifier,
                "kind": "monitor",
                "label": identifier,
                "manufacturer": "bench",
                "model": "",
                "organization_id": org,
                "bed_id": bed_id,
                "active": True,
                "registered_at": now,
                "last_seen_at": None,
                "last_source": "",
            }
        )
    with kernel.sessions() as session, session.begin():
        session.execute(
            insert(Organization).values(
                id=org,
                code="BENCH",
                name="负载测试医院",
                name_en="Bench",
                level="",
                address="",
                phone="",
                active=True,
                created_at=now,
            )
        )
        session.execute(insert(Location), locations[: len(wards)])
        session.execute(insert(Location), locations[len(wards) :])
        session.execute(insert(Patient), patients)
        session.execute(insert(Encounter), encounters)
        session.execute(insert(MonitoringDevice), devices)
    kernel.engine.dispose()
    return wards[0], identifiers


# --- the load process ----------------------------------------------------------------------------------


def _message(device: str, sequence: int, systolic: int) -> bytes:
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%d%H%M%S") + f".{now.microsecond // 1000:03d}+0000"
    values = (
        (147842, 72 + sequence % 5, "264864"),
        (150456, 97, "262688"),
        (151562, 16, "264928"),
        (150021, systolic, "266016"),
        (150022, 70, "266016"),
    )
    lines = [
        f"MSH|^~\\&|BENCH^{device}^EUI-64|B|TIANFU|T|{stamp}||ORU^R01^ORU_R01|{device}-{sequence}|P|2.6",
        f"OBR|1|{device}-{sequence}|{device}-{sequence}|182777000^monitoring of patient^SCT|||{stamp}",
    ]
    lines += [
        f"OBX|{i}|NM|{code}^^MDC|1.{i}.1.1|{value}|{unit}^^MDC|||||R|||{stamp}"
        for i, (code, value, unit) in enumerate(values, start=1)
    ]
    return b"\x0b" + ("\r".join(lines) + "\r").encode() + b"\x1c\x0d"


async def _monitor(
    host: str,
    port: int,
    device: str,
    period: float,
    measure_from: float,
    until: float,
    alarming: bool,
    counts: dict[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sequence = 0
    loop = asyncio.get_running_loop()
    next_at = loop.time() + period * (hash(device) % 1000) / 1000  # spread the monitors over the period
    while loop.time() < until:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        next_at += period
        sequence += 1
        systolic = 200 if alarming and sequence % 2 else 120
        writer.write(_message(device, sequence, systolic))
        await writer.drain()
        answer = await reader.readuntil(b"\x1c\x0d")
        if loop.time() < measure_from:
            continue
        counts["acked" if b"MSA|AA|" in answer else "refused"] += 1
        if loop.time() - next_at > period:  # fell behind: the server does not keep up
            counts["late"] += 1
            next_at = loop.time()
    writer.close()


def _central_station(
    base: str,
    token: str,
    ward: str,
    measure_from: float,
    until: float,
    out: dict[str, list[float]],
    last_seq: dict[str, int],
    alarmed: dict[str, bool],
) -> None:
    """Follow one ward's stream; for each update after the warm-up, how long since the monitor sent it."""
    request = urllib.request.Request(  # noqa: S310 - our own local server
        f"{base}/api/v1/monitoring/wards/{ward}/stream", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as stream:  # noqa: S310 - our own local server
        for raw in stream:
            if time.time() > until:
                return
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            state = json.loads(line[6:])
            received = time.time()
            vital = state["vitals"].get("systolic_bp")
            if vital is None or state["seq"] <= last_seq.get(state["bed_id"], -1):
                continue  # a reconnected stream starts with states already seen
            last_seq[state["bed_id"]] = state["seq"]
            sent = datetime.fromisoformat(vital[1]).timestamp()
            has_alarm = any(a["condition"] == "limit:systolic_bp_high" for a in state["alarms"])
            if sent >= measure_from:
                out["update"].append(received - sent)
                out["update_sent"].append(sent - measure_from)
                if has_alarm and not alarmed.get(state["bed_id"]):
                    out["alarm"].append(received - sent)
            alarmed[state["bed_id"]] = has_alarm


def _station(base: str, token: str, ward: str, measure_from: float, until: float, queue: Any) -> None:
    """The central-station client, in its own process so that the load generator cannot starve it; it
    reconnects like the page does when the server drops a stream it could not keep up with."""
    latencies: dict[str, list[float]] = {"update": [], "update_sent": [], "alarm": []}
    last_seq: dict[str, int] = {}
    alarmed: dict[str, bool] = {}
    reconnects, error = 0, ""
    while True:
        try:
            _central_station(base, token, ward, measure_from, until, latencies, last_seq, alarmed)
        except Exception as exc:  # reported in the result, not hidden
            error = repr(exc)
        if time.time() >= until:
            break
        reconnects += 1
        time.sleep(1.0)
    queue.put({"latency": latencies, "stream_reconnects": reconnects, "stream_error": error})


def _load(
    host: str,
    port: int,
    devices: list[str],
    rate: float,
    warmup: float,
    seconds: float,
    base: str,
    token: str,
    ward: str,
    queue: Any,
    alarming: float,
) -> None:
    until_wall = time.time() + warmup + seconds
    context = multiprocessing.get_context("spawn")
    station_results = context.Queue()
    station = context.Process(
        target=_station, args=(base, token, ward, time.time() + warmup, until_wall, station_results)
    )
    station.start()
    counts = {"acked": 0, "refused": 0, "late": 0}

    every = round(1 / alarming) if alarming else 0  # beds 0, every, 2·every… alarm (0 is in the watched ward)

    async def main() -> None:
        now = asyncio.get_running_loop().time()
        asyncio.get_running_loop().call_later(warmup, queue.put, "measuring")
        await asyncio.gather(
            *(
                _monitor(
                    host,
                    port,
                    d,
                    1.0 / rate,
                    now + warmup,
                    now + warmup + seconds,
                    bool(every) and i % every == 0,
                    counts,
                )
                for i, d in enumerate(devices)
            )
        )

    asyncio.run(main())
    watched = station_results.get(timeout=60)
    station.join(timeout=5)
    queue.put({"counts": counts, **watched})


# --- the run ---------------------------------------------------------------------------------------------


async def _top_of_hour(pipeline: Any) -> int:
    """What the top of the hour does to the server, at a moment the run chooses: every monitored bed closes
    the hour in progress, to be scored by the sepsis model and stored with its audit record (the bench's
    database is thrown away afterwards). How many beds closed one."""
    closed = 0
    for bed in list(pipeline.beds.values()):
        if bed.sepsis is not None and bed.sepsis.hour is not None and bed.sepsis.sums:
            pipeline._close_hour(bed, bed.sepsis)
            closed += 1
    return closed


def _proc_cpu_seconds(pids: list[int | str]) -> float:
    """CPU time of the server: this process and its HL7 listener processes (not the load process)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _rss_mib(pids: list[int | str]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def parser_comparison(messages: int = 5000) -> dict[str, int]:
    """Messages per second: Tianfu's PCD-01 reader against the ``hl7`` library on the same messages."""
    from tianfu.monitoring.ingest.hl7 import parse_pcd01

    raw = [_message(f"PARSE{i % 50:03d}", i, 120)[1:-2] for i in range(messages)]
    start = time.perf_counter()
    for message in raw:
        parse_pcd01(message)
    ours = messages / (time.perf_counter() - start)
    result = {"tianfu_reader_msgs_per_s": round(ours)}
    try:
        import hl7  # type: ignore[import-untyped]
    except ImportError:
        return result
    texts = [m.decode() for m in raw]
    start = time.perf_counter()
    for text in texts:
        hl7.parse(text)
    result["hl7_library_msgs_per_s"] = round(messages / (time.perf_counter() - start))
    return result


def run(
    *,
    beds: int,
    rate: float,
    seconds: float,
    warmup: float = 10.0,
    postgres: str | None = None,
    alarming: float = 1 / 3,
    hl7_processes: int = 0,
    top_of_hour_at: float | None = None,
) -> dict[str, Any]:
    import uvicorn
    from sqlalchemy import select

    from tianfu.core.identity.models import User
    from tianfu.core.patients.models import Location
    from tianfu.demo import DEMO_PASSWORD

    with tempfile.TemporaryDirectory(prefix="tianfu-bench-") as tmp:
        var = Path(tmp)
        database_url = postgres or f"sqlite:///{var / 'bench.db'}"
        admin_url = None
        if postgres:
            import psycopg
            from sqlalchemy import make_url

            name = f"tianfu_bench_{uuid.uuid4().hex[:8]}"
            admin_url = make_url(postgres).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            database_url = make_url(postgres).set(database=name).render_as_string(hide_password=False)
        try:
            ward, devices = build_hospital(database_url, var, beds)
            http_port, hl7_port = _free_port(), _free_port()
            os.environ.update(
                TIANFU_DEMO="1",
                TIANFU_DATABASE_URL=database_url,
                TIANFU_VAR_DIR=str(var),
                TIANFU_HL7_PORT=str(hl7_port),
                TIANFU_HL7_HOST="127.0.0.1",
                TIANFU_DEMO_FEED="false",
                TIANFU_HL7_PROCESSES=str(hl7_processes),
            )
            from tianfu.app import create_app
            from tianfu.core.settings import Settings
            from tianfu.monitoring.settings import get_monitoring_settings

            get_monitoring_settings.cache_clear()
            settings = Settings()
            app = create_app(settings)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning")
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            base = f"http://127.0.0.1:{http_port}"
            kernel = app.state.kernel
            with kernel.sessions() as session:
                nurse = session.scalars(select(User).where(User.username == "nurse.wang")).one()
                nurse.wards.append(session.get(Location, ward))  # the station client watches the first ward
                session.commit()
            login = json.dumps({"username": "nurse.wang", "password": DEMO_PASSWORD}).encode()
            request = urllib.request.Request(  # noqa: S310 - our own local server
                f"{base}/api/v1/auth/token", data=login, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request) as answer:  # noqa: S310 - our own local server
                token = json.loads(answer.read())["access_token"]
            queue: Any = multiprocessing.get_context("spawn").Queue()
            loader = multiprocessing.get_context("spawn").Process(
                target=_load,
                args=(
                    "127.0.0.1",
                    hl7_port,
                    devices,
                    rate,
                    warmup,
                    seconds,
                    base,
                    token,
                    ward,
                    queue,
                    alarming,
                ),
            )
            loader.start()
            queue.get(timeout=warmup + 120)  # the monitors are connected and past the warm-up
            listener = kernel.extensions["monitoring.mllp"]
            server_pids: list[int | str] = ["self", *(c.pid for c in getattr(listener, "children", []))]
            cpu_before, wall_before = _proc_cpu_seconds(server_pids), time.perf_counter()
            pipeline = kernel.extensions["monitoring.pipeline"]
            hours_closed: list[int] = []
            if top_of_hour_at is not None:
                loop = pipeline._ticker.get_loop()

                def top_of_hour() -> None:
                    closing = asyncio.run_coroutine_threadsafe(_top_of_hour(pipeline), loop)
                    hours_closed.append(closing.result(timeout=30))

                threading.Timer(top_of_hour_at, top_of_hour).start()
            result = queue.get(timeout=seconds + 120)
            wall = time.perf_counter() - wall_before
            cpu = _proc_cpu_seconds(server_pids) - cpu_before
            loader.join(timeout=30)
            backlog = listener.stats.accepted - pipeline.processed - pipeline.duplicates
            rss = _rss_mib(server_pids)
            server.should_exit = True
            thread.join(timeout=30)
        finally:
            if admin_url is not None:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    counts = result["counts"]
    update, alarm = result["latency"]["update"], result["latency"]["alarm"]
    return {
        "beds": beds,
        "rate_hz": rate,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "database": "PostgreSQL" if postgres else "SQLite",
        "alarming_share": round(alarming, 4),
        "hl7_processes": hl7_processes,
        "top_of_hour_at_s": top_of_hour_at,
        "hours_closed_at_top_of_hour": sum(hours_closed) if hours_closed else None,
        "reports_acked": counts["acked"],
        "reports_refused": counts["refused"],
        "monitors_fell_behind": counts["late"],
        "reports_per_s": round(counts["acked"] / seconds, 1),
        "pipeline_backlog_at_end": backlog,
        "stream_reconnects": result["stream_reconnects"],
        "stream_error": result["stream_error"],
        "update_latency_ms": {
            "p50": round(_percentile(update, 0.5) * 1000, 1),
            "p99": round(_percentile(update, 0.99) * 1000, 1),
            "n": len(update),
            "p99_by_minute": _p99_by_minute(update, result["latency"]["update_sent"]),
        },
        "alarm_latency_ms": {
            "p50": round(_percentile(alarm, 0.5) * 1000, 1),
            "p99": round(_percentile(alarm, 0.99) * 1000, 1),
            "n": len(alarm),
        },
        "server_cpu_cores": round(cpu / wall, 2),
        "server_rss_mib": round(rss),
        "parser": parser_comparison(),
        "mean_update_latency_ms": round(statistics.fmean(update) * 1000, 1) if update else None,
    }
