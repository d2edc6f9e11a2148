"""The care relationship decides which patients each role sees."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tianfu.core.db import utcnow
from tianfu.core.identity.models import AuthSession, User
from tianfu.core.identity.service import principal_for
from tianfu.core.patients.models import CareGrant, Patient
from tianfu.core.security import access
from tianfu.core.security.permissions import ROLE_PERMISSIONS, Permission, Role, has_permission
from tianfu.core.security.principal import Principal

CARDIOLOGY = {"李建国", "王秀英", "刘芳", "张德明"}
RESPIRATORY = {"陈淑华", "杨志强"}


def principal(db: Session, username: str) -> Principal:
    user = db.scalars(select(User).where(User.username == username)).one()
    who = principal_for(AuthSession(user=user, kind="api", csrf_token="x"), "127.0.0.1")
    db.expunge(user)  # a throw-away AuthSession must not be flushed
    db.commit()
    return who


def visible(db: Session, who: Principal) -> set[str]:
    names = set(db.scalars(select(Patient.name).where(access.visible_patients(who))))
    db.commit()
    return names


def test_nurse_sees_exactly_her_wards_patients(db: Session) -> None:
    assert visible(db, principal(db, "nurse.wang")) == CARDIOLOGY
    assert visible(db, principal(db, "nurse.li")) == RESPIRATORY


def test_physician_sees_ward_and_attending_patients(db: Session) -> None:
    # dr.chen covers the respiratory ward and emergency observation, and attends 周子涵 there.
    assert visible(db, principal(db, "dr.chen")) == RESPIRATORY | {"周子涵"}
    assert visible(db, principal(db, "dr.zhang")) == CARDIOLOGY


def test_radiologist_sees_current_inpatients_of_her_institution(db: Session) -> None:
    seen = visible(db, principal(db, "rad.liu"))
    assert CARDIOLOGY | RESPIRATORY | {"赵桂兰", "周子涵"} == seen
    assert "黄玉珍" not in seen  # another institution


def test_consultant_sees_nobody_without_a_grant(db: Session) -> None:
    assert visible(db, principal(db, "consult.zhao")) == set()


def test_admin_sees_patients_registered_at_the_institution(db: Session) -> None:
    seen = visible(db, principal(db, "admin"))
    assert "吴海燕" in seen  # registered, never admitted
    assert "黄玉珍" not in seen
    assert visible(db, principal(db, "admin.jj")) == {"黄玉珍", "孙立军", "马丽华"}


def test_auditor_sees_no_charts(db: Session, demo: Demo) -> None:
    auditor = principal(db, "auditor")
    assert visible(db, auditor) == set()
    decision = access.decide(db, auditor, demo.patient("李建国").id)
    assert not decision.allowed
    assert not has_permission("auditor", Permission.PATIENT_READ)


def test_patient_sees_only_herself(db: Session, demo: Demo) -> None:
    me = principal(db, "patient.liu")
    assert visible(db, me) == {"刘芳"}
    assert access.decide(db, me, demo.patient("刘芳").id).basis == "self"
    assert not access.decide(db, me, demo.patient("李建国").id).allowed


def test_access_lasts_a_few_days_after_discharge(db: Session, demo: Demo) -> None:
    from tianfu.core.patients.models import Encounter

    nurse = principal(db, "nurse.wang")
    patient = demo.patient("张德明")
    stay = db.scalars(
        select(Encounter).where(Encounter.patient_id == patient.id, Encounter.status == "in-progress")
    ).one()
    stay.status = "finished"
    stay.period_end = utcnow() - timedelta(hours=1)
    db.commit()
    assert "张德明" in visible(db, nurse)  # the ward finishes the discharge paperwork
    stay.period_end = utcnow() - access.CARE_AFTER_DISCHARGE - timedelta(minutes=1)
    db.commit()
    assert "张德明" not in visible(db, nurse)
    assert not access.decide(db, nurse, patient.id).allowed


@pytest.mark.parametrize(
    ("kind", "basis", "purpose"),
    [("consultation", "grant:consultation", "TREAT"), ("break_glass", "grant:break_glass", "ETREAT")],
)
def test_grants_open_one_patient_until_they_expire(
    db: Session, demo: Demo, kind: str, basis: str, purpose: str
) -> None:
    consultant = principal(db, "consult.zhao")
    patient = demo.patient("王秀英")
    grant = CareGrant(
        user_id=consultant.user_id,
        patient_id=patient.id,
        kind=kind,
        reason="会诊",
        expires_at=utcnow() + timedelta(hours=1),
    )
    db.add(grant)
    db.commit()
    assert visible(db, consultant) == {"王秀英"}
    decision = access.decide(db, consultant, patient.id)
    assert (decision.allowed, decision.basis, decision.purpose) == (True, basis, purpose)
    grant.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    assert visible(db, consultant) == set()
    assert not access.decide(db, consultant, patient.id).allowed


def test_every_role_has_a_permission_set() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert not has_permission("wizard", Permission.PATIENT_READ)
    for role in Role:
        assert Permission.ACCOUNT_SELF in ROLE_PERMISSIONS[role]
