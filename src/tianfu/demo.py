"""The demo hospital network: two institutions, wards with beds, staff of every role, a few patients.

Only for demo mode (``TIANFU_DEMO=1``): every demo account shares one published password.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import Actor
from tianfu.core.db import utcnow
from tianfu.core.identity import service as identity
from tianfu.core.identity.models import User
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Encounter, Location, Organization, Patient

DEMO_PASSWORD = "Demo-2026-tianfu"  # noqa: S105 - published on purpose; demo mode only
DEMO_ACTOR = Actor(user_id=None, username="demo-seed", role="system")


@dataclass(frozen=True)
class DemoAccount:
    username: str
    display_name: str
    role: str
    organization: str
    wards: tuple[str, ...] = ()
    title: str = ""
    specialty: str = ""
    practicing_since: date | None = None
    patient_mrn: str | None = None


ORGANIZATIONS = (
    (
        "TFRM",
        "四川天府人民医院",
        "Tianfu People's Hospital",
        "三级甲等",
        "成都市高新区天府大道北段 1 号",
        "028-8500 1000",
    ),
    (
        "JJSQ",
        "成都市锦江区社区卫生服务中心",
        "Jinjiang Community Health Centre",
        "社区卫生服务中心",
        "成都市锦江区东大街 88 号",
        "028-8666 2000",
    ),
)
# (institution, code, name, English name, specialty, beds)
WARDS = (
    ("TFRM", "CARD1", "心内科一病区", "Cardiology Ward 1", "心血管内科", 12),
    ("TFRM", "RESP", "呼吸与危重症医学科病区", "Respiratory Ward", "呼吸内科", 10),
    ("TFRM", "EDOBS", "急诊留观室", "Emergency Observation", "急诊医学科", 8),
    ("TFRM", "ICU", "重症医学科", "Intensive Care Unit", "重症医学科", 6),
    ("JJSQ", "GEN", "全科病房", "General Ward", "全科医学", 6),
)
ACCOUNTS = (
    DemoAccount("nurse.wang", "王丽", "nurse", "TFRM", ("CARD1",), "主管护师"),
    DemoAccount("nurse.li", "李娜", "nurse", "TFRM", ("RESP",), "护师"),
    DemoAccount(
        "dr.zhang", "张伟", "physician", "TFRM", ("CARD1",), "主任医师", "心血管内科", date(2004, 7, 1)
    ),
    DemoAccount(
        "dr.chen", "陈静", "physician", "TFRM", ("RESP", "EDOBS"), "副主任医师", "呼吸内科", date(2010, 8, 1)
    ),
    DemoAccount("rad.liu", "刘洋", "radiologist", "TFRM", (), "主治医师", "医学影像科", date(2013, 9, 1)),
    DemoAccount("consult.zhao", "赵明", "consultant", "TFRM", (), "主任医师", "心血管内科", date(1999, 7, 1)),
    DemoAccount("admin", "系统管理员", "admin", "TFRM"),
    DemoAccount("auditor", "孙审计", "auditor", "TFRM"),
    DemoAccount("dr.huang", "黄强", "physician", "JJSQ", ("GEN",), "主治医师", "全科医学", date(2015, 7, 1)),
    DemoAccount("nurse.zhou", "周敏", "nurse", "JJSQ", ("GEN",), "护师"),
    DemoAccount("admin.jj", "锦江管理员", "admin", "JJSQ"),
    DemoAccount("patient.liu", "刘芳", "patient", "TFRM", patient_mrn="TFRM-000003"),
    # The provincial supervision platform's API account (省级监管平台): the consultation export only.
    # Every account belongs to an institution; the role reads nothing by institution, so TFRM is only
    # where the account is administered.
    DemoAccount("regulator.sc", "四川省远程医疗监管平台", "regulator", "TFRM"),
)
# (institution, name, family, given, gender, birth date, ward, bed, attending, reason, hours since admission)
PATIENTS = (
    (
        "TFRM",
        "李建国",
        "李",
        "建国",
        "male",
        date(1952, 3, 14),
        "CARD1",
        1,
        "dr.zhang",
        "急性非ST段抬高型心肌梗死",
        30,
    ),
    (
        "TFRM",
        "王秀英",
        "王",
        "秀英",
        "female",
        date(1946, 11, 2),
        "CARD1",
        2,
        "dr.zhang",
        "慢性心力衰竭急性加重",
        72,
    ),
    (
        "TFRM",
        "刘芳",
        "刘",
        "芳",
        "female",
        date(1968, 6, 20),
        "CARD1",
        5,
        "dr.zhang",
        "心房颤动伴快速心室率",
        12,
    ),
    ("TFRM", "张德明", "张", "德明", "male", date(1959, 1, 8), "CARD1", 7, "dr.zhang", "高血压急症", 6),
    ("TFRM", "陈淑华", "陈", "淑华", "female", date(1955, 9, 30), "RESP", 3, "dr.chen", "慢阻肺急性加重", 48),
    ("TFRM", "杨志强", "杨", "志强", "male", date(1971, 4, 17), "RESP", 4, "dr.chen", "社区获得性肺炎", 20),
    ("TFRM", "赵桂兰", "赵", "桂兰", "female", date(1940, 12, 5), "ICU", 2, None, "脓毒症休克", 40),
    ("TFRM", "周子涵", "周", "子涵", "male", date(2019, 5, 22), "EDOBS", 1, "dr.chen", "发热待查", 3),
    ("TFRM", "吴海燕", "吴", "海燕", "female", date(1983, 2, 11), None, None, None, "", 0),
    (
        "JJSQ",
        "黄玉珍",
        "黄",
        "玉珍",
        "female",
        date(1949, 7, 3),
        "GEN",
        1,
        "dr.huang",
        "2型糖尿病血糖控制不佳",
        50,
    ),
    (
        "JJSQ",
        "孙立军",
        "孙",
        "立军",
        "male",
        date(1957, 10, 28),
        "GEN",
        2,
        "dr.huang",
        "社区获得性肺炎恢复期",
        26,
    ),
    ("JJSQ", "马丽华", "马", "丽华", "female", date(1962, 8, 9), None, None, None, "", 0),
)


def resident_id(area: str, born: date, sequence: int) -> str:
    """A well-formed (fictional) GB 11643 resident ID with its check character."""
    body = f"{area}{born:%Y%m%d}{sequence:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def is_seeded(session: Session) -> bool:
    return session.scalar(select(Organization.id).where(Organization.code == "TFRM")) is not None


def seed(kernel: Kernel) -> list[DemoAccount]:
    """Create the demo network once; returns the accounts created (empty if it already existed)."""
    with kernel.sessions() as session:
        if is_seeded(session):
            return []
        orgs: dict[str, Organization] = {}
        for code, name, name_en, level, address, phone in ORGANIZATIONS:
            orgs[code] = Organization(
                code=code, name=name, name_en=name_en, level=level, address=address, phone=phone
            )
            session.add(orgs[code])
        session.flush()
        wards: dict[str, Location] = {}
        beds: dict[tuple[str, int], Location] = {}
        for org_code, code, name, name_en, specialty, bed_count in WARDS:
            ward = Location(
                organization_id=orgs[org_code].id,
                kind="ward",
                code=code,
                name=name,
                name_en=name_en,
                specialty=specialty,
            )
            session.add(ward)
            session.flush()
            wards[code] = ward
            for number in range(1, bed_count + 1):
                bed = Location(
                    organization_id=ward.organization_id,
                    parent_id=ward.id,
                    kind="bed",
                    code=f"{code}-{number:02d}",
                    name=f"{number:02d}床",
                    name_en=f"Bed {number}",
                )
                session.add(bed)
                beds[(code, number)] = bed
        session.flush()

        patients_by_mrn: dict[str, Patient] = {}
        counters = dict.fromkeys(orgs, 0)
        now = utcnow()
        pending_encounters = []
        for i, (
            org_code,
            name,
            family,
            given,
            gender,
            born,
            ward_code,
            bed_no,
            attending,
            reason,
            hours,
        ) in enumerate(PATIENTS):
            counters[org_code] += 1
            mrn = f"{org_code}-{counters[org_code]:06d}"
            patient = Patient(
                mrn=mrn,
                managing_organization_id=orgs[org_code].id,
                name=name,
                family_name=family,
                given_name=given,
                gender=gender,
                birth_date=born,
                national_id=resident_id("510104", born, 100 + i * 2 + (gender == "male")),
                phone=f"138{8000_0000 + i * 7919:08d}"[:11],
                address=f"成都市锦江区春熙路 {10 + i} 号",
            )
            session.add(patient)
            patients_by_mrn[mrn] = patient
            if ward_code:
                pending_encounters.append((patient, ward_code, bed_no, attending, reason, hours))
        session.flush()

        created: list[DemoAccount] = []
        users: dict[str, User] = {}
        for number, account in enumerate(ACCOUNTS, start=1):
            patient_id = patients_by_mrn[account.patient_mrn].id if account.patient_mrn else None
            users[account.username] = identity.create_user(
                session,
                kernel.audit,
                actor=DEMO_ACTOR,
                new=identity.NewUser(
                    username=account.username,
                    display_name=account.display_name,
                    role=account.role,
                    password=DEMO_PASSWORD,
                    organization_id=orgs[account.organization].id,
                    ward_ids=[wards[w].id for w in account.wards],
                    patient_id=patient_id,
                    licence_number=f"110510000{number:06d}"
                    if account.role in {"physician", "radiologist", "consultant"}
                    else "",
                    professional_title=account.title,
                    specialty=account.specialty,
                    practicing_since=account.practicing_since,
                ),
            )
            created.append(account)

        for patient, ward_code, bed_no, attending, reason, hours in pending_encounters:
            ward = wards[ward_code]
            encounter = Encounter(
                patient_id=patient.id,
                organization_id=ward.organization_id,
                encounter_class="EMER" if ward_code == "EDOBS" else "IMP",
                status="in-progress",
                ward_id=ward.id,
                bed_id=beds[(ward_code, bed_no)].id if bed_no else None,
                attending_id=users[attending].id if attending else None,
                reason=reason,
                period_start=now - timedelta(hours=hours),
            )
            session.add(encounter)
        # One earlier, finished stay, so the history is not empty.
        session.add(
            Encounter(
                patient_id=patients_by_mrn["TFRM-000001"].id,
                organization_id=orgs["TFRM"].id,
                encounter_class="IMP",
                status="finished",
                ward_id=wards["CARD1"].id,
                bed_id=beds[("CARD1", 3)].id,
                attending_id=users["dr.zhang"].id,
                reason="不稳定型心绞痛",
                period_start=now - timedelta(days=200),
                period_end=now - timedelta(days=193),
            )
        )
        kernel.audit.record(
            session,
            actor=DEMO_ACTOR,
            action="system.demo_seed",
            action_type="C",
            resource_type="Organization",
            detail={"institutions": len(orgs), "patients": len(PATIENTS)},
        )
        session.commit()
        return created
