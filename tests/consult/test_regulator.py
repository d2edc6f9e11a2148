"""The regulator's export (TC-12, SEC-10): its own credentials, minimised content, its own audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tests.consult.test_fhir import _references, run_full_consultation
from tianfu.consult import fhir_binding
from tianfu.consult.demo import seed as seed_consult
from tianfu.core.audit.models import AuditRecord
from tianfu.core.kernel import Kernel
from tianfu.core.security.permissions import ROLE_PERMISSIONS, Permission, Role

EXPORT = "/api/v1/consult/regulator/export"


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def _period() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"since": (now - timedelta(hours=1)).isoformat(), "until": (now + timedelta(hours=1)).isoformat()}


def test_the_regulator_role_holds_the_export_only() -> None:
    assert ROLE_PERMISSIONS[Role.REGULATOR] == frozenset(
        {Permission.CONSULT_REGULATOR_EXPORT, Permission.ACCOUNT_SELF}  # its own password, nothing else
    )
    assert all(
        Permission.CONSULT_REGULATOR_EXPORT not in p
        for r, p in ROLE_PERMISSIONS.items()
        if r != Role.REGULATOR
    )


def test_export_is_minimised_valid_and_audited(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, _ = run_full_consultation(client, db, demo)
    regulator = issue_token(db, "regulator.sc")
    response = client.get(EXPORT, params=_period(), headers=regulator)
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert (bundle["type"], bundle["total"]) == ("searchset", 1)
    for entry in bundle["entry"]:
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
    assert fhir_binding.check(bundle) == []
    found: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        found.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    assert set(found) == {"Task", "Patient", "Provenance", "AuditEvent", "Practitioner", "Organization"}
    task = found["Task"][0]
    assert task["id"] == cid
    assert task["status"] == "completed"
    extensions = {e["url"].rsplit("/", 1)[1]: e for e in task["extension"]}
    opinion = {
        e["url"]: next(v for k, v in e.items() if k.startswith("value"))
        for e in extensions["consult-opinion-summary"]["extension"]
    }
    assert opinion["signed"] is True
    assert opinion["versions"] == 2
    assert opinion["signatureValid"] is True
    consents = {e["url"]: e["valueCode"] for e in extensions["consult-consent-states"]["extension"]}
    assert consents == {"treatment": "active", "patient-privacy": "active"}

    # The patient: a pseudonym, sex and an age band; no name, identifier, birth date or the real id.
    patient = demo.patient("黄玉珍")
    (pseudo,) = found["Patient"]
    assert set(pseudo) == {"resourceType", "id", "identifier", "gender", "extension"}
    assert pseudo["gender"] == patient.gender
    assert task["for"] == {"reference": f"Patient/{pseudo['id']}"}
    text = response.text
    for secret in (
        patient.id,
        patient.name,
        patient.mrn,
        patient.national_id or "-",
        "胸闷",
        "心绞痛",
        "请补充心电图",
    ):
        assert secret not in text, secret
    assert all("network" not in a for e in found["AuditEvent"] for a in e["agent"])
    assert all("telecom" not in p for p in found["Practitioner"])
    assert [p["activity"]["coding"][0]["code"] for p in found["Provenance"]] == [
        "submit",
        "receive",
        "accept",
        "start",
        "complete",
        "record-decision",
    ]
    # Every reference resolves inside the export: nothing points at what the regulator cannot read.
    inside = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    assert set(_references(bundle["entry"])) <= inside
    # The same patient keeps the same pseudonym in the next export (the regulator can follow her).
    again = client.get(EXPORT, params={**_period(), "format": "ndjson"}, headers=regulator)
    assert again.headers["content-type"].startswith("application/fhir+ndjson")
    lines = [json.loads(line) for line in again.text.splitlines()]
    assert [r["id"] for r in lines if r["resourceType"] == "Patient"] == [pseudo["id"]]
    assert again.headers["x-total-count"] == "1"

    # Each export is its own audited action, naming the patient.
    exports = db.scalars(
        select(AuditRecord).where(AuditRecord.action == "consult.regulator.export").order_by(AuditRecord.seq)
    ).all()
    assert len(exports) == 2
    assert exports[0].actor_username == "regulator.sc"
    assert exports[0].detail["count"] == 1
    assert exports[0].detail["consultations"] == [cid]
    assert exports[1].detail["format"] == "ndjson"
    assert exports[0].patient_ids == [patient.id]


def test_paging_and_periods(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    first, _ = run_full_consultation(client, db, demo)
    second, _ = run_full_consultation(client, db, demo)
    regulator = issue_token(db, "regulator.sc")
    page = client.get(EXPORT, params={**_period(), "_count": 1}, headers=regulator).json()
    assert page["total"] == 2
    assert [e["resource"]["id"] for e in page["entry"] if e["resource"]["resourceType"] == "Task"] == [first]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    following = client.get(next_url.replace("http://testserver", ""), headers=regulator).json()
    assert [e["resource"]["id"] for e in following["entry"] if e["resource"]["resourceType"] == "Task"] == [
        second
    ]
    assert not any(link["relation"] == "next" for link in following["link"])
    earlier = datetime.now(UTC) - timedelta(days=30)
    empty = client.get(
        EXPORT,
        params={"since": earlier.isoformat(), "until": (earlier + timedelta(days=1)).isoformat()},
        headers=regulator,
    ).json()
    assert (empty["total"], empty.get("entry", [])) == (0, [])
    backwards = client.get(
        EXPORT, params={"since": _period()["until"], "until": _period()["since"]}, headers=regulator
    )
    assert backwards.status_code == 422
    naive = client.get(EXPORT, params={"since": "2026-01-01T00:00:00"}, headers=regulator)
    assert naive.status_code == 422


def test_the_regulator_reads_nothing_else_and_others_cannot_export(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, _ = run_full_consultation(client, db, demo)
    regulator = issue_token(db, "regulator.sc")
    patient_id = demo.patient("黄玉珍").id
    for path in (
        f"/api/v1/patients/{patient_id}",
        "/api/v1/patients",
        f"/fhir/R4/Patient/{patient_id}",
        f"/fhir/R4/Task/{cid}/$everything",
        f"/api/v1/consult/consultations/{cid}",
        "/api/v1/consult/review/consultations",
        "/api/v1/audit/events",
        "/fhir/R4/Practitioner",
    ):
        assert client.get(path, headers=regulator).status_code == 403, path
    me = client.get("/api/v1/auth/me", headers=regulator).json()
    assert sorted(me["permissions"]) == ["account.self", "consult.regulator_export"]
    for who in ("dr.huang", "consult.zhao", "auditor", "admin", "nurse.wang", "patient.liu"):
        refused = client.get(EXPORT, params=_period(), headers=issue_token(db, who))
        assert refused.status_code == 403, who
        assert refused.headers["content-type"] == "application/problem+json"
    assert client.get(EXPORT, params=_period()).status_code == 401
    denied = db.scalars(
        select(AuditRecord).where(
            AuditRecord.action == "access.denied", AuditRecord.actor_username == "regulator.sc"
        )
    ).all()
    assert len(denied) == 8
