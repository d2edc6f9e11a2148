"""``tianfu bench consult``: the consultation endpoints under 100 concurrent physicians, measured outside.

A throw-away copy of the demo network gets a consultation load: ``physicians`` inviting physicians at the
community centre (JJSQ), ``consultants`` qualified consultants at the tertiary hospital (TFRM), one patient
per two consultations, each patient with a day of vital signs, alarms, a triage result and a radiograph
with its AI finding (so the case packet has every section), and ``consultations`` consultations driven
through the real service (consents, submit, receive, accept, start, signed opinion, decision) into a mix
of states, with tens of messages on the open and finished ones.

Tianfu is then served as ``tianfu serve`` runs it (uvicorn, one process, in a thread here); a separate load
process logs every simulated user in once (``POST /api/v1/auth/token``: one password check per user, as a
client keeps its token) and runs them concurrently for ``warmup + seconds``: each user loops over its
queue (inviting physicians: my requests; consultants: the incoming queue), the case packet and the
messages of a consultation it takes part in, and posting a message, with a random think time between
requests. Latencies are measured per endpoint in the load process, from request sent to response read.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

# (operation, weight): the mix of one simulated user's requests.
MIX = (("queue", 40), ("case-packet", 20), ("messages", 30), ("post-message", 10))
ENDPOINTS = {
    "queue:incoming": "GET /api/v1/consult/consultations/incoming",
    "queue:mine": "GET /api/v1/consult/consultations/mine",
    "case-packet": "GET /api/v1/consult/consultations/{id}/case-packet",
    "messages": "GET /api/v1/consult/consultations/{id}/messages",
    "post-message": "POST /api/v1/consult/consultations/{id}/messages",
}
API = "/api/v1/consult/consultations"
VITALS_EVERY = timedelta(minutes=5)  # a day of vital signs: 288 rows per patient


@dataclass
class BenchUser:
    username: str
    role: str  # physician | consultant
    consultations: list[str] = field(default_factory=list)  # those it takes part in
    open_consultations: list[str] = field(default_factory=list)  # where a discussion is going on
    packets: list[str] = field(default_factory=list)  # whose case packet it may read (not after the end)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BENCH_SIGNING_PIN = "246810"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the network under load ------------------------------------------------------------------------------


def build_network(
    database_url: str,
    var_dir: Path,
    *,
    physicians: int,
    consultants: int,
    consultations: int,
    secret_key: str,
    rng: random.Random,
) -> list[BenchUser]:
    """Seed the demo network and the consultation load; returns the simulated users."""
    from sqlalchemy import insert, select

    from tianfu.consult import service
    from tianfu.consult import workflow as wf
    from tianfu.consult.demo import seed as seed_consult
    from tianfu.consult.tables import ConsultMessage
    from tianfu.core.db import new_id, utcnow
    from tianfu.core.identity import passwords
    from tianfu.core.identity.models import User
    from tianfu.core.kernel import Kernel
    from tianfu.core.migrate import upgrade
    from tianfu.core.patients.models import Encounter, Location, Organization, Patient
    from tianfu.core.security.principal import Principal
    from tianfu.core.settings import Settings
    from tianfu.demo import DEMO_PASSWORD, seed

    upgrade(database_url)
    kernel = Kernel(Settings(demo=False, secret_key=secret_key, database_url=database_url, var_dir=var_dir))
    try:
        seed(kernel)
        seed_consult(kernel)
        password_hash = passwords.hash_password(DEMO_PASSWORD)  # one hash for all: they share the password
        now = utcnow()
        with kernel.sessions() as session:
            orgs = {o.code: o for o in session.scalars(select(Organization))}
            jjsq, tfrm = orgs["JJSQ"], orgs["TFRM"]
            ward = session.scalars(
                select(Location).where(Location.code == "GEN", Location.kind == "ward")
            ).one()
            users: dict[str, User] = {}
            for i in range(physicians):
                users[f"bench.dr{i:03d}"] = User(
                    username=f"bench.dr{i:03d}",
                    display_name=f"社区医生{i:03d}",
                    role="physician",
                    organization_id=jjsq.id,
                    password_hash=password_hash,
                    licence_number=f"2105100{i:08d}",
                    professional_title="主治医师",
                    specialty="全科医学",
                    practicing_since=date(2012, 7, 1),
                    wards=[ward],
                )
            for i in range(consultants):
                users[f"bench.cs{i:03d}"] = User(
                    username=f"bench.cs{i:03d}",
                    display_name=f"会诊专家{i:03d}",
                    role="consultant",
                    organization_id=tfrm.id,
                    password_hash=password_hash,
                    licence_number=f"3105100{i:08d}",
                    professional_title="主任医师",
                    specialty="心血管内科",
                    practicing_since=date(2001, 7, 1),
                )
            session.add_all(users.values())
            session.flush()
            for user in users.values():
                if user.role == "consultant":
                    service.record_qualification(
                        session,
                        user=user,
                        specialties=["心血管内科"],
                        title=wf.ProfessionalTitle.CHIEF,
                        independent_practice_since=date(2001, 7, 1),
                    )
            doctors = [u for u in users.values() if u.role == "physician"]
            experts = [u for u in users.values() if u.role == "consultant"]
            patients = []
            for i in range(max(1, consultations // 2)):
                patient = Patient(
                    mrn=f"JJSQ-B{i:05d}",
                    managing_organization_id=jjsq.id,
                    name=f"负载患者{i:04d}",
                    family_name="负",
                    given_name=f"载{i:04d}",
                    gender="female" if i % 2 else "male",
                    birth_date=date(1940 + i % 50, 1 + i % 12, 1 + i % 28),
                )
                session.add(patient)
                patients.append(patient)
            session.flush()
            session.add_all(
                Encounter(
                    patient_id=p.id,
                    organization_id=jjsq.id,
                    encounter_class="IMP",
                    status="in-progress",
                    ward_id=ward.id,
                    attending_id=doctors[i % len(doctors)].id,
                    reason="慢病随访",
                    period_start=now - timedelta(days=2),
                )
                for i, p in enumerate(patients)
            )
            _case_data(session, [p.id for p in patients], jjsq.id, now, rng, new_id)
            session.commit()
            principals = {
                u.id: Principal(
                    user_id=u.id,
                    username=u.username,
                    display_name=u.display_name,
                    role=u.role,
                    organization_id=u.organization_id,
                    patient_id=None,
                    ward_ids=(ward.id,) if u.role == "physician" else (),
                    session_kind="api",
                    csrf_token="-",  # noqa: S106 - not a secret: bearer sessions have no CSRF token
                )
                for u in users.values()
            }
            bench_users = {u.username: BenchUser(u.username, u.role) for u in users.values()}
            by_id = {u.id: u.username for u in users.values()}
            # The states: a sixth waiting, a sixth received, a sixth accepted, a third under discussion, the
            # rest completed with a signed opinion (half of those with the inviting side's decision).
            for i in range(consultations):
                doctor, expert = doctors[i % len(doctors)], experts[i % len(experts)]
                patient = patients[i % len(patients)]
                inviter, consultant = principals[doctor.id], principals[expert.id]
                row = service.create_draft(
                    session,
                    kernel.audit,
                    inviter,
                    patient_id=patient.id,
                    invited_institution_id=tfrm.id,
                    fields=service.DraftFields(
                        reason="血糖控制不佳伴胸闷",
                        purpose="请心内科专家评估是否需转诊",
                        case_summary=f"{patient.name}，2型糖尿病，近一周活动后胸闷。" * 3,
                        specialty="心血管内科",
                        title=3,
                        time_frame_earliest=now,
                        time_frame_latest=now + timedelta(days=2),
                        priority=("routine", "urgent", "routine", "asap")[i % 4],
                    ),
                )
                cid = row.id
                for kind in ("treatment", "patient-privacy"):
                    service.record_consent(
                        session, kernel.audit, inviter, cid, kind=kind, signed_form_ref=f"scan://{cid}/{kind}"
                    )
                stage = i % 6
                steps: list[tuple[Principal, wf.Action]] = [(inviter, wf.Action.SUBMIT)]
                if stage >= 1:
                    steps.append((consultant, wf.Action.RECEIVE))
                if stage >= 2:
                    steps.append((consultant, wf.Action.ACCEPT))
                if stage >= 3:
                    steps.append((inviter, wf.Action.START))
                for who, action in steps:
                    service.transition(session, kernel.audit, who, cid, action)
                if stage >= 3:
                    _discussion(session, ConsultMessage, insert, cid, doctor, expert, rng, now)
                    bench_users[doctor.username].open_consultations.append(cid)
                    bench_users[expert.username].open_consultations.append(cid)
                if stage >= 5:
                    service.sign_opinion(
                        session,
                        kernel.audit,
                        kernel.secret_box,
                        consultant,
                        cid,
                        {
                            "findings": "心电图示ST段压低",
                            "diagnosis": "稳定型心绞痛",
                            "opinion": "建议冠脉CTA",
                        },
                        pin=BENCH_SIGNING_PIN,
                        pin_confirmation=BENCH_SIGNING_PIN,  # sets the PIN at a consultant's first signature
                    )
                    if i % 12 == 5:
                        service.transition(
                            session, kernel.audit, inviter, cid, wf.Action.RECORD_DECISION, decision="转诊"
                        )
                session.commit()
                bench_users[doctor.username].consultations.append(cid)
                # Every consultant of the institution sees the queue; each works on the ones it accepted
                # and, before that, reads the waiting ones it would take.
                bench_users[by_id[expert.id]].consultations.append(cid)
                bench_users[doctor.username].packets.append(cid)
                if stage < 5:  # the invited side's view of the patient ends with the consultation
                    bench_users[by_id[expert.id]].packets.append(cid)
        return list(bench_users.values())
    finally:
        kernel.engine.dispose()


def _discussion(
    session: Any,
    message_table: Any,
    insert: Any,
    cid: str,
    doctor: Any,
    expert: Any,
    rng: random.Random,
    now: Any,
) -> None:
    """Tens of messages (bulk: the seed's speed, not the posting path, which the load measures)."""
    from tianfu.core.db import new_id

    count = rng.choice((5, 10, 20, 40))
    start = now - timedelta(hours=count)
    session.execute(
        insert(message_table),
        [
            {
                "id": new_id(),
                "consultation_id": cid,
                "author_id": (doctor, expert)[k % 2].id,
                "author_institution_id": (doctor, expert)[k % 2].organization_id,
                "in_response_to_id": None,
                "body": f"第{k + 1}条：请补充近三日血糖谱与心电图。" * (1 + k % 4),
                "sent_at": start + timedelta(hours=k),
            }
            for k in range(count)
        ],
    )


def _case_data(
    session: Any, patient_ids: list[str], org_id: str, now: Any, rng: random.Random, new_id: Any
) -> None:
    """What the case packet reads: a day of vital signs, alarms, a triage result, a study with a finding."""
    from sqlalchemy import insert

    from tianfu.imaging.findings import ImagingFinding
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy
    from tianfu.monitoring.tables import AlarmEpisode, VitalSample
    from tianfu.triage.tables import TriageSession

    steps = int(timedelta(hours=24) / VITALS_EVERY)
    vitals = []
    for pid in patient_ids:
        base = rng.uniform(70, 100)
        vitals += [
            {
                "resolution": "minute",
                "observed_at": now - VITALS_EVERY * k,
                "patient_id": pid,
                "heart_rate": base + rng.uniform(-8, 8),
                "spo2": rng.uniform(92, 99),
                "respiratory_rate": rng.uniform(14, 24),
                "systolic_bp": rng.uniform(100, 160),
                "temperature": rng.uniform(36.2, 38.0),
                "news2": rng.randint(0, 6),
                "source": "bench",
                "flags": {},
            }
            for k in range(steps)
        ]
    session.execute(insert(VitalSample), vitals)
    session.execute(
        insert(AlarmEpisode),
        [
            {
                "id": new_id(),
                "patient_id": pid,
                "condition": "spo2_low",
                "kind": "physiological",
                "priority": "medium",
                "state": "cleared",
                "message": "SpO₂ 低",
                "value": 89.0,
                "raised_at": now - timedelta(hours=k * 5 + 1),
            }
            for pid in patient_ids
            for k in range(3)
        ],
    )
    result = {
        "symptoms_present": ["胸闷", "乏力", "口渴"],
        "conditions": [{"name": "心绞痛", "probability": 0.4}, {"name": "糖尿病", "probability": 0.3}],
    }
    session.execute(
        insert(TriageSession),
        [
            {
                "id": new_id(),
                "organization_id": org_id,
                "patient_id": pid,
                "channel": "nurse",
                "status": "completed",
                "state": {},
                "result": result,
                "level": 3,
                "department_code": "cardiology",
                "created_at": now - timedelta(hours=30),
                "updated_at": now - timedelta(hours=30),
                "completed_at": now - timedelta(hours=30),
            }
            for pid in patient_ids
        ],
    )
    studies, series, instances, findings = [], [], [], []
    for pid in patient_ids:
        study, one_series, instance = new_id(), new_id(), new_id()
        studies.append(
            {
                "id": study,
                "study_instance_uid": f"2.25.{uuid.uuid4().int}"[:64],
                "organization_id": org_id,
                "patient_id": pid,
                "modalities": "CR",
                "description": "胸部正位",
                "study_date": (now - timedelta(hours=20)).date(),
                "received_at": now - timedelta(hours=20),
                "last_received_at": now - timedelta(hours=20),
                "status": "analysed",
            }
        )
        series.append(
            {"id": one_series, "series_instance_uid": f"2.25.{uuid.uuid4().int}"[:64], "study_id": study}
        )
        instances.append(
            {
                "id": instance,
                "sop_instance_uid": f"2.25.{uuid.uuid4().int}"[:64],
                "series_id": one_series,
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1",
                "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                "storage_path": f"bench/{instance}.dcm",
                "size_bytes": 0,
                "sha256": "0" * 64,
                "source": "c-store",
            }
        )
        probability = rng.random()
        findings.append(
            {
                "id": new_id(),
                "study_id": study,
                "instance_id": instance,
                "task": "pneumonia",
                "model_version": "1.0.0",
                "label": "pneumonia" if probability > 0.5 else "normal",
                "probability": probability,
                "score": probability,
                "threshold": 0.5,
                "positive": probability > 0.5,
                "probabilities": {"pneumonia": probability, "normal": 1 - probability},
                "created_at": now - timedelta(hours=20),
            }
        )
    for table, rows in (
        (ImagingStudy, studies),
        (ImagingSeries, series),
        (ImagingInstance, instances),
        (ImagingFinding, findings),
    ):
        session.execute(insert(table), rows)


# --- the simulated users ---------------------------------------------------------------------------------


async def _user(
    client: Any,
    user: BenchUser,
    token: str,
    rng: random.Random,
    think: float,
    measure_from: float,
    until: float,
    samples: dict[str, list[float]],
    errors: dict[str, int],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    names = [n for n, _ in MIX]
    weights = [float(w) for _, w in MIX]
    loop = asyncio.get_running_loop()
    await asyncio.sleep(rng.uniform(0, think * 2))  # users do not start in step
    while loop.time() < until:
        operation: str = rng.choices(names, weights)[0]
        if operation == "queue":
            name = "queue:incoming" if user.role == "consultant" else "queue:mine"
            method, url, body = "GET", f"{API}/{name.split(':')[1]}", None
        else:
            pools = {"post-message": user.open_consultations, "case-packet": user.packets}
            cid = rng.choice(pools.get(operation) or user.consultations)
            if operation == "post-message":
                method, url, body = "POST", f"{API}/{cid}/messages", {"body": "收到，已查看检查结果。"}
            else:
                method, url, body = "GET", f"{API}/{cid}/{operation}", None
            name = operation
        started = loop.time()
        try:
            response = await client.request(method, url, json=body, headers=headers)
            await response.aread()
            outcome = str(response.status_code)
        except Exception as exc:  # a failed request counts as an error; the run goes on
            outcome = type(exc).__name__
        # A request sent in the window counts, however long it takes (a slow server is not hidden).
        if measure_from <= started < until:
            samples.setdefault(name, []).append(loop.time() - started)
            if not outcome.startswith(("2", "3")):
                errors[f"{name} {outcome}"] = errors.get(f"{name} {outcome}", 0) + 1
        await asyncio.sleep(rng.uniform(0, 2 * think))


def _load(
    base: str, users: list[BenchUser], think: float, warmup: float, seconds: float, seed: int, queue: Any
) -> None:
    """The load process: log every user in once, then run them all concurrently."""
    import httpx

    from tianfu.demo import DEMO_PASSWORD

    async def main() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=len(users) + 10, max_keepalive_connections=len(users) + 10)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            gate = asyncio.Semaphore(4)  # password checks are deliberately slow: a few at a time

            async def login(user: BenchUser) -> str:
                async with gate:
                    for attempt in range(5):  # a server stuck on its database answers 500: try again
                        response = await client.post(
                            "/api/v1/auth/token", json={"username": user.username, "password": DEMO_PASSWORD}
                        )
                        if response.status_code < 500 or attempt == 4:
                            break
                    response.raise_for_status()
                    return str(response.json()["access_token"])

            login_started = time.perf_counter()
            tokens = await asyncio.gather(*(login(u) for u in users))
            login_s = time.perf_counter() - login_started
            samples: dict[str, list[float]] = {}
            errors: dict[str, int] = {}
            loop = asyncio.get_running_loop()
            measure_from = loop.time() + warmup
            until = measure_from + seconds
            await asyncio.gather(
                *(
                    _user(client, u, t, random.Random(seed + k), think, measure_from, until, samples, errors)  # noqa: S311
                    for k, (u, t) in enumerate(zip(users, tokens, strict=True))
                )
            )
            return {"samples": samples, "errors": errors, "login_s": login_s}

    queue.put(asyncio.run(main()))


def _proc_cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    *,
    users: int = 100,
    consultations: int = 300,
    seconds: float = 20.0,
    warmup: float = 5.0,
    think: float = 2.0,
    postgres: str | None = None,
    seed: int = 6,
    max_inflight: int = 0,
) -> dict[str, Any]:
    """Seed, serve, load; the per-endpoint latencies and the throughput."""
    import uvicorn

    secret = "consult-benchmark-secret-key-0123456789abcdef"  # noqa: S105 - a throw-away database
    rng = random.Random(seed)  # noqa: S311 - reproducible seed data, not secrets
    with tempfile.TemporaryDirectory(prefix="tianfu-bench-consult-") as tmp:
        var = Path(tmp)
        database_url = f"sqlite:///{var / 'consult.db'}"
        admin_url = name = None
        if postgres:
            import psycopg
            from sqlalchemy import make_url

            name = f"tianfu_bench_{uuid.uuid4().hex[:8]}"
            admin_url = make_url(postgres).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            database_url = make_url(postgres).set(database=name).render_as_string(hide_password=False)
        try:
            seeding = time.perf_counter()
            physicians = users // 2
            simulated = build_network(
                database_url,
                var,
                physicians=physicians,
                consultants=users - physicians,
                consultations=consultations,
                secret_key=secret,
                rng=rng,
            )
            seed_s = time.perf_counter() - seeding
            port = _free_port()
            saved_environ = dict(os.environ)
            os.environ.update(
                TIANFU_DEMO="0",
                TIANFU_SECRET_KEY=secret,
                TIANFU_DATABASE_URL=database_url,
                TIANFU_VAR_DIR=str(var),
                TIANFU_HL7_PORT="0",
                TIANFU_DICOM_PORT="0",
                TIANFU_DEMO_FEED="false",
                TIANFU_MAX_CONCURRENT_REQUESTS=str(max_inflight),  # 0: the kernel's default
            )
            from tianfu.app import create_app
            from tianfu.core.settings import Settings
            from tianfu.imaging.dicom import get_dicom_settings
            from tianfu.monitoring.settings import get_monitoring_settings

            get_monitoring_settings.cache_clear()
            get_dicom_settings.cache_clear()
            app: Any = create_app(Settings())
            kernel = app.state.kernel
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            try:
                context = multiprocessing.get_context("spawn")
                queue: Any = context.Queue()
                loader = context.Process(
                    target=_load,
                    args=(f"http://127.0.0.1:{port}", simulated, think, warmup, seconds, seed, queue),
                )
                cpu_before = _proc_cpu_seconds()
                loader.start()
                result = queue.get(timeout=users * 5 + warmup + seconds + 300)
                cpu = _proc_cpu_seconds() - cpu_before
                loader.join(timeout=30)
            finally:
                server.should_exit = True
                thread.join(timeout=30)
                kernel.engine.dispose()
                os.environ.clear()
                os.environ.update(saved_environ)
                get_monitoring_settings.cache_clear()
                get_dicom_settings.cache_clear()
        finally:
            if admin_url is not None:
                import psycopg

                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    samples: dict[str, list[float]] = result["samples"]
    errors: dict[str, int] = result["errors"]
    total = sum(len(v) for v in samples.values())
    endpoints = {
        key: {
            "endpoint": ENDPOINTS[key],
            "n": len(samples.get(key, [])),
            "errors": sum(n for k, n in errors.items() if k.split(" ")[0] == key),
            "p50_ms": round(percentile(samples.get(key, []), 0.5) * 1000, 1),
            "p95_ms": round(percentile(samples.get(key, []), 0.95) * 1000, 1),
            "p99_ms": round(percentile(samples.get(key, []), 0.99) * 1000, 1),
        }
        for key in ENDPOINTS
    }
    everything = [s for v in samples.values() for s in v]
    return {
        "database": "PostgreSQL" if postgres else "SQLite",
        "users": users,
        "consultations": consultations,
        "think_s_mean": think,
        "max_inflight": max_inflight,
        "warmup_s": warmup,
        "seconds": seconds,
        "seed_s": round(seed_s, 1),
        "login_s": round(result["login_s"], 1),
        "requests": total,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_rps": round(total / seconds, 1),
        "all_p95_ms": round(percentile(everything, 0.95) * 1000, 1),
        "server_process_cpu_cores": round(cpu / (warmup + seconds + result["login_s"]), 2),
        "endpoints": endpoints,
    }


def command(
    users: Annotated[
        int, typer.Option(help="Simulated users, half inviting physicians, half consultants.")
    ] = 100,
    consultations: Annotated[int, typer.Option(help="Consultations seeded before the load.")] = 300,
    seconds: Annotated[float, typer.Option(help="How long to measure.")] = 20.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load before measuring.")] = 5.0,
    think: Annotated[float, typer.Option(help="Mean think time between a user's requests (s).")] = 2.0,
    postgres: Annotated[str, typer.Option(help="Store in a fresh database on this PostgreSQL.")] = "",
    max_inflight: Annotated[
        int,
        typer.Option(help="Requests the server runs at once (0: the kernel's default for the database)."),
    ] = 0,
) -> None:
    """100 physicians on the consultation queue, case packet and messages; p50/p95/p99 per endpoint."""
    result = run(
        users=users,
        consultations=consultations,
        seconds=seconds,
        warmup=warmup,
        think=think,
        postgres=postgres or None,
        max_inflight=max_inflight,
    )
    print(json.dumps(result, ensure_ascii=False))  # the command's output, read by run.py
