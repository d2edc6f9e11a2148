"""The demo network's consultation set-up: the community centre may invite the tertiary hospital."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select

from tianfu.consult import service
from tianfu.consult import workflow as wf
from tianfu.consult.tables import CooperationAgreement
from tianfu.core.db import utcnow
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Organization


def seed(kernel: Kernel) -> None:
    with kernel.sessions() as session, session.begin():
        if session.scalar(select(CooperationAgreement.id).limit(1)) is not None:
            return
        orgs = {o.code: o for o in session.scalars(select(Organization))}
        if "TFRM" not in orgs or "JJSQ" not in orgs:
            return
        service.record_agreement(
            session,
            first=orgs["JJSQ"].id,
            second=orgs["TFRM"].id,
            title="锦江区社区卫生服务中心—四川天府人民医院远程医疗合作协议",
            valid_from=utcnow() - timedelta(days=365),
        )
        consultant = session.scalar(select(User).where(User.username == "consult.zhao"))
        if consultant is not None:
            service.record_qualification(
                session,
                user=consultant,
                specialties=[consultant.specialty or "心血管内科"],
                title=wf.ProfessionalTitle.CHIEF,
                independent_practice_since=consultant.practicing_since or date(1999, 7, 1),
            )
