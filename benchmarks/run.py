"""Kernel benchmarks: `make bench` runs them and writes benchmarks/results.{json,md}.

Each benchmark builds what it needs (a demo-seeded SQLite database, PostgreSQL when reachable, NATS when
reachable) in a temporary directory and reports medians and percentiles. Numbers depend on the machine:
the table records the CPU count it ran on.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import make_url

from tianfu.app import create_app
from tianfu.core.audit.service import Actor
from tianfu.core.bus import Event, EventBus
from tianfu.core.bus.memory import InProcessBus
from tianfu.core.identity import passwords
from tianfu.core.kernel import Kernel
from tianfu.core.migrate import upgrade
from tianfu.core.settings import Settings
from tianfu.demo import DEMO_PASSWORD, seed

OUT = Path(__file__).resolve().parent
SECRET = "benchmark-secret-key-long-enough-0123456789abcdef"
POSTGRES_URL = os.environ.get(
    "TIANFU_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("TIANFU_BENCH_NATS_URL", "nats://127.0.0.1:4222")
ACTOR = Actor(user_id=None, username="bench", role="system")

results: list[dict[str, Any]] = []


def record(name: str, value: float, unit: str, note: str = "") -> None:
    results.append({"benchmark": name, "value": round(value, 2), "unit": unit, "note": note})
    print(f"{name:<58} {value:>12,.1f} {unit:<10} {note}")


def port_open(url: str, default_port: int) -> bool:
    parsed = make_url(url.replace("nats://", "nats+x://"))
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def demo_kernel(url: str, var_dir: Path) -> Kernel:
    upgrade(url)
    kernel = Kernel(Settings(demo=False, secret_key=SECRET, database_url=url, var_dir=var_dir))
    seed(kernel)
    return kernel


# --- passwords ---------------------------------------------------------------------------------------


def bench_password_hash() -> None:
    hashed = passwords.hash_password(DEMO_PASSWORD)
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        passwords.verify_password(hashed, DEMO_PASSWORD)
        samples.append(time.perf_counter() - start)
    record(
        "argon2id password check (login cost)",
        statistics.median(samples) * 1000,
        "ms",
        "argon2-cffi defaults: 64 MiB, t=3, p=4",
    )


# --- audit chain -------------------------------------------------------------------------------------


def bench_audit(kernel: Kernel, backend: str) -> None:
    n = 2000
    with kernel.sessions() as session:
        start = time.perf_counter()
        for i in range(n):
            kernel.audit.record(
                session,
                actor=ACTOR,
                action="patient.read",
                action_type="R",
                resource_type="Patient",
                resource_id=str(i),
                patient_ids=[f"p{i % 50}"],
            )
            if i % 20 == 19:
                session.commit()  # a commit per request, 20 records a time
        session.commit()
        elapsed = time.perf_counter() - start
    record(f"audit append, {backend}", n / elapsed, "records/s", "20 records per transaction")
    with kernel.sessions() as session:
        start = time.perf_counter()
        result = kernel.audit.verify(session)
        elapsed = time.perf_counter() - start
    assert result.ok
    record(
        f"audit chain verify, {backend}", result.checked / elapsed, "records/s", f"{result.checked} records"
    )


# --- HTTP --------------------------------------------------------------------------------------------


class Server:
    def __init__(self, kernel: Kernel) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = create_app(kernel.settings, kernel=kernel)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def bench_http(kernel: Kernel, backend: str) -> None:
    with Server(kernel) as base, httpx.Client(base_url=base, timeout=30) as client:
        token = client.post(
            "/api/v1/auth/token", json={"username": "nurse.wang", "password": DEMO_PASSWORD}
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        patient_id = client.get("/api/v1/patients", headers=headers).json()["items"][0]["id"]
        cases: list[tuple[str, Callable[[], httpx.Response]]] = [
            ("GET /api/v1/patients (nurse's ward)", lambda: client.get("/api/v1/patients", headers=headers)),
            (
                "GET /fhir/R4/Patient/{id}",
                lambda: client.get(f"/fhir/R4/Patient/{patient_id}", headers=headers),
            ),
            ("GET /patients page (HTML)", lambda: client.get("/patients", headers=headers)),
            ("GET /healthz", lambda: client.get("/healthz")),
        ]
        for name, call in cases:
            for _ in range(20):
                call().raise_for_status()
            samples = []
            for _ in range(200):
                start = time.perf_counter()
                call().raise_for_status()
                samples.append(time.perf_counter() - start)
            note = "one client" + ("" if "healthz" in name else "; audited read")
            record(f"{name}, {backend}, p50", percentile(samples, 0.5) * 1000, "ms", note)
            record(f"{name}, {backend}, p95", percentile(samples, 0.95) * 1000, "ms")


# --- event bus ---------------------------------------------------------------------------------------


async def _bus_throughput(bus: EventBus, subject: str, n: int) -> tuple[float, float]:
    await bus.start()
    received = 0
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        nonlocal received
        received += 1
        if received == n:
            done.set()

    subscription = await bus.subscribe(
        subject.rsplit(".", 1)[0] + ".>", f"bench-{uuid.uuid4().hex[:6]}", handler
    )
    start = time.perf_counter()
    for i in range(n):
        await bus.publish(subject, {"i": i, "bed": "CARD1-01", "hr": 72})
    published = time.perf_counter() - start
    await asyncio.wait_for(done.wait(), timeout=120)
    total = time.perf_counter() - start
    await subscription.stop()
    return n / published, n / total


def bench_bus() -> None:
    n = 20_000
    publish, end_to_end = asyncio.run(_bus_throughput(InProcessBus(), "tianfu.bench.vitals", n))
    record("event bus in-process: publish", publish, "events/s")
    record("event bus in-process: publish → consumer acked", end_to_end, "events/s", f"{n} events")
    if not port_open(NATS_URL, 4222):
        print("NATS not reachable: skipped the JetStream benchmark")
        return
    from tianfu.core.bus.nats import NatsJetStreamBus

    stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
    bus = NatsJetStreamBus(NATS_URL, stream=stream, namespace=stream.lower())

    async def run() -> tuple[float, float]:
        try:
            return await _bus_throughput(bus, "tianfu.bench.vitals", 5000)
        finally:
            await bus.delete_stream()
            await bus.close()

    publish, end_to_end = asyncio.run(run())
    record(
        "event bus NATS JetStream: publish (acked by server)",
        publish,
        "events/s",
        "one publisher, sequential",
    )
    record(
        "event bus NATS JetStream: publish → consumer acked",
        end_to_end,
        "events/s",
        "5000 events, file storage",
    )


def bench_outbox(kernel: Kernel, backend: str) -> None:
    from tianfu.core.bus.outbox import enqueue

    n = 2000
    with kernel.sessions() as session:
        for i in range(n):
            enqueue(session, "tianfu.bench.outbox", {"i": i})
        session.commit()

    async def drain() -> float:
        await kernel.bus.start()
        start = time.perf_counter()
        published = await kernel.outbox.flush()
        assert published == n
        return n / (time.perf_counter() - start)

    record(f"outbox relay: committed → published, {backend}", asyncio.run(drain()), "events/s", f"{n} events")


# --- monitoring --------------------------------------------------------------------------------------


def _beds(variable: str, default: str) -> list[int]:
    return [int(n) for n in os.environ.get(variable, default).split(",") if n]


# The server as a 2-core hospital server would run it: TIANFU_HL7_PROCESSES=1 (see README); the storm runs
# of TIANFU_BENCH_ONE_PROCESS_BEDS keep the listener in the server's own process, for comparison.
MONITORING_BEDS = _beds("TIANFU_BENCH_BEDS", "250,1000,5000")
MONITORING_CALM_BEDS = _beds("TIANFU_BENCH_CALM_BEDS", "5000")
MONITORING_ONE_PROCESS_BEDS = _beds("TIANFU_BENCH_ONE_PROCESS_BEDS", "3000")
# Sustained: 5,000 beds in an alarm storm for this long (0: skipped), with each minute's p99.
MONITORING_SUSTAINED_S = int(os.environ.get("TIANFU_BENCH_SUSTAINED_SECONDS", "300"))
TOP_OF_HOUR_AT_S = 90  # into the sustained run: every bed's hour closes and is scored by the sepsis model
PHYSIONET = Path(
    os.environ.get(
        "TIANFU_BENCH_PHYSIONET",
        OUT.parent.parent / "shared/data/monitoring/physionet2019/training_setA.tar.gz",
    )
)


def _tianfu_json(*args: str) -> dict[str, Any]:
    """Run a `tianfu` command in its own process (each bench starts its own server); its last line is JSON."""
    import subprocess
    import sys

    tianfu = str(Path(sys.executable).parent / "tianfu")
    done = subprocess.run([tianfu, *args], capture_output=True, text=True, check=True)  # noqa: S603 - ours
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def bench_monitoring() -> None:
    # A third of the beds raising and clearing an alarm every 2 s is an alarm storm (at 1,000 beds, 170
    # alarms a second); one in a hundred is still about twice the UCSF study's 187 alarms per bed per day.
    runs = (
        [(beds, 1 / 3, 1) for beds in MONITORING_BEDS]
        + [(beds, 0.01, 1) for beds in MONITORING_CALM_BEDS]
        + [(beds, 1 / 3, 0) for beds in MONITORING_ONE_PROCESS_BEDS]
    )
    for beds, alarming, listeners in runs:
        r = _tianfu_json(
            "bench", "monitoring", "--beds", str(beds), "--seconds", "30", "--warmup", "30",
            "--alarming", str(alarming), "--hl7-processes", str(listeners),
        )  # fmt: skip
        update, alarm = r["update_latency_ms"], r["alarm_latency_ms"]
        # kept up: the monitors' reports were answered on time (≤1 % a period late) and the station saw them
        kept_up = r["monitors_fell_behind"] <= 0.01 * r["reports_acked"] and update["n"] > 0
        storm = alarming > 0.1
        note = (
            f"{beds} monitors at 1 Hz over MLLP, one ward's SSE client, "
            f"{'a third' if storm else 'one in a hundred'} of the beds raising an alarm every 2 s; "
            f"{r['reports_per_s']:,} reports/s acked"
            + (
                f"; p50/p99 {update['p50']:,.0f}/{update['p99']:,.0f} ms to visible, alarm "
                f"{alarm['p50']:,.0f}/{alarm['p99']:,.0f} ms"
                if kept_up
                else f"; NOT SUSTAINED: monitors fell behind {r['monitors_fell_behind']:,} times, "
                f"{update['n']} updates seen"
            )
            + f"; server {r['server_cpu_cores']} cores, {r['server_rss_mib']} MiB"
            + (" with its HL7 listener process" if listeners else ", HL7 listener in the server process")
        )
        variant = ("" if storm else " (1 % alarming)") + ("" if listeners else ", no listener process")
        record(
            f"monitoring: {beds} beds{variant}, sent → on the central station p99",
            update["p99"] if kept_up else float("nan"),
            "ms",
            note,
        )
        if beds == MONITORING_BEDS[0]:
            parser = r["parser"]
            record(
                "HL7 PCD-01 parse: Tianfu's reader",
                parser["tianfu_reader_msgs_per_s"],
                "msgs/s",
                "same 5,000 messages",
            )
            if "hl7_library_msgs_per_s" in parser:
                record(
                    "HL7 PCD-01 parse: hl7 library (peer)",
                    parser["hl7_library_msgs_per_s"],
                    "msgs/s",
                    "hl7.parse",
                )
    if MONITORING_SUSTAINED_S:
        r = _tianfu_json(
            "bench", "monitoring", "--beds", "5000", "--seconds", str(MONITORING_SUSTAINED_S),
            "--warmup", "30", "--hl7-processes", "1", "--top-of-hour-at", str(TOP_OF_HOUR_AT_S),
        )  # fmt: skip
        update = r["update_latency_ms"]
        minutes = ", ".join(f"{p:,.0f}" for p in update["p99_by_minute"])
        record(
            f"monitoring: 5000 beds for {MONITORING_SUSTAINED_S // 60} min, worst minute's p99",
            max(update["p99_by_minute"]) if update["n"] else float("nan"),
            "ms",
            f"alarm storm as above, and at 90 s every bed's hour closes "
            f"({r['hours_closed_at_top_of_hour']:,} sepsis scores, as at the top of the hour); "
            f"p99 by minute {minutes} ms; overall p50/p99 "
            f"{update['p50']:,.0f}/{update['p99']:,.0f} ms; monitors fell behind "
            f"{r['monitors_fell_behind']:,} times; "
            f"server {r['server_cpu_cores']} cores, {r['server_rss_mib']} MiB",
        )
    shipped = str(OUT.parent / "src/tianfu/monitoring/demo_data")
    for label, source in (
        ("demo recordings (minute and hour rows)", shipped),
        ("PhysioNet 2019 A (hour rows)", PHYSIONET),
    ):
        if not Path(source).exists():
            print(f"{source} not found: skipped its alarm burden")
            continue
        burden = _tianfu_json("monitor", "alarm-burden", str(source))
        with_rules, without = burden["with_delay_and_hysteresis"], burden["without"]
        note = (
            f"{burden['recordings']} recordings, {burden['bed_days']:,} bed-days; "
            f"without delay and hysteresis {without['per_bed_day']}"
        )
        record(f"alarm burden, {label}", with_rules["per_bed_day"], "alarms/bed/day", note)
    if PHYSIONET.exists():
        started = time.perf_counter()
        evaluation = _tianfu_json("monitor", "evaluate", str(PHYSIONET))
        seconds = time.perf_counter() - started
        note = (
            f"{evaluation['n_stays']:,} stays in {seconds:.0f} s; the training hospital, so in-sample: "
            f"utility {evaluation['utility']:.3f}; NEWS2 AUROC {evaluation['news2_auroc']:.3f}, "
            f"utility {evaluation['news2_utility']:.3f}"
        )
        record("sepsis model: tianfu monitor evaluate, hourly AUROC", evaluation["auroc"], "AUROC", note)


TRIAGE_DATA = Path(os.environ.get("TIANFU_BENCH_TRIAGE_DATA", OUT.parent.parent / "shared/data/triage"))


def _script_json(script: str, *args: str) -> dict[str, Any]:
    import subprocess
    import sys

    done = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(OUT.parent / script), *args], capture_output=True, text=True, check=False
    )
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


COMPLAINTS = (
    "咳嗽三天，流鼻涕，没有发烧",
    "孩子拉肚子，一天五六次，有点发烧",
    "发烧，咳嗽，有痰，喘",
    "打喷嚏，流清鼻涕，鼻子痒",
    "嗓子疼，咳嗽，低烧",
)


def bench_triage_api(kernel: Kernel) -> None:
    """Interview turns through the HTTP API, as a kiosk or WeChat front end makes them (SQLite, audited)."""
    with Server(kernel) as base, httpx.Client(base_url=base, timeout=30) as client:
        token = client.post(
            "/api/v1/auth/token", json={"username": "nurse.wang", "password": DEMO_PASSWORD}
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        samples: list[float] = []
        for i in range(120):
            body = {"text": COMPLAINTS[i % len(COMPLAINTS)], "visitor_label": f"bench {i}"}
            session = client.post("/api/v1/triage/sessions", json=body, headers=headers).json()
            while session["question"] is not None:
                answer = ("yes", "no", "unsure")[len(samples) % 3]
                start = time.perf_counter()
                response = client.post(
                    f"/api/v1/triage/sessions/{session['id']}/answers",
                    json={"symptom": session["question"]["symptom"], "answer": answer},
                    headers=headers,
                )
                samples.append(time.perf_counter() - start)
                response.raise_for_status()
                session = response.json()
        warm = samples[20:]
    record(
        "triage: one interview turn over the HTTP API, SQLite, p99",
        percentile(warm, 0.99) * 1000,
        "ms",
        f"p50 {percentile(warm, 0.5) * 1000:.1f} ms over {len(warm)} turns of 120 interviews, one client; "
        "each turn stores the interview and its audit record, the last one also the AI output",
    )


def bench_triage() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kernel = demo_kernel(f"sqlite:///{Path(tmp) / 'triage.db'}", Path(tmp))
        bench_triage_api(kernel)
        kernel.engine.dispose()
    r = _tianfu_json("bench", "triage")
    loads = r["model_load_s"]
    record(
        "triage: one interview turn in the engine (answer in, next question out) p99",
        r["turn_p99_ms"],
        "ms",
        f"p50 {r['turn_p50_ms']} ms over {r['turns']:,} turns of simulated patients, all six models; "
        f"result (differential, departments, urgency) p50/p99 {r['result_p50_ms']}/{r['result_p99_ms']} ms; "
        f"slowest inquiry model load {max(loads.values())} s, department router {r['router_load_s']} s",
    )
    vignettes = _script_json("training/triage/measure_vignettes.py")
    record(
        "triage urgency: under-triage on the written vignettes",
        vignettes["under_triage_rate"],
        "rate",
        f"{vignettes['n']} nurse-desk vignettes (written by engineers, not clinicians): over-triage "
        f"{vignettes['over_triage_rate']}, exact {vignettes['exact_agreement']}, weighted κ "
        f"{vignettes['quadratic_weighted_kappa']}; self-service missed referrals "
        f"{vignettes['self_service_missed_referral_rate']}",
    )
    dxy = TRIAGE_DATA / "dxy" / "train.json"
    if dxy.exists():
        intake = _script_json("training/triage/measure_intake.py", "--data", str(dxy))
        held = intake["held_out"]
        record(
            "triage intake: symptoms recognised in DXY self-reports, held-out F1",
            held["present"]["f1"],
            "F1",
            f"{held['n']} held-out reports, present symptoms: P {held['present']['precision']}, "
            f"R {held['present']['recall']}; ignoring polarity F1 {held['symptom']['f1']}",
        )
    card = json.loads(
        importlib.resources.files("tianfu.triage").joinpath("models/department-classifier.json").read_text()
    )
    cv = card["cv"]
    record(
        "triage departments: Toyhom questions, 5-fold CV top-1",
        cv["top1"]["mean"],
        "accuracy",
        f"top-3 {cv['top3']['mean']}; majority baseline {cv['majority_baseline']['mean']}; folds grouped by "
        "title (numbers written by training/triage/train_departments.py)",
    )


def _radiograph() -> Any:
    """pydicom-data's full-size chest CR (1955×1841, 15-bit MONOCHROME1), or None when not installed."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    return pydicom.dcmread(path) if path else None


def bench_imaging() -> None:
    """C-STORE of a full-size radiograph → the AI's finding stored: one sender, then several at once. Fails
    (raises) when any image sent lacks its finding."""
    import copy
    from concurrent.futures import ThreadPoolExecutor

    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom import AE
    from sqlalchemy import select

    from tianfu.core.deadletter.models import DeadLetter
    from tianfu.imaging import inference
    from tianfu.imaging.dicom import get_dicom_settings, pixels
    from tianfu.imaging.findings import ImagingFinding
    from tianfu.imaging.tables import ImagingInstance

    template = _radiograph()
    if template is None:
        print("pydicom-data not installed: skipped the imaging benchmarks")
        return
    image = pixels.display_array(template)
    model = inference.ImagingModel.load("pneumonia")
    model.predict(image)
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        model.predict(image)
        samples.append(time.perf_counter() - start)
    record(
        "imaging: pneumonia model on a 1955×1841 radiograph, p50",
        percentile(samples, 0.5) * 1000,
        "ms",
        "resize to 28×28, onnxruntime, calibration and the full-size heatmap",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"TIANFU_DICOM_PORT": str(port), "TIANFU_DICOM_ORGANIZATION": "TFRM"})
    get_dicom_settings.cache_clear()

    def study() -> Dataset:
        # A deep copy: Dataset.copy() shares the elements, so senders in threads would change each other's
        # UIDs and wait for studies nobody sent (what once looked like a lost analysis).
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.BodyPartExamined = "CHEST"
        return ds

    with tempfile.TemporaryDirectory() as tmp:
        kernel = demo_kernel(f"sqlite:///{Path(tmp) / 'imaging.db'}", Path(tmp))
        with Server(kernel):

            def send(ds: Dataset, calling_ae: str = "BENCH") -> tuple[str, float]:
                ae = AE(ae_title=calling_ae)
                ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
                assoc = ae.associate("127.0.0.1", port, ae_title="TIANFU")
                started = time.perf_counter()
                status = assoc.send_c_store(ds)
                assoc.release()
                if status.Status != 0:
                    raise RuntimeError(f"C-STORE status {status.Status:#06x}")
                return str(ds.SOPInstanceUID), started

            def analysed(uids: list[str]) -> set[str]:
                with kernel.sessions() as session:
                    return set(
                        session.scalars(
                            select(ImagingInstance.sop_instance_uid)
                            .join(ImagingFinding, ImagingFinding.instance_id == ImagingInstance.id)
                            .where(ImagingInstance.sop_instance_uid.in_(uids))
                        )
                    )

            def wait_all(uids: list[str], timeout: float = 120) -> None:
                deadline = time.perf_counter() + timeout
                while time.perf_counter() < deadline:
                    if len(analysed(uids)) == len(uids):
                        return
                    time.sleep(0.05)
                missing = sorted(set(uids) - analysed(uids))
                with kernel.sessions() as session:
                    letters = [f"{d.source}: {d.reason}" for d in session.scalars(select(DeadLetter))]
                raise RuntimeError(
                    f"{len(missing)} of {len(uids)} studies have no AI finding after {timeout:.0f} s: "
                    f"{missing}; dead letters: {letters or 'none'}"
                )

            def read(uid: str, started: float) -> float:
                while time.perf_counter() < started + 120:
                    if analysed([uid]):
                        return time.perf_counter() - started
                    time.sleep(0.01)
                wait_all([uid], timeout=0)  # raises, naming the dead letters
                raise AssertionError("unreachable")

            latencies = [read(*send(study())) for _ in range(LATENCY_STUDIES)]
            record(
                "imaging: C-STORE of a full-size radiograph → AI finding stored (SR after), p95",
                percentile(latencies, 0.95) * 1000,
                "ms",
                f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms over {LATENCY_STUDIES} studies sent one "
                "after another (1955×1841 15-bit CR, 7 MB): storage, index, audit, bus, model, heatmap, to "
                "the finding committed; the DICOM SR is written after that, in its own transaction",
            )
            batches = [[study() for _ in range(CONCURRENT_STUDIES // SENDERS)] for _ in range(SENDERS)]

            def sender(k: int) -> list[str]:
                return [send(ds, f"BENCH{k}")[0] for ds in batches[k]]

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=SENDERS) as pool:
                uids = [uid for sent in pool.map(sender, range(SENDERS)) for uid in sent]
            wait_all(uids)
            minutes = (time.perf_counter() - started) / 60
            record(
                f"imaging: studies per minute, {SENDERS} concurrent C-STORE senders",
                len(uids) / minutes,
                "studies/min",
                f"{len(uids)} full-size radiographs, one association each, from the first send until every "
                "finding is stored (the run fails if any is missing); one server process, SQLite",
            )
        kernel.engine.dispose()


# --- AI platform -----------------------------------------------------------------------------------------


def bench_ai() -> None:
    """Inference API latency per task, local validation throughput, and the field dashboard's query."""
    import base64
    import io
    from datetime import timedelta

    import numpy as np
    from PIL import Image
    from sqlalchemy import select

    from tianfu.ai import service
    from tianfu.ai.settings import AiSettings
    from tianfu.core.db import utcnow
    from tianfu.core.identity.models import User
    from tianfu.core.model_outputs import service as outputs
    from tianfu.core.model_outputs.models import ModelOutput

    demo_images = Path(service.__file__).parent / "demo_data" / "pneumonia_val200.npz"
    with np.load(demo_images) as data:
        images, labels = data["val_images"], data["val_labels"]
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    hours = [
        {"HR": 80.0 + h, "O2Sat": 97.0, "Temp": 37.0 + h / 20, "Resp": 18.0, "MAP": 80.0, "Age": 60.0}
        for h in range(24)
    ]
    bodies = {
        "imaging-pneumonia": {"image": base64.b64encode(png.getvalue()).decode()},
        "triage-departments": {"complaint": "发烧咳嗽三天，有痰"},
        "monitoring-sepsis": {"rows": hours},
    }
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        kernel = demo_kernel(f"sqlite:///{var / 'ai.db'}", var)
        with Server(kernel) as base, httpx.Client(base_url=base, timeout=30) as client:
            token = client.post(
                "/api/v1/auth/token", json={"username": "dr.zhang", "password": DEMO_PASSWORD}
            ).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            for task, body in bodies.items():
                samples = []
                for _ in range(150):
                    start = time.perf_counter()
                    client.post(f"/api/v1/ai/infer/{task}", json=body, headers=headers).raise_for_status()
                    samples.append(time.perf_counter() - start)
                warm = samples[10:]
                record(
                    f"ai: POST /api/v1/ai/infer/{task}, p95",
                    percentile(warm, 0.95) * 1000,
                    "ms",
                    f"p50 {percentile(warm, 0.5) * 1000:.1f} ms, one client, SQLite; "
                    "each call recorded and audited",
                )

        # Local validation: the demo's 200 radiographs twice over (400 images), 1,000 bootstrap resamples.
        dataset = var / "pneumonia400.npz"
        np.savez(dataset, val_images=np.tile(images, (2, 1, 1)), val_labels=np.tile(labels, (2, 1)))
        with kernel.sessions() as session, session.begin():
            run_id = service.create_validation(
                session,
                kernel.audit,
                actor=ACTOR,
                model_name="tianfu-imaging-pneumonia",
                version=None,
                data_path=dataset,
                dataset_name=dataset.name,
            ).id
        start = time.perf_counter()
        done = service.execute_validation(kernel.sessions, run_id, dataset, n_boot=1000)
        elapsed = time.perf_counter() - start
        assert done.status == "done", done.error
        record(
            "ai: local validation of 400 radiographs, whole run",
            elapsed,
            "s",
            "model, metrics with 1,000 bootstrap CIs, three charts, HTML and PDF report",
        )

        # The field dashboard over 20,000 recorded outputs, half of them reviewed.
        with kernel.sessions() as session, session.begin():
            now = utcnow()
            session.add_all(
                ModelOutput(
                    module="imaging",
                    task="imaging-pneumonia",
                    model_name="tianfu-imaging-pneumonia",
                    model_version="1.0.0",
                    input_ref=f"bench/{i}",
                    output={},
                    label="normal",
                    score=0.1,
                    input_features={"image_mean": 0.4 + (i % 7) / 50, "image_std": 0.2},
                    created_at=now - timedelta(minutes=2 * i),
                )
                for i in range(20_000)
            )
        with kernel.sessions() as session, session.begin():
            doctor = session.scalars(select(User).where(User.username == "dr.zhang")).one()
            reviewer = Actor(user_id=doctor.id, username=doctor.username, role=doctor.role)
            rows = session.scalars(select(ModelOutput).where(ModelOutput.input_ref.like("bench/%"))).all()
            for i, row in enumerate(rows[::2]):
                verdict = "agree" if i % 10 else "disagree"
                outputs.record_feedback(
                    session, kernel.audit, actor=reviewer, output=row, verdict=verdict, comment="bench"
                )
        samples = []
        for _ in range(5):
            with kernel.sessions() as session:
                start = time.perf_counter()
                service.field_performance(session, "tianfu-imaging-pneumonia", AiSettings())
                samples.append(time.perf_counter() - start)
        record(
            "ai: field-performance summary of 20,000 outputs, median",
            sorted(samples)[2] * 1000,
            "ms",
            "volume and agreement per day, disagreements, PSI drift of two inputs over 30 days",
        )
        kernel.engine.dispose()


# --- consultation ----------------------------------------------------------------------------------------

CONSULT_USERS = int(os.environ.get("TIANFU_BENCH_CONSULT_USERS", "100"))
CONSULT_SECONDS = os.environ.get("TIANFU_BENCH_CONSULT_SECONDS", "30")
# Mean think time of a simulated physician between two requests (uniform from 0 to twice that): 100 users
# clicking every 2 s on average offer about 50 requests/s to one server process.
CONSULT_THINK = os.environ.get("TIANFU_BENCH_CONSULT_THINK", "2")


def bench_consult() -> None:
    """The queue, case packet and message endpoints under 100 concurrent physicians (`tianfu bench consult`:
    its own server and load process), on SQLite and, when reachable, on a fresh PostgreSQL database."""
    import subprocess

    backends: list[tuple[str, list[str]]] = [("SQLite", [])]
    if port_open(POSTGRES_URL, 5432):
        backends.append(("PostgreSQL", ["--postgres", POSTGRES_URL]))
    else:
        print("PostgreSQL not reachable: skipped the consultation benchmark on it")
    for label, extra in backends:
        try:
            r = _tianfu_json(
                "bench", "consult", "--users", str(CONSULT_USERS), "--seconds", CONSULT_SECONDS,
                "--warmup", "10", "--think", CONSULT_THINK, *extra,
            )  # fmt: skip
        except subprocess.CalledProcessError as failed:
            print(f"tianfu bench consult failed on {label}: {failed.stderr.strip().splitlines()[-1:]}")
            continue
        users = f"{r['users']} users, {label}"
        for e in r["endpoints"].values():
            record(
                f"consult: {e['endpoint']}, {label}, p95",
                e["p95_ms"],
                "ms",
                f"{users}; p50 {e['p50_ms']:,.1f}, p99 {e['p99_ms']:,.1f} ms over {e['n']:,} requests"
                + (f", {e['errors']} errors" if e["errors"] else ""),
            )
        record(
            f"consult: requests served, {label}",
            r["throughput_rps"],
            "requests/s",
            f"{users} (half inviting physicians, half consultants), "
            f"think time 0–{2 * r['think_s_mean']:g} s, "
            f"mix 40 % queue, 20 % case packet, 30 % messages, 10 % post; {r['consultations']} "
            f"consultations seeded; all requests p95 {r['all_p95_ms']:,.1f} ms; "
            f"server {r['server_process_cpu_cores']} cores",
        )


LATENCY_STUDIES = 40
SENDERS = 4
CONCURRENT_STUDIES = 40


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Tianfu kernel benchmarks on {machine}")
    only = os.environ.get("TIANFU_BENCH_ONLY", "")
    if only:
        # Rerun one group and keep every other row of the last full run.
        previous = json.loads((OUT / "results.json").read_text())["results"]
        prefix = f"{only}:"
        {
            "triage": bench_triage,
            "monitoring": bench_monitoring,
            "imaging": bench_imaging,
            "ai": bench_ai,
            "consult": bench_consult,
        }[only]()
        # A group also writes rows outside its prefix (the HL7 parser, alarm burden): the new row replaces
        # the old one of the same name.
        fresh = {r["benchmark"] for r in results}
        results[:0] = [
            r
            for r in previous
            if not r["benchmark"].startswith((prefix, f"{only} ")) and r["benchmark"] not in fresh
        ]
        write(sorted_like(previous), rerun=only)
        return
    bench_password_hash()
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        sqlite = demo_kernel(f"sqlite:///{var / 'bench.db'}", var)
        bench_audit(sqlite, "SQLite")
        bench_http(sqlite, "SQLite")
        bench_outbox(sqlite, "SQLite")
        sqlite.engine.dispose()
        if port_open(POSTGRES_URL, 5432):
            import psycopg

            name = f"tianfu_bench_{uuid.uuid4().hex[:8]}"
            admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                pg = demo_kernel(
                    make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False), var
                )
                bench_audit(pg, "PostgreSQL")
                bench_http(pg, "PostgreSQL")
                bench_outbox(pg, "PostgreSQL")
                pg.engine.dispose()
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print("PostgreSQL not reachable: skipped its benchmarks")
    bench_bus()
    bench_monitoring()
    bench_triage()
    bench_imaging()
    bench_ai()
    bench_consult()
    write([], rerun="")


def sorted_like(previous: list[dict[str, Any]]) -> list[str]:
    return [r["benchmark"] for r in previous]


def write(order: list[str], rerun: str) -> None:
    if order:  # a partial rerun keeps the rows where they were; new rows go last
        position = {name: i for i, name in enumerate(order)}
        results.sort(key=lambda r: position.get(r["benchmark"], len(position)))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    dates = {"date": stamp}
    if rerun:
        last = json.loads((OUT / "results.json").read_text())
        dates = {"date": last["date"], f"{rerun}_rerun": stamp}
    (OUT / "results.json").write_text(
        json.dumps({**dates, "machine": machine, "results": results}, ensure_ascii=False, indent=1) + "\n"
    )
    when = f"Measured {dates['date']}" + (
        f" (the {rerun} rows {stamp}, by `TIANFU_BENCH_ONLY={rerun} make bench`)" if rerun else ""
    )
    lines = [
        f"{when} on {machine} by `make bench`.",
        "",
        "| benchmark | value | unit | note |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {r['benchmark']} | {r['value']:,} | {r['unit']} | {r['note']} |" for r in results]
    table = "\n".join(lines) + "\n"
    (OUT / "results.md").write_text(table)
    readme = OUT.parent / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        readme.write_text(before + start + "\n" + table + rest[rest.index(end) :])
    print(f"wrote {OUT / 'results.md'} and the table in README.md")


if __name__ == "__main__":
    main()
