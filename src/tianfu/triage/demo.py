"""The demo hospital's triage desk: a few people already waiting, so the queue shows its ordering."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.identity.models import AuthSession, User
from tianfu.core.identity.service import principal_for
from tianfu.core.kernel import Kernel
from tianfu.core.security.principal import Principal
from tianfu.triage import service
from tianfu.triage.tables import TriageSession

WALK_INS = (
    # label, age, complaint, vital signs
    ("来诊 01 号", 67.0, "胸口压榨样疼痛一小时，出冷汗", {"heart_rate": 112, "systolic_bp": 92, "spo2": 95}),
    ("来诊 02 号", 4.0, "孩子发烧两天，咳嗽，流鼻涕", {"heart_rate": 128, "temperature": 38.6, "spo2": 97}),
    (
        "来诊 03 号",
        32.0,
        "打喷嚏，流清鼻涕，鼻子痒，没有发烧",
        {"heart_rate": 78, "systolic_bp": 118, "spo2": 99},
    ),
)


def _principal(session: Session, username: str) -> Principal:
    user = session.scalars(select(User).where(User.username == username)).one()
    # A throw-away session only to build the principal: no form is ever checked against its token.
    who = principal_for(AuthSession(user=user, kind="api", csrf_token=""), "127.0.0.1")
    session.expunge(user)  # and it must not be flushed
    return who


def seed(kernel: Kernel) -> None:
    with kernel.sessions() as session, session.begin():
        if session.scalar(select(TriageSession.id).limit(1)) is not None:
            return
        nurse = _principal(session, "nurse.wang")
        for label, age, text, vitals in WALK_INS:
            row = service.start(
                session, kernel.audit, nurse, text=text, visitor_label=label, age_years=age, vitals=vitals
            )
            if row.status == "interviewing":
                service.finish(session, kernel.audit, nurse, row.id)
        patient = _principal(session, "patient.liu")
        row = service.start(session, kernel.audit, patient, text="咳嗽一周，有痰，晚上咳得厉害，没有发烧")
        if row.status == "interviewing":
            service.finish(session, kernel.audit, patient, row.id)
