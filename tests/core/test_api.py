"""The JSON API through the ASGI app: tokens, patients, encounters, users, audit, AI outputs."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_access import principal
from tianfu.core.audit.models import AuditRecord
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service as outputs
from tianfu.demo import DEMO_PASSWORD

Login = Callable[[str], dict[str, str]]


def test_token_login_and_me(client: TestClient) -> None:
    response = client.post("/api/v1/auth/token", json={"username": "nurse.wang", "password": DEMO_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["user"]["role"] == "nurse"
    assert "password_hash" not in response.text
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert "patient.read" in me.json()["permissions"]
    assert "user.manage" not in me.json()["permissions"]


def test_wrong_password_is_401_problem(client: TestClient) -> None:
    response = client.post(
        "/api/v1/auth/token", json={"username": "nurse.wang", "password": "nope-nope-nope"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:tianfu:problem:unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_lockout_is_423(client: TestClient, kernel: Kernel) -> None:
    for _ in range(kernel.settings.lockout_threshold - 1):
        assert (
            client.post(
                "/api/v1/auth/token", json={"username": "nurse.li", "password": "bad-password"}
            ).status_code
            == 401
        )
    locked = client.post("/api/v1/auth/token", json={"username": "nurse.li", "password": "bad-password"})
    assert locked.status_code == 423
    assert (
        client.post(
            "/api/v1/auth/token", json={"username": "nurse.li", "password": DEMO_PASSWORD}
        ).status_code
        == 423
    )


def test_logout_revokes_the_token(client: TestClient, token_for: Login) -> None:
    headers = token_for("nurse.wang")
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401


def test_no_token_is_401(client: TestClient) -> None:
    response = client.get("/api/v1/patients")
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_nurse_lists_her_ward_and_cannot_open_another(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    headers = token_for("nurse.wang")
    listing = client.get("/api/v1/patients", headers=headers).json()
    assert {p["name"] for p in listing["items"]} == {"李建国", "王秀英", "刘芳", "张德明"}
    assert all(p["current_encounter"]["ward"]["code"] == "CARD1" for p in listing["items"])
    assert "national_id" not in listing["items"][0]
    other = demo.patient("陈淑华").id
    assert client.get(f"/api/v1/patients/{other}", headers=headers).status_code == 403
    assert client.get("/api/v1/patients/not-a-patient", headers=headers).status_code == 404


def test_search_filters(client: TestClient, token_for: Login, demo: Demo) -> None:
    headers = token_for("dr.chen")
    by_name = client.get("/api/v1/patients", params={"q": "杨"}, headers=headers).json()
    assert [p["name"] for p in by_name["items"]] == ["杨志强"]
    by_ward = client.get(
        "/api/v1/patients", params={"ward_id": demo.ward("EDOBS").id}, headers=headers
    ).json()
    assert [p["name"] for p in by_ward["items"]] == ["周子涵"]
    paged = client.get("/api/v1/patients", params={"limit": 1, "offset": 1}, headers=headers).json()
    assert (paged["total"], len(paged["items"]), paged["offset"]) == (3, 1, 1)


def test_register_admit_transfer_discharge_over_the_api(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    doctor = token_for("dr.zhang")
    created = client.post(
        "/api/v1/patients",
        headers=doctor,
        json={"name": "郑小云", "gender": "female", "birth_date": "1975-05-05", "phone": "13912345678"},
    )
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    admitted = client.post(
        f"/api/v1/patients/{patient_id}/encounters",
        headers=doctor,
        json={
            "ward_id": demo.ward("CARD1").id,
            "bed_id": demo.bed("CARD1-11").id,
            "attending_id": demo.user("dr.zhang").id,
            "reason": "胸闷",
        },
    )
    assert admitted.status_code == 201, admitted.text
    encounter = admitted.json()
    assert encounter["bed"]["code"] == "CARD1-11"
    nurse = token_for("nurse.wang")
    assert client.get(f"/api/v1/patients/{patient_id}", headers=nurse).status_code == 200
    moved = client.post(
        f"/api/v1/encounters/{encounter['id']}/transfer",
        headers=nurse,
        json={"ward_id": demo.ward("CARD1").id, "bed_id": demo.bed("CARD1-12").id},
    )
    assert moved.status_code == 200, moved.text
    occupied = client.post(
        f"/api/v1/patients/{demo.patient('吴海燕').id}/encounters",
        headers=doctor,
        json={"ward_id": demo.ward("CARD1").id, "bed_id": demo.bed("CARD1-12").id},
    )
    assert occupied.status_code == 409
    done = client.post(f"/api/v1/encounters/{encounter['id']}/discharge", headers=nurse)
    assert done.status_code == 200
    assert done.json()["status"] == "finished"
    history = client.get(f"/api/v1/patients/{patient_id}/encounters", headers=doctor).json()
    assert history["total"] == 1


def test_patient_correction_is_audited(client: TestClient, token_for: Login, demo: Demo, db: Session) -> None:
    patient_id = demo.patient("吴海燕").id
    response = client.patch(
        f"/api/v1/patients/{patient_id}", headers=token_for("admin"), json={"address": "成都市武侯区"}
    )
    assert response.status_code == 200
    assert response.json()["address"] == "成都市武侯区"
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "patient.update")).one()
    assert record.actor_username == "admin"
    assert record.patient_ids == [patient_id]


def test_every_patient_read_is_audited_with_its_basis(
    client: TestClient, token_for: Login, demo: Demo, db: Session
) -> None:
    patient_id = demo.patient("刘芳").id
    client.get(f"/api/v1/patients/{patient_id}", headers=token_for("nurse.wang"))
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "patient.read")).one()
    assert (record.actor_username, record.purpose, record.detail["basis"]) == ("nurse.wang", "TREAT", "ward")


def test_break_glass_over_the_api(client: TestClient, token_for: Login, demo: Demo) -> None:
    headers = token_for("nurse.wang")
    patient_id = demo.patient("陈淑华").id
    assert client.get(f"/api/v1/patients/{patient_id}", headers=headers).status_code == 403
    short = client.post(f"/api/v1/patients/{patient_id}/break-glass", headers=headers, json={"reason": "急"})
    assert short.status_code == 422
    granted = client.post(
        f"/api/v1/patients/{patient_id}/break-glass",
        headers=headers,
        json={"reason": "患者呼吸骤停，需立即查看既往史"},
    )
    assert granted.status_code == 201
    assert client.get(f"/api/v1/patients/{patient_id}", headers=headers).status_code == 200


def test_admin_manages_users_of_her_institution(client: TestClient, token_for: Login, demo: Demo) -> None:
    admin = token_for("admin")
    created = client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": "nurse.new",
            "display_name": "新护士",
            "role": "nurse",
            "password": "Welcome-2026-ward",
            "ward_ids": [demo.ward("ICU").id],
        },
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    assert created.json()["ward_ids"] == [demo.ward("ICU").id]
    weak = client.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "nurse.weak", "display_name": "x", "role": "nurse", "password": "password123"},
    )
    assert weak.status_code == 422
    changed = client.patch(f"/api/v1/users/{user_id}", headers=admin, json={"role": "physician"})
    assert changed.json()["role"] == "physician"
    assert (
        client.patch(
            f"/api/v1/users/{demo.user('admin').id}", headers=admin, json={"role": "nurse"}
        ).status_code
        == 422
    )
    foreign = demo.user("dr.huang").id
    assert client.get(f"/api/v1/users/{foreign}", headers=admin).status_code == 403
    listing = client.get("/api/v1/users", headers=admin).json()
    assert "dr.huang" not in {u["username"] for u in listing}
    assert (
        client.post(
            "/api/v1/users",
            headers=token_for("nurse.wang"),
            json={"username": "x.y", "display_name": "x", "role": "admin", "password": "Welcome-2026-ward"},
        ).status_code
        == 403
    )


def test_reset_and_change_password(client: TestClient, token_for: Login, demo: Demo) -> None:
    user_id = demo.user("nurse.li").id
    nurse = token_for("nurse.li")
    assert (
        client.post(
            f"/api/v1/users/{user_id}/password",
            headers=token_for("admin"),
            json={"new_password": "Fresh-start-2026"},
        ).status_code
        == 204
    )
    assert client.get("/api/v1/auth/me", headers=nurse).status_code == 401  # sessions ended
    token = client.post(
        "/api/v1/auth/token", json={"username": "nurse.li", "password": "Fresh-start-2026"}
    ).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    wrong = client.post(
        "/api/v1/auth/password",
        headers=headers,
        json={"current_password": "not-it-at-all", "new_password": "Another-one-2026"},
    )
    assert wrong.status_code == 422


def test_auditor_reads_the_trail_and_verifies_it(client: TestClient, token_for: Login, demo: Demo) -> None:
    client.get(f"/api/v1/patients/{demo.patient('刘芳').id}", headers=token_for("nurse.wang"))
    auditor = token_for("auditor")
    events = client.get(
        "/api/v1/audit/events", params={"username": "nurse.wang", "action": "patient."}, headers=auditor
    )
    assert events.status_code == 200
    assert events.json()["items"][0]["action"] == "patient.read"
    verify = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert verify["ok"] is True
    log = client.get(f"/api/v1/audit/patients/{demo.patient('刘芳').id}", headers=auditor).json()
    assert log["items"][0]["actor_display"] == "王丽"
    assert client.get("/api/v1/audit/events", headers=token_for("admin")).status_code == 403


def test_patient_sees_who_accessed_her_record(client: TestClient, token_for: Login, demo: Demo) -> None:
    client.get(f"/api/v1/patients/{demo.patient('刘芳').id}", headers=token_for("dr.zhang"))
    me = token_for("patient.liu")
    log = client.get("/api/v1/me/access-log", headers=me).json()
    assert log["items"][0]["actor_display"] == "张伟"
    assert log["items"][0]["purpose"] == "TREAT"
    own = client.get("/api/v1/patients", headers=me).json()
    assert [p["name"] for p in own["items"]] == ["刘芳"]


def test_ai_outputs_and_feedback(
    client: TestClient, token_for: Login, kernel: Kernel, db: Session, demo: Demo
) -> None:
    row = outputs.record_output(
        db,
        kernel.audit,
        actor=principal(db, "dr.zhang").actor,
        module="monitoring",
        task="deterioration",
        model_name="demo-model",
        model_version="1",
        input_ref="x",
        output={"p": 0.9},
        label="high",
        score=0.9,
        patient_id=demo.patient("李建国").id,
    )
    db.commit()
    doctor = token_for("dr.zhang")
    listing = client.get("/api/v1/ai/outputs", headers=doctor).json()
    assert [o["id"] for o in listing["items"]] == [row.id]
    assert client.get("/api/v1/ai/outputs", headers=token_for("nurse.li")).json()["total"] == 0
    assert client.get(f"/api/v1/ai/outputs/{row.id}", headers=token_for("nurse.li")).status_code == 403
    feedback = client.post(
        f"/api/v1/ai/outputs/{row.id}/feedback",
        headers=doctor,
        json={"verdict": "disagree", "corrected_label": "medium"},
    )
    assert feedback.status_code == 201
    usage = client.get("/api/v1/ai/usage", headers=token_for("admin")).json()
    assert usage == [
        {"model_name": "demo-model", "model_version": "1", "outputs": 1, "reviewed": 1, "agreement_rate": 0.0}
    ]


def test_directory(client: TestClient, token_for: Login, demo: Demo) -> None:
    headers = token_for("nurse.wang")
    orgs = client.get("/api/v1/organizations", headers=headers).json()
    assert {o["code"] for o in orgs} == {"TFRM", "JJSQ"}
    beds = client.get("/api/v1/locations", params={"parent_id": demo.ward("ICU").id}, headers=headers).json()
    assert len(beds) == 6
    census = client.get("/api/v1/wards/census", headers=headers).json()
    assert {c["ward"]["code"]: c["occupied"] for c in census}["CARD1"] == 4
    doctors = client.get("/api/v1/practitioners", params={"role": "physician"}, headers=headers).json()
    assert {d["username"] for d in doctors} == {"dr.zhang", "dr.chen", "dr.huang"}
    assert client.get("/api/v1/organizations", headers=token_for("patient.liu")).status_code == 403


def test_admin_cannot_give_another_institutions_patient_an_account(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    response = client.post(
        "/api/v1/users",
        headers=token_for("admin.jj"),
        json={
            "username": "impostor",
            "display_name": "x",
            "role": "patient",
            "password": "Welcome-2026-ward",
            "patient_id": demo.patient("李建国").id,
        },
    )
    assert response.status_code == 422
    assert "another institution" in response.json()["detail"]


def test_null_in_a_patient_correction_is_422(client: TestClient, token_for: Login, demo: Demo) -> None:
    patient_id = demo.patient("吴海燕").id
    for field in ("name", "phone", "national_id", "gender"):
        response = client.patch(
            f"/api/v1/patients/{patient_id}", headers=token_for("admin"), json={field: None}
        )
        assert response.status_code == 422, (field, response.text)
    cleared = client.patch(
        f"/api/v1/patients/{patient_id}", headers=token_for("admin"), json={"birth_date": None}
    )
    assert cleared.status_code == 200
    assert cleared.json()["birth_date"] is None


def test_out_of_range_dates_and_long_ids_are_422(client: TestClient, token_for: Login) -> None:
    auditor = token_for("auditor")
    for params in ({"since": "0001-01-01T00:00:00+05:00"}, {"until": "9999-12-31T23:00:00-05:00"}):
        assert client.get("/api/v1/audit/events", params=params, headers=auditor).status_code == 422
    assert (
        client.get(
            "/fhir/R4/AuditEvent", params={"date": "ge0001-01-01T00:00:00+05:00"}, headers=auditor
        ).status_code
        == 422
    )
    assert client.get("/fhir/R4/AuditEvent", params={"patient": "x" * 40}, headers=auditor).status_code == 422
    assert client.get("/api/v1/audit/patients/" + "x" * 40, headers=auditor).status_code == 422


def test_double_break_glass_then_read_is_not_a_server_error(
    client: TestClient, token_for: Login, demo: Demo
) -> None:
    headers = token_for("dr.zhang")
    patient_id = demo.patient("黄玉珍").id
    for _ in range(2):
        response = client.post(
            f"/api/v1/patients/{patient_id}/break-glass",
            headers=headers,
            json={"reason": "转诊患者病情危重，需立即查看"},
        )
        assert response.status_code == 201
    assert client.get(f"/fhir/R4/Patient/{patient_id}", headers=headers).status_code == 200
