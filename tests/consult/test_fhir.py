"""A whole consultation as FHIR: it parses, its bindings hold, references resolve, signatures verify."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo, issue_token
from tests.consult.test_api import API, _act, _consent, _draft
from tianfu.consult import fhir_binding
from tianfu.consult.demo import seed as seed_consult
from tianfu.consult.fhir import verify_bundle_signatures
from tianfu.consult.tables import SignerKey
from tianfu.core.audit.models import AuditRecord
from tianfu.core.kernel import Kernel

FHIR = "/fhir/R4"
KERNEL_TYPES = {"Patient", "Practitioner", "Organization"}


@pytest.fixture
def network(kernel: Kernel) -> None:
    seed_consult(kernel)


def run_full_consultation(client: TestClient, db: Session, demo: Demo) -> tuple[str, dict[str, str]]:
    """draft → consents → requested → received → accepted → in-progress → messages → signed → decision →
    amendment; returns the id and the inviting physician's headers."""
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    for action, who in (("submit", huang), ("receive", zhao), ("accept", zhao), ("start", huang)):
        assert _act(client, cid, action, who).status_code == 200
    first = client.post(f"{API}/consultations/{cid}/messages", json={"body": "请补充心电图"}, headers=zhao)
    reply = {"body": "已上传", "in_response_to_id": first.json()["id"]}
    assert client.post(f"{API}/consultations/{cid}/messages", json=reply, headers=huang).status_code == 201
    opinion = {
        "opinion": "考虑稳定型心绞痛，建议行冠脉CTA",
        "diagnosis": "稳定型心绞痛",
        "signing_pin": "246810",
        "signing_pin_confirmation": "246810",
    }
    assert client.post(f"{API}/consultations/{cid}/opinion", json=opinion, headers=zhao).status_code == 201
    decided = client.post(f"{API}/consultations/{cid}/decision", json={"decision": "转诊"}, headers=huang)
    assert decided.status_code == 200
    amended = client.post(
        f"{API}/consultations/{cid}/opinion/amendments",
        json={**opinion, "recommendations": "加做运动负荷试验", "reason": "补充建议"},
        headers=zhao,
    )
    assert amended.status_code == 201
    return cid, huang


def _by_type(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        found.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return found


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def test_everything_bundle_of_a_full_consultation(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = run_full_consultation(client, db, demo)
    response = client.get(f"{FHIR}/Task/{cid}/$everything", headers=huang)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["type"] == "collection"
    # Every resource parses with the R4B models, and every required binding in use holds.
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert fhir_binding.check(bundle) == []

    found = _by_type(bundle)
    task = found["Task"][0]
    assert task["status"] == "completed"
    assert task["businessStatus"]["text"] == "邀请方已采纳/处理"
    assert task["businessStatus"]["coding"][0]["code"] == "decided"
    assert task["basedOn"] == [{"reference": f"ServiceRequest/{cid}"}]
    assert task["owner"] == {"reference": f"Practitioner/{demo.user('consult.zhao').id}"}
    assert "start" in task["executionPeriod"]
    assert "end" in task["executionPeriod"]
    reports = found["DiagnosticReport"]
    assert [r["status"] for r in reports] == ["final", "amended"]
    assert task["output"][0]["valueReference"] == {"reference": f"DiagnosticReport/{reports[1]['id']}"}
    assert reports[0]["resultsInterpreter"] == [{"reference": f"Practitioner/{demo.user('consult.zhao').id}"}]
    order = found["ServiceRequest"][0]
    assert (order["intent"], order["status"], order["priority"]) == ("order", "completed", "urgent")
    assert order["requester"] == {"reference": f"Practitioner/{demo.user('dr.huang').id}"}
    assert order["reasonCode"][0]["text"] == "血糖控制不佳伴胸闷"
    assert {c["scope"]["coding"][0]["code"] for c in found["Consent"]} == {"treatment", "patient-privacy"}
    assert all(c["status"] == "active" for c in found["Consent"])
    messages = found["Communication"]
    assert [m["payload"][0]["contentString"] for m in messages] == ["请补充心电图", "已上传"]
    assert messages[1]["inResponseTo"] == [{"reference": f"Communication/{messages[0]['id']}"}]
    signatures = [p for p in found["Provenance"] if p.get("signature")]
    assert len(signatures) == 2
    assert signatures[1]["entity"] == [
        {"role": "revision", "what": {"reference": f"DiagnosticReport/{reports[0]['id']}"}}
    ]
    transitions = [p["activity"]["coding"][0]["code"] for p in found["Provenance"] if not p.get("signature")]
    assert transitions == ["submit", "receive", "accept", "start", "complete", "record-decision"]
    actions = {e["subtype"][0]["code"] for e in found["AuditEvent"]}
    assert {"consult.create", "consult.submit", "consult.opinion.sign", "consult.opinion.amend"} <= actions
    assert all(
        any(x["what"].get("reference") == f"Task/{cid}" for x in e["entity"]) for e in found["AuditEvent"]
    )

    # References resolve inside the bundle, or name a kernel resource served at /fhir/R4.
    inside = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    for entry in bundle["entry"]:
        for reference in _references(entry["resource"]):
            if reference.startswith("#"):
                contained = {c["id"] for c in entry["resource"].get("contained", [])}
                assert reference[1:] in contained, reference
            elif reference not in inside:
                assert reference.split("/")[0] == "Patient", reference
                assert client.get(f"{FHIR}/{reference}", headers=huang).status_code == 200

    # The signatures verify from the bundle alone, against the keys registered for the signers.
    trusted = {k.user_id: k.fingerprint for k in db.scalars(select(SignerKey))}
    assert verify_bundle_signatures(bundle, trusted=trusted) == {p["id"]: [] for p in signatures}


def test_tampered_bundle_is_detected(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    cid, huang = run_full_consultation(client, db, demo)
    bundle = client.get(f"{FHIR}/Task/{cid}/$everything", headers=huang).json()
    trusted = {k.user_id: k.fingerprint for k in db.scalars(select(SignerKey))}

    forged = copy.deepcopy(bundle)
    report = next(
        e["resource"] for e in forged["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    content = json.loads(base64.b64decode(report["presentedForm"][0]["data"]))
    content["opinion"] = "建议手术"
    report["presentedForm"][0]["data"] = base64.b64encode(json.dumps(content).encode()).decode()
    problems = verify_bundle_signatures(forged, trusted=trusted)
    assert any("content_changed" in p for p in problems[f"sig-{report['id']}"]), problems

    # A bundle signed with another key does not pass against the registered fingerprint.
    assert all(
        any("key" in p for p in found)
        for found in verify_bundle_signatures(bundle, trusted=dict.fromkeys(trusted, "0" * 64)).values()
    )

    bogus = copy.deepcopy(bundle)
    task = next(e["resource"] for e in bogus["entry"] if e["resource"]["resourceType"] == "Task")
    task["status"] = "bogus-status"
    get_fhir_model_class("Task").model_validate(task)  # the models accept it …
    assert fhir_binding.check(bogus) == [
        "Bundle.entry[1].resource.status: 'bogus-status' is not a valid code for Task.status"
    ]


def test_binding_checker_on_single_resources() -> None:
    assert fhir_binding.check({"resourceType": "Consent", "status": "withdrawn"}) != []
    assert fhir_binding.check({"resourceType": "AuditEvent", "action": "X", "outcome": "4"}) == [
        "AuditEvent.action: 'X' is not a valid code for AuditEvent.action"
    ]
    scope = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "nope"}]}
    assert fhir_binding.check({"resourceType": "Consent", "status": "active", "scope": scope}) != []
    contained = {
        "resourceType": "Task",
        "status": "draft",
        "contained": [{"resourceType": "Consent", "status": "x"}],
    }
    assert fhir_binding.check(contained) == [
        "Task.contained[0].status: 'x' is not a valid code for Consent.status"
    ]
    signature = {"resourceType": "Provenance", "signature": [{"sigFormat": "not a mime"}]}
    assert fhir_binding.check(signature) != []


def test_task_and_service_request_reads(client: TestClient, db: Session, demo: Demo, network: None) -> None:
    cid, huang = _draft(client, db, demo)
    task = client.get(f"{FHIR}/Task/{cid}", headers=huang)
    assert task.status_code == 200
    assert (task.json()["status"], task.json()["businessStatus"]["text"]) == ("draft", "草稿")
    order = client.get(f"{FHIR}/ServiceRequest/{cid}", headers=huang).json()
    assert order["status"] == "draft"
    assert order["supportingInfo"][0] == {"reference": "#case-summary", "display": "病历摘要"}
    assert fhir_binding.check(order) == []
    assert fhir_binding.check(task.json()) == []


def test_access_participants_and_audited_auditors(
    client: TestClient, db: Session, demo: Demo, network: None
) -> None:
    cid, huang = _draft(client, db, demo)
    zhao = issue_token(db, "consult.zhao")
    # A draft is the inviting physician's alone; outsiders with the permission get 404, others 403.
    for who in ("consult.zhao", "dr.zhang"):
        refused = client.get(f"{FHIR}/Task/{cid}/$everything", headers=issue_token(db, who))
        assert refused.status_code == 404
        assert refused.json()["resourceType"] == "OperationOutcome"
    for who in ("nurse.wang", "rad.liu", "admin", "patient.liu", "regulator.sc"):
        refused = client.get(f"{FHIR}/Task/{cid}", headers=issue_token(db, who))
        assert refused.status_code == 403, who
        assert refused.json()["resourceType"] == "OperationOutcome"
    _consent(client, cid, huang, "treatment")
    _consent(client, cid, huang, "patient-privacy")
    assert _act(client, cid, "submit", huang).status_code == 200
    assert client.get(f"{FHIR}/Task/{cid}/$everything", headers=zhao).status_code == 200
    auditor = client.get(f"{FHIR}/Task/{cid}/$everything", headers=issue_token(db, "auditor"))
    assert auditor.status_code == 200
    assert fhir_binding.check(auditor.json()) == []
    actions = [
        (a, u)
        for a, u in db.execute(
            select(AuditRecord.action, AuditRecord.actor_username).where(AuditRecord.resource_id == cid)
        )
    ]
    assert ("consult.review.fhir", "auditor") in actions
    assert ("consult.fhir.read", "consult.zhao") in actions
    missing = client.get(
        f"{FHIR}/Task/00000000-0000-4000-8000-000000000000", headers=issue_token(db, "auditor")
    )
    assert missing.status_code == 404
