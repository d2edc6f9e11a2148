"""Pages through the ASGI app: sign-in, the nurse's ward, forms with CSRF tokens, admin and audit pages."""

from __future__ import annotations

import re

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tianfu.app import create_app
from tianfu.core.audit.models import AuditRecord
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings
from tianfu.demo import DEMO_PASSWORD

HTML = {"accept": "text/html"}


def sign_in(client: TestClient, username: str, password: str = DEMO_PASSWORD) -> object:
    page = client.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return client.post(
        "/login",
        data={"username": username, "password": password, "login_csrf": token, "next": "/"},
        follow_redirects=False,
    )


def csrf(client: TestClient, path: str = "/") -> str:
    page = client.get(path, headers=HTML)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def test_login_page_is_chinese_by_default_and_english_on_request(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text
    assert "登录" in page.text
    switched = client.get("/lang/en?next=/login", follow_redirects=False)
    assert switched.status_code == 303
    assert switched.headers["location"] == "/login"
    assert "Sign in" in client.get("/login").text


def test_sign_in_sets_an_http_only_session_cookie(client: TestClient) -> None:
    response = sign_in(client, "nurse.wang")
    assert response.status_code == 303  # type: ignore[attr-defined]
    cookie = response.headers["set-cookie"]  # type: ignore[attr-defined]
    assert "tianfu_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    home = client.get("/", headers=HTML)
    assert "王丽，您好" in home.text
    assert "心内科一病区" in home.text


def test_wrong_password_shows_a_message(client: TestClient) -> None:
    response = sign_in(client, "nurse.wang", "wrong-password")
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "用户名或密码错误" in response.text  # type: ignore[attr-defined]


def test_login_without_the_form_token_is_refused(client: TestClient) -> None:
    response = client.post("/login", data={"username": "nurse.wang", "password": DEMO_PASSWORD})
    assert response.status_code == 400
    assert "tianfu_session" not in response.headers.get("set-cookie", "")


def test_lockout_message(client: TestClient, kernel: Kernel) -> None:
    for _ in range(kernel.settings.lockout_threshold):
        last = sign_in(client, "nurse.li", "wrong-password")
    assert last.status_code == 423  # type: ignore[attr-defined]
    assert "账号已锁定" in last.text  # type: ignore[attr-defined]


def test_pages_redirect_to_login_when_signed_out(client: TestClient) -> None:
    response = client.get("/patients?ward=x", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/patients%3Fward%3Dx"


def test_nurse_sees_her_ward_but_not_another(client: TestClient, demo: Demo) -> None:
    sign_in(client, "nurse.wang")
    listing = client.get("/patients", headers=HTML)
    for name in ("李建国", "王秀英", "刘芳", "张德明"):
        assert name in listing.text
    for name in ("陈淑华", "杨志强", "黄玉珍"):
        assert name not in listing.text
    mine = client.get(f"/patients/{demo.patient('刘芳').id}", headers=HTML)
    assert mine.status_code == 200
    assert "心房颤动" in mine.text
    other = client.get(f"/patients/{demo.patient('陈淑华').id}", headers=HTML)
    assert other.status_code == 403
    assert "陈淑华" not in other.text  # not even the name leaks
    assert "break-glass" in other.text or "破窗" in other.text


def test_live_search_returns_only_rows(client: TestClient) -> None:
    sign_in(client, "nurse.wang")
    fragment = client.get("/patients", params={"q": "王"}, headers=HTML | {"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "王秀英" in fragment.text
    assert "李建国" not in fragment.text


def test_forms_need_the_csrf_token(client: TestClient, demo: Demo) -> None:
    sign_in(client, "nurse.wang")
    patient = demo.patient("吴海燕")
    refused = client.post(f"/patients/{patient.id}/admit", data={"ward_id": demo.ward("CARD1").id})
    assert refused.status_code == 403


def test_admit_by_form_and_break_glass(client: TestClient, demo: Demo, db: Session) -> None:
    sign_in(client, "dr.zhang")
    patient = demo.patient("吴海燕")
    token = csrf(client)
    admitted = client.post(
        f"/patients/{patient.id}/admit",
        data={
            "csrf_token": token,
            "ward_id": demo.ward("CARD1").id,
            "bed_id": demo.bed("CARD1-09").id,
            "attending_id": demo.user("dr.zhang").id,
            "reason": "心悸",
        },
        follow_redirects=False,
    )
    assert admitted.status_code == 303
    page = client.get(admitted.headers["location"], headers=HTML)
    assert "09床" in page.text
    assert "已保存" in page.text
    other = demo.patient("陈淑华")
    opened = client.post(
        f"/patients/{other.id}/break-glass",
        data={"csrf_token": token, "reason": "会诊前紧急查看病情变化"},
        follow_redirects=False,
    )
    assert opened.status_code == 303
    assert client.get(f"/patients/{other.id}", headers=HTML).status_code == 200
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "patient.break_glass")).one()
    assert record.actor_username == "dr.zhang"


def test_admin_creates_and_edits_an_account(client: TestClient, demo: Demo) -> None:
    sign_in(client, "admin")
    token = csrf(client, "/admin/users/new")
    created = client.post(
        "/admin/users/new",
        data={
            "csrf_token": token,
            "username": "nurse.gao",
            "display_name": "高护士",
            "role": "nurse",
            "password": "Ward-round-2026",
            "ward_ids": [demo.ward("ICU").id, demo.ward("EDOBS").id],
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    page = client.get(created.headers["location"], headers=HTML)
    assert "高护士" in page.text
    user_id = created.headers["location"].split("/")[3].split("?")[0]
    updated = client.post(
        f"/admin/users/{user_id}",
        data={
            "csrf_token": token,
            "display_name": "高丽",
            "role": "nurse",
            "is_active": "on",
            "ward_ids": [demo.ward("ICU").id],
        },
        follow_redirects=False,
    )
    assert updated.status_code == 303
    listing = client.get("/admin/users", headers=HTML)
    assert "高丽" in listing.text
    invalid = client.post(
        "/admin/users/new",
        data={
            "csrf_token": token,
            "username": "Bad Name",
            "display_name": "x",
            "role": "nurse",
            "password": "Ward-round-2026",
        },
    )
    assert invalid.status_code == 422


def test_auditor_pages(client: TestClient) -> None:
    sign_in(client, "auditor")
    page = client.get("/audit", headers=HTML)
    assert page.status_code == 200
    assert 'id="activity-data"' in page.text
    verify = client.get("/audit/verify", headers=HTML | {"HX-Request": "true"})
    assert "审计链完整" in verify.text
    assert client.get("/patients", headers=HTML).status_code == 403


def test_patient_sees_her_record_and_its_access_log(client: TestClient, demo: Demo) -> None:
    sign_in(client, "patient.liu")
    record = client.get("/me/record", headers=HTML)
    assert "刘芳" in record.text
    log = client.get("/me/access-log", headers=HTML)
    assert "打开了病历" in log.text  # her own opening of the record, just now
    assert client.get("/patients", headers=HTML, follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client, "nurse.wang")
    token = csrf(client)
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/", headers=HTML, follow_redirects=False).status_code == 303


@pytest.fixture
def strict_client(kernel: Kernel, settings: Settings):  # type: ignore[no-untyped-def]
    strict = settings.model_copy(update={"totp_required_roles": ["physician"]})
    kernel.settings = strict
    kernel.auth.settings = strict
    with TestClient(create_app(strict, kernel=kernel)) as client:
        yield client


def test_second_factor_enrolment_and_sign_in(strict_client: TestClient, db: Session) -> None:
    first = sign_in(strict_client, "dr.zhang")
    assert first.headers["location"].startswith("/login/enrol")  # type: ignore[attr-defined]
    enrol = strict_client.get("/login/enrol", headers=HTML)
    assert "<svg" in enrol.text
    secret = re.search(r'class="muted mono"[^>]*>([A-Z2-7]+)<', enrol.text).group(1)  # type: ignore[union-attr]
    assert (
        strict_client.get("/", headers=HTML, follow_redirects=False).status_code == 303
    )  # not yet signed in
    wrong = strict_client.post("/login/enrol", data={"code": "000000", "next": "/"})
    assert wrong.status_code == 401
    done = strict_client.post(
        "/login/enrol", data={"code": pyotp.TOTP(secret).now(), "next": "/"}, follow_redirects=False
    )
    assert done.status_code == 303
    assert "张伟" in strict_client.get("/", headers=HTML).text
    user = db.scalars(select(User).where(User.username == "dr.zhang")).one()
    assert user.totp_enabled
    db.commit()
    # Next time: password, then the code.
    strict_client.cookies.clear()
    again = sign_in(strict_client, "dr.zhang")
    assert again.headers["location"].startswith("/login/mfa")  # type: ignore[attr-defined]


def test_account_messages_survive_the_fragment(client: TestClient) -> None:
    sign_in(client, "nurse.wang")
    token = csrf(client, "/account")
    wrong = client.post(
        "/account/totp/disable", data={"csrf_token": token, "password": "not-mine"}, follow_redirects=False
    )
    assert wrong.headers["location"].startswith("/account?msg=")
    assert wrong.headers["location"].endswith("#totp")


def test_register_a_patient_by_form(client: TestClient) -> None:
    sign_in(client, "admin")
    token = csrf(client, "/patients/new")
    invalid = client.post(
        "/patients/new", data={"csrf_token": token, "name": "韩梅", "gender": "female", "national_id": "123"}
    )
    assert invalid.status_code == 422
    assert "national ID" in invalid.text
    created = client.post(
        "/patients/new",
        data={
            "csrf_token": token,
            "name": "韩梅",
            "gender": "female",
            "birth_date": "1990-02-03",
            "phone": "13800000000",
        },
        follow_redirects=False,
    )
    assert created.status_code == 303
    page = client.get(created.headers["location"], headers=HTML)
    assert "韩梅" in page.text
    assert "患者已登记" in page.text


def test_transfer_and_discharge_by_form(client: TestClient, demo: Demo, db: Session) -> None:
    from tianfu.core.patients.models import Encounter

    patient = demo.patient("张德明")
    stay = db.scalars(
        select(Encounter).where(Encounter.patient_id == patient.id, Encounter.status == "in-progress")
    ).one()
    db.commit()
    sign_in(client, "dr.zhang")
    token = csrf(client)
    moved = client.post(
        f"/encounters/{stay.id}/transfer",
        data={"csrf_token": token, "ward_id": demo.ward("CARD1").id, "bed_id": demo.bed("CARD1-08").id},
        follow_redirects=False,
    )
    assert moved.status_code == 303
    assert "08床" in client.get(moved.headers["location"], headers=HTML).text
    occupied = client.post(
        f"/encounters/{stay.id}/transfer",
        data={"csrf_token": token, "ward_id": demo.ward("CARD1").id, "bed_id": demo.bed("CARD1-01").id},
        follow_redirects=False,
    )
    assert "occupied" in client.get(occupied.headers["location"], headers=HTML).text
    done = client.post(f"/encounters/{stay.id}/discharge", data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303
    assert "已出院" in client.get(done.headers["location"], headers=HTML).text


def test_second_factor_from_the_account_page(client: TestClient) -> None:
    sign_in(client, "nurse.wang")
    token = csrf(client, "/account")
    client.post("/account/totp/begin", data={"csrf_token": token})
    page = client.get("/account", headers=HTML)
    secret = re.search(r'class="muted mono"[^>]*>([A-Z2-7]+)<', page.text).group(1)  # type: ignore[union-attr]
    wrong = client.post(
        "/account/totp/confirm", data={"csrf_token": token, "code": "000000"}, follow_redirects=False
    )
    assert "msg=" in wrong.headers["location"]
    client.post("/account/totp/confirm", data={"csrf_token": token, "code": pyotp.TOTP(secret).now()})
    assert "已开启" in client.get("/account", headers=HTML).text
    client.post("/account/totp/disable", data={"csrf_token": token, "password": DEMO_PASSWORD})
    assert "设置" in client.get("/account", headers=HTML).text


def test_change_own_password_by_form(client: TestClient) -> None:
    sign_in(client, "nurse.wang")
    token = csrf(client, "/account")
    wrong = client.post(
        "/account/password",
        data={"csrf_token": token, "current_password": "nope-nope", "new_password": "Brand-new-pass-1"},
        follow_redirects=False,
    )
    assert wrong.headers["location"].startswith("/account?msg=")
    done = client.post(
        "/account/password",
        data={"csrf_token": token, "current_password": DEMO_PASSWORD, "new_password": "Brand-new-pass-1"},
        follow_redirects=False,
    )
    assert done.headers["location"].startswith("/login")
    assert sign_in(client, "nurse.wang", "Brand-new-pass-1").status_code == 303  # type: ignore[attr-defined]


def test_admin_unlocks_and_resets_by_form(client: TestClient, kernel: Kernel, demo: Demo) -> None:
    for _ in range(kernel.settings.lockout_threshold):
        sign_in(client, "nurse.li", "wrong-password")
    sign_in(client, "admin")
    user_id = demo.user("nurse.li").id
    page = client.get(f"/admin/users/{user_id}", headers=HTML)
    assert "已锁定" in page.text or "锁定至" in page.text
    token = csrf(client, f"/admin/users/{user_id}")
    client.post(f"/admin/users/{user_id}/unlock", data={"csrf_token": token})
    weak = client.post(
        f"/admin/users/{user_id}/password",
        data={"csrf_token": token, "new_password": "short"},
        follow_redirects=False,
    )
    assert "msg=" in weak.headers["location"]
    client.post(
        f"/admin/users/{user_id}/password", data={"csrf_token": token, "new_password": "Reset-by-admin-7"}
    )
    client.cookies.clear()
    assert sign_in(client, "nurse.li", "Reset-by-admin-7").status_code == 303  # type: ignore[attr-defined]


def test_dead_letters_page(client: TestClient, kernel: Kernel) -> None:
    from tianfu.core.deadletter import service as deadletters

    with kernel.sessions() as session:
        deadletters.store(session, source="hl7-mllp", reason="MSH-9 missing", payload=b"MSH|^~\\&|broken")
        session.commit()
    sign_in(client, "admin")
    page = client.get("/admin/dead-letters", headers=HTML)
    assert "MSH-9 missing" in page.text
    letter_id = re.search(r"/admin/dead-letters/([0-9a-f-]+)/resolve", page.text).group(1)  # type: ignore[union-attr]
    token = csrf(client, "/admin/dead-letters")
    client.post(
        f"/admin/dead-letters/{letter_id}/resolve", data={"csrf_token": token, "note": "resent by vendor"}
    )
    assert "MSH-9 missing" not in client.get("/admin/dead-letters", headers=HTML).text
    assert "resent by vendor" in client.get("/admin/dead-letters?include_resolved=true", headers=HTML).text
    home = client.get("/", headers=HTML)
    assert "异常消息" in home.text


def test_second_factor_pages_need_a_pending_sign_in(client: TestClient) -> None:
    for path in ("/login/mfa", "/login/enrol"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
