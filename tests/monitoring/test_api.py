"""Monitoring's API, FHIR Observations and pages through the app, with the pipeline running."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tianfu.app import create_app
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings
from tianfu.monitoring.ingest.report import DeviceReport, Measurement
from tianfu.monitoring.pipeline import Pipeline
from tianfu.monitoring.tables import AlarmEpisode, MonitoringDevice, NursingObservation, VitalSample

Login = Callable[[str], dict[str, str]]


@pytest.fixture
def running(kernel: Kernel, settings: Settings, demo: Demo, db: Session) -> Iterator[TestClient]:
    """The app with its monitoring pipeline, and a monitor at 李建国's bed."""
    bed = demo.bed("CARD1-01")
    db.add(
        MonitoringDevice(
            identifier="MON-1", label="monitor 1", bed_id=bed.id, organization_id=bed.organization_id
        )
    )
    db.commit()
    with TestClient(create_app(settings, kernel=kernel)) as client:
        yield client


def pipeline_of(kernel: Kernel) -> Pipeline:
    pipeline: Pipeline = kernel.extensions["monitoring.pipeline"]
    return pipeline


def feed(
    client: TestClient,
    kernel: Kernel,
    values: dict[str, float],
    seconds: int = 1,
    start: datetime | None = None,
) -> None:
    """Send reports through the pipeline as the ingest would, and wait until they are committed."""
    pipeline = pipeline_of(kernel)
    begin = start or datetime.now(UTC) - timedelta(seconds=seconds)

    async def run() -> None:
        for second in range(seconds):
            at = begin + timedelta(seconds=second)
            await pipeline.process(
                DeviceReport(
                    "MON-1",
                    "test",
                    f"m{at.timestamp()}",
                    at,
                    [Measurement(p, v, at) for p, v in values.items()],
                )
            )
        await pipeline.commit()

    client.portal.call(run)  # type: ignore[union-attr]


NORMAL = {"heart_rate": 72, "spo2": 97, "respiratory_rate": 16, "systolic_bp": 124, "temperature": 36.8}


def test_news2_endpoint(client: TestClient, token_for: Login) -> None:
    body = {
        "respiratory_rate": 21,
        "spo2": 95,
        "on_oxygen": False,
        "systolic_bp": 110,
        "pulse": 91,
        "consciousness": "A",
        "temperature": 38.1,
    }
    result = client.post("/api/v1/monitoring/news2", json=body, headers=token_for("nurse.wang")).json()
    assert (result["total"], result["band"]) == (6, "medium")
    assert result["subscores"]["respiratory_rate"] == 2
    assert not result["partial"]
    bad = client.post(
        "/api/v1/monitoring/news2", json=body | {"consciousness": "X"}, headers=token_for("nurse.wang")
    )
    assert bad.status_code == 422
    assert client.post("/api/v1/monitoring/news2", json=body, headers=token_for("admin")).status_code == 403


def test_ward_view_is_for_the_wards_staff(
    running: TestClient, kernel: Kernel, token_for: Login, demo: Demo
) -> None:
    feed(running, kernel, NORMAL)
    ward = demo.ward("CARD1").id
    beds = running.get(f"/api/v1/monitoring/wards/{ward}/live", headers=token_for("nurse.wang")).json()
    assert [b["patient"]["name"] for b in beds] == ["李建国"]
    assert (
        running.get(f"/api/v1/monitoring/wards/{ward}/live", headers=token_for("nurse.li")).status_code == 403
    )
    assert (
        running.get(f"/api/v1/monitoring/wards/{ward}/live", headers=token_for("auditor")).status_code == 403
    )


def test_patient_vitals_and_care_relationship(
    running: TestClient, kernel: Kernel, token_for: Login, demo: Demo
) -> None:
    feed(running, kernel, NORMAL)
    patient = demo.patient("李建国").id
    rows = running.get(f"/api/v1/monitoring/patients/{patient}/vitals", headers=token_for("dr.zhang")).json()
    assert rows[-1]["heart_rate"] == 72
    assert (
        running.get(
            f"/api/v1/monitoring/patients/{patient}/vitals", headers=token_for("nurse.li")
        ).status_code
        == 403
    )


def test_alarm_acknowledged_through_the_api(
    running: TestClient, kernel: Kernel, token_for: Login, demo: Demo, db: Session
) -> None:
    feed(running, kernel, NORMAL | {"spo2": 84}, seconds=30)
    episode = db.scalars(
        select(AlarmEpisode).where(AlarmEpisode.condition == "limit:spo2_low_critical")
    ).one()
    db.commit()
    patient = demo.patient("李建国").id
    assert (
        running.post(
            f"/api/v1/monitoring/alarms/{episode.id}/acknowledge", headers=token_for("nurse.li")
        ).status_code
        == 403
    )  # another ward's nurse
    response = running.post(
        f"/api/v1/monitoring/alarms/{episode.id}/acknowledge", headers=token_for("nurse.wang")
    )
    assert response.status_code == 202
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        history = running.get(
            f"/api/v1/monitoring/patients/{patient}/alarms", headers=token_for("nurse.wang")
        ).json()
        state = next(a for a in history if a["id"] == episode.id)
        if state["state"] == "acknowledged":
            break
        time.sleep(0.1)
    assert state["acknowledged_by_id"] == demo.user("nurse.wang").id
    assert [e["event"] for e in state["history"]][:1] == ["raised"]


def test_charting_feeds_news2(
    running: TestClient, kernel: Kernel, token_for: Login, demo: Demo, db: Session
) -> None:
    patient = demo.patient("李建国").id
    for kind, value in (("consciousness", "V"), ("oxygen", "oxygen")):
        response = running.post(
            f"/api/v1/monitoring/patients/{patient}/observations",
            json={"kind": kind, "value": value},
            headers=token_for("nurse.wang"),
        )
        assert response.status_code == 201
    assert (
        running.post(
            f"/api/v1/monitoring/patients/{patient}/observations",
            json={"kind": "consciousness", "value": "Z"},
            headers=token_for("nurse.wang"),
        ).status_code
        == 422
    )
    assert db.scalars(select(NursingObservation).where(NursingObservation.patient_id == patient)).all()
    db.commit()
    running.portal.call(kernel.outbox.flush)  # type: ignore[union-attr]
    feed(running, kernel, NORMAL)
    bed = pipeline_of(kernel).beds[demo.bed("CARD1-01").id]
    assert bed.news2 is not None
    assert bed.news2.subscores["consciousness"] == 3
    assert bed.news2.subscores["on_oxygen"] == 2


def test_scale_2_needs_a_physician(running: TestClient, token_for: Login, demo: Demo) -> None:
    patient = demo.patient("李建国").id
    assert (
        running.put(
            f"/api/v1/monitoring/patients/{patient}/profile",
            json={"spo2_scale": 2},
            headers=token_for("nurse.wang"),
        ).status_code
        == 403
    )
    ordered = running.put(
        f"/api/v1/monitoring/patients/{patient}/profile",
        json={"spo2_scale": 2},
        headers=token_for("dr.zhang"),
    )
    assert ordered.status_code == 200
    assert ordered.json()["spo2_scale"] == 2


def test_devices_are_registered_and_placed(running: TestClient, token_for: Login, demo: Demo) -> None:
    nurse = token_for("nurse.wang")
    created = running.post(
        "/api/v1/monitoring/devices",
        json={"identifier": "00A0C9FFFE12AB34", "label": "监护仪 3", "bed_id": demo.bed("CARD1-03").id},
        headers=nurse,
    )
    assert created.status_code == 201, created.text
    taken = running.post(
        "/api/v1/monitoring/devices",
        json={"identifier": "OTHER", "bed_id": demo.bed("CARD1-03").id},
        headers=nurse,
    )
    assert taken.status_code == 409
    moved = running.patch(
        f"/api/v1/monitoring/devices/{created.json()['id']}", json={"bed_id": None}, headers=nurse
    )
    assert moved.json()["bed_id"] is None
    assert running.get("/api/v1/monitoring/devices", headers=token_for("auditor")).status_code == 403


def _observation(patient: str, code: str, value: float, unit: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": datetime.now(UTC).isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def test_fhir_observations_in_and_out(
    running: TestClient, kernel: Kernel, token_for: Login, demo: Demo, db: Session
) -> None:
    patient = demo.patient("李建国").id
    nurse = token_for("nurse.wang")
    single = running.post(
        "/fhir/R4/Observation", json=_observation(patient, "8867-4", 88, "/min"), headers=nurse
    )
    assert single.status_code == 201, single.text
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _observation(patient, "9279-1", 18, "/min")},
            {"resource": _observation(patient, "8310-5", 100.4, "[degF]")},
        ],
    }
    answer = running.post("/fhir/R4", json=bundle, headers=nurse)
    assert answer.json()["type"] == "transaction-response"
    assert len(answer.json()["entry"]) == 2
    running.portal.call(kernel.outbox.flush)  # type: ignore[union-attr]

    def stored() -> list[VitalSample]:
        with kernel.sessions() as session:
            return list(session.scalars(select(VitalSample).where(VitalSample.patient_id == patient)))

    deadline = time.monotonic() + 10
    while not stored() and time.monotonic() < deadline:
        running.portal.call(pipeline_of(kernel).commit)  # type: ignore[union-attr]
        time.sleep(0.1)
    latest = pipeline_of(kernel).beds[demo.bed("CARD1-01").id].latest
    assert latest["heart_rate"][0] == 88
    assert latest["temperature"][0] == pytest.approx(38.0)
    search = running.get(
        "/fhir/R4/Observation", params={"patient": f"Patient/{patient}", "code": "8867-4"}, headers=nurse
    ).json()
    assert search["resourceType"] == "Bundle"
    assert search["entry"][0]["resource"]["valueQuantity"]["value"] == 88
    wrong = _observation(patient, "12345-6", 1, "/min")
    refused = running.post("/fhir/R4/Observation", json=wrong, headers=nurse)
    assert refused.status_code == 422
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert (
        running.post(
            "/fhir/R4/Observation",
            json=_observation(demo.patient("陈淑华").id, "8867-4", 80, "/min"),
            headers=nurse,
        ).status_code
        == 403
    )


def test_pages_render(running: TestClient, kernel: Kernel, demo: Demo) -> None:
    from tests.web.test_pages import HTML, sign_in

    feed(running, kernel, NORMAL | {"spo2": 84}, seconds=20)
    sign_in(running, "nurse.wang")
    home = running.get("/monitoring", headers=HTML)
    assert "心内科一病区" in home.text
    station = running.get(f"/monitoring/wards/{demo.ward('CARD1').id}", headers=HTML)
    assert station.status_code == 200
    assert "中央监护站" in station.text
    states = json.loads(station.text.split('id="initial-states">')[1].split("</script>")[0])
    assert any(s["patient"] and s["patient"]["name"] == "李建国" for s in states.values())
    patient = running.get(f"/monitoring/patients/{demo.patient('李建国').id}", headers=HTML)
    assert "报警历史" in patient.text
    assert "limit:spo2_low" in patient.text
    record = running.get(f"/patients/{demo.patient('李建国').id}", headers=HTML)
    assert "生命体征" in record.text  # the module's panel on the patient page
    assert running.get(f"/monitoring/wards/{demo.ward('RESP').id}", headers=HTML).status_code == 403
    running.cookies.clear()
    sign_in(running, "admin")
    assert "监护仪" in running.get("/monitoring/devices", headers=HTML).text


def test_ward_stream_sends_current_states(
    running: TestClient, kernel: Kernel, token_for: Login, demo: Demo
) -> None:
    feed(running, kernel, NORMAL)
    ward = demo.ward("CARD1").id
    live = kernel.extensions["monitoring.live"]

    async def first_event() -> str:
        stream = live.stream(ward)
        try:
            return await asyncio.wait_for(stream.__anext__(), timeout=5)
        finally:
            await stream.aclose()

    message = running.portal.call(first_event)  # type: ignore[union-attr]
    assert message.startswith("data: ")
    assert json.loads(message[6:])["patient"]["name"] == "李建国"
    denied = running.get(f"/api/v1/monitoring/wards/{ward}/stream", headers=token_for("nurse.li"))
    assert denied.status_code == 403


PCD01 = (
    "MSH|^~\\&|MONITOR^MON-1^EUI-64|ICU|TIANFU|T|{stamp}||ORU^R01^ORU_R01|{control}|P|2.6\r"
    "OBR|1|{control}|{control}|182777000^monitoring of patient^SCT|||{stamp}\r"
    "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|88|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||{stamp}\r"
    "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|95|262688^MDC_DIM_PERCENT^MDC|||||R|||{stamp}\r"
)


def _mllp_exchange(port: int, message: str) -> str:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"\x0b" + message.encode() + b"\x1c\x0d")
        answer = b""
        while not answer.endswith(b"\x1c\x0d"):
            answer += connection.recv(4096)
    return answer[1:-2].decode()


@pytest.mark.parametrize("hl7_processes", [0, 1], ids=["in-process", "listener-process"])
def test_a_monitor_over_mllp_reaches_the_central_station_and_bad_messages_the_dead_letters(
    hl7_processes: int,
    kernel: Kernel,
    settings: Settings,
    demo: Demo,
    db: Session,
    token_for: Login,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole embedded path as `tianfu serve` runs it: MLLP listener (in the server, or in a child process
    with TIANFU_HL7_PROCESSES) → bus → pipeline → live ward view."""
    import socket

    from tianfu.monitoring.settings import get_monitoring_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("TIANFU_HL7_PORT", str(port))
    monkeypatch.setenv("TIANFU_DEMO_FEED", "false")
    monkeypatch.setenv("TIANFU_HL7_PROCESSES", str(hl7_processes))
    get_monitoring_settings.cache_clear()
    bed = demo.bed("CARD1-01")
    db.add(
        MonitoringDevice(
            identifier="MON-1", label="monitor 1", bed_id=bed.id, organization_id=bed.organization_id
        )
    )
    db.commit()
    try:
        with TestClient(create_app(settings, kernel=kernel)) as client:
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f")[:-3] + "+0000"
            answer = _mllp_exchange(port, PCD01.format(stamp=stamp, control="C1"))
            assert "MSA|AA|C1" in answer
            ward = demo.ward("CARD1").id
            deadline = time.monotonic() + 10
            beds: list[dict] = []
            while time.monotonic() < deadline and not beds:
                beds = client.get(
                    f"/api/v1/monitoring/wards/{ward}/live", headers=token_for("nurse.wang")
                ).json()
                time.sleep(0.05)
            assert beds[0]["vitals"]["heart_rate"][0] == 88
            assert beds[0]["patient"]["name"] == "李建国"

            refused = _mllp_exchange(port, "MSH|^~\\&|MONITOR|ICU|TIANFU|T|20261127||ADT^A01|C2|P|2.6\r")
            assert "MSA|AR|C2" in refused
            assert "ERR|" in refused
            deadline = time.monotonic() + 10
            kept = False
            while time.monotonic() < deadline and not kept:  # a listener process relays it to the server
                letters = client.get("/api/v1/dead-letters", headers=token_for("admin")).json()["items"]
                kept = any(
                    letter["source"] == "hl7-mllp" and "ADT^A01" in letter["reason"] for letter in letters
                )
                time.sleep(0.05)
            assert kept
    finally:
        get_monitoring_settings.cache_clear()
