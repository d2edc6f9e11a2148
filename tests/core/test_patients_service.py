"""Registration, admission, transfer and discharge rules, with their audit records and events."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_access import principal
from tianfu.core.audit.models import AuditRecord
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.errors import Conflict, Forbidden, Invalid, NotFound
from tianfu.core.kernel import Kernel
from tianfu.core.patients import service
from tianfu.core.patients.models import Encounter


def _new_patient(kernel: Kernel, db: Session, who: str = "admin", **fields: object) -> str:
    values = {"name": "测试患者", "gender": "female"} | fields
    patient = service.register_patient(db, kernel.audit, principal(db, who), service.PatientFields(**values))  # type: ignore[arg-type]
    db.commit()
    return patient.id


def test_register_assigns_an_mrn_audits_and_announces(kernel: Kernel, db: Session) -> None:
    patient_id = _new_patient(kernel, db, birth_date=date(1990, 1, 1), national_id="11010519491231002X")
    patient = db.get(service.Patient, patient_id)
    assert patient is not None
    assert patient.mrn.startswith("TFRM-")
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "patient.create")).one()
    assert record.patient_ids == [patient_id]
    event = db.scalars(select(OutboxEvent).where(OutboxEvent.subject == "tianfu.patient.registered")).one()
    assert event.data["patient_id"] == patient_id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": " "}, "name is required"),
        ({"gender": "robot"}, "gender must be"),
        ({"national_id": "110105194912310021"}, "national ID"),
        ({"national_id": "12345"}, "national ID"),
        ({"birth_date": date(2999, 1, 1)}, "future"),
    ],
)
def test_registration_validation(
    kernel: Kernel, db: Session, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        _new_patient(kernel, db, **fields)


def test_duplicate_mrn_is_a_conflict(kernel: Kernel, db: Session) -> None:
    with pytest.raises(Conflict):
        _new_patient(kernel, db, mrn="TFRM-000001")


def test_admit_transfer_discharge(kernel: Kernel, db: Session, demo: Demo) -> None:
    nurse = principal(db, "nurse.wang")
    patient_id = demo.patient("吴海燕").id
    card1 = demo.ward("CARD1")
    encounter = service.admit(
        db,
        kernel.audit,
        nurse,
        patient_id,
        ward_id=card1.id,
        bed_id=demo.bed("CARD1-10").id,
        attending_id=demo.user("dr.zhang").id,
        reason="胸痛待查",
    )
    db.commit()
    assert encounter.status == "in-progress"
    with pytest.raises(Conflict, match="already admitted"):
        service.admit(db, kernel.audit, nurse, patient_id, ward_id=card1.id)
    db.rollback()
    with pytest.raises(Forbidden, match="own wards"):  # moving to another ward is the physician's call
        service.transfer(db, kernel.audit, nurse, encounter.id, ward_id=demo.ward("RESP").id, bed_id=None)
    moved = service.transfer(
        db,
        kernel.audit,
        principal(db, "dr.zhang"),
        encounter.id,
        ward_id=demo.ward("RESP").id,
        bed_id=demo.bed("RESP-09").id,
    )
    db.commit()
    assert moved.ward_id == demo.ward("RESP").id
    # The cardiology nurse no longer cares for the patient; the respiratory nurse does.
    with pytest.raises(Forbidden):
        service.read_patient(db, kernel.audit, nurse, patient_id)
    respiratory_nurse = principal(db, "nurse.li")
    done = service.discharge(db, kernel.audit, respiratory_nurse, encounter.id)
    db.commit()
    assert done.status == "finished"
    assert done.period_end is not None
    subjects = list(db.scalars(select(OutboxEvent.subject).order_by(OutboxEvent.seq)))
    assert subjects[-3:] == [
        "tianfu.encounter.admitted",
        "tianfu.encounter.transferred",
        "tianfu.encounter.discharged",
    ]


def test_occupied_bed_and_foreign_ward_are_refused(kernel: Kernel, db: Session, demo: Demo) -> None:
    doctor = principal(db, "dr.zhang")
    patient_id = demo.patient("吴海燕").id
    with pytest.raises(Conflict, match="occupied"):
        service.admit(
            db,
            kernel.audit,
            doctor,
            patient_id,
            ward_id=demo.ward("CARD1").id,
            bed_id=demo.bed("CARD1-01").id,
        )
    db.rollback()
    with pytest.raises(Invalid, match="not in this ward"):
        service.admit(
            db, kernel.audit, doctor, patient_id, ward_id=demo.ward("CARD1").id, bed_id=demo.bed("RESP-01").id
        )
    db.rollback()
    with pytest.raises(Forbidden, match="own institution"):
        service.admit(db, kernel.audit, doctor, patient_id, ward_id=demo.ward("GEN").id)
    db.rollback()


def test_nurse_admits_only_into_her_ward(kernel: Kernel, db: Session, demo: Demo) -> None:
    with pytest.raises(Forbidden, match="own wards"):
        service.admit(
            db,
            kernel.audit,
            principal(db, "nurse.wang"),
            demo.patient("吴海燕").id,
            ward_id=demo.ward("ICU").id,
        )


def test_refused_read_is_audited_even_though_it_fails(kernel: Kernel, db: Session, demo: Demo) -> None:
    patient_id = demo.patient("陈淑华").id
    with pytest.raises(Forbidden):
        service.read_patient(db, kernel.audit, principal(db, "nurse.wang"), patient_id)
    record = db.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).one()
    assert (record.action, record.outcome, record.patient_ids) == ("patient.read", 4, [patient_id])
    assert "denied" in record.outcome_desc


def test_unknown_patient_is_not_found(kernel: Kernel, db: Session) -> None:
    with pytest.raises(NotFound):
        service.read_patient(db, kernel.audit, principal(db, "nurse.wang"), "no-such-id")


def test_search_lists_in_bed_order_and_audits_every_returned_patient(kernel: Kernel, db: Session) -> None:
    rows, total = service.search_patients(
        db, kernel.audit, principal(db, "nurse.wang"), service.PatientQuery()
    )
    db.commit()
    beds = [service.current_encounter(p).bed.code for p in rows]  # type: ignore[union-attr]
    assert beds == sorted(beds)
    assert total == 4
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "patient.search")).one()
    assert sorted(record.patient_ids) == sorted(p.id for p in rows)


def test_update_keeps_the_previous_value_in_the_audit_trail(kernel: Kernel, db: Session, demo: Demo) -> None:
    patient_id = demo.patient("吴海燕").id
    service.update_patient(db, kernel.audit, principal(db, "admin"), patient_id, {"phone": "13900000000"})
    db.commit()
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "patient.update")).one()
    assert record.detail["changed"]["phone"]["to"] == "13900000000"
    assert record.detail["changed"]["phone"]["from"]


def test_break_glass_needs_a_reason_and_is_flagged(kernel: Kernel, db: Session, demo: Demo) -> None:
    nurse = principal(db, "nurse.wang")
    patient_id = demo.patient("陈淑华").id
    with pytest.raises(Invalid):
        service.break_glass(db, kernel.audit, nurse, patient_id, reason="急", minutes=60)
    db.rollback()
    service.break_glass(
        db, kernel.audit, nurse, patient_id, reason="患者在走廊晕倒，需立即查看病史", minutes=60
    )
    db.commit()
    patient = service.read_patient(db, kernel.audit, nurse, patient_id)
    db.commit()
    assert patient.name == "陈淑华"
    purposes = list(
        db.scalars(
            select(AuditRecord.purpose)
            .where(AuditRecord.patient_ids.is_not(None))
            .order_by(AuditRecord.seq.desc())
            .limit(2)
        )
    )
    assert purposes == ["ETREAT", "ETREAT"]


def test_ward_census_counts_beds_and_occupancy(db: Session, demo: Demo) -> None:
    census = {
        c.ward.code: (c.beds, c.occupied) for c in service.ward_census(db, demo.organization("TFRM").id)
    }
    assert census == {"CARD1": (12, 4), "RESP": (10, 2), "EDOBS": (8, 1), "ICU": (6, 1)}


def test_encounters_are_listed_within_the_care_relationship(kernel: Kernel, db: Session) -> None:
    rows, total = service.list_encounters(db, kernel.audit, principal(db, "nurse.wang"))
    db.commit()
    assert total == 5  # four current stays and 李建国's earlier one
    assert {e.ward_id for e in rows} == {rows[0].ward_id}
    assert all(isinstance(e, Encounter) for e in rows)


def test_staff_cannot_move_or_discharge_patients_they_do_not_care_for(
    kernel: Kernel, db: Session, demo: Demo
) -> None:
    """Writes are guarded at least as strictly as reads; refusals are audited."""
    respiratory_nurse = principal(db, "nurse.li")
    patient_id = demo.patient("李建国").id
    stay = db.scalars(
        select(Encounter).where(Encounter.patient_id == patient_id, Encounter.status == "in-progress")
    ).one()
    db.commit()
    with pytest.raises(Forbidden, match="do not care"):
        service.transfer(
            db, kernel.audit, respiratory_nurse, stay.id, ward_id=demo.ward("RESP").id, bed_id=None
        )
    with pytest.raises(Forbidden, match="do not care"):
        service.discharge(db, kernel.audit, respiratory_nurse, stay.id)
    refusals = db.scalars(
        select(AuditRecord.action).where(
            AuditRecord.outcome == 4, AuditRecord.action.startswith("encounter.")
        )
    ).all()
    assert refusals == ["encounter.transfer", "encounter.discharge"]
    db.commit()
    with pytest.raises(Forbidden):
        service.discharge(db, kernel.audit, principal(db, "dr.huang"), stay.id)  # another institution


def test_automatic_mrn_skips_numbers_typed_in_by_hand(kernel: Kernel, db: Session) -> None:
    count = db.scalar(
        select(func.count()).select_from(service.Patient).where(service.Patient.mrn.startswith("TFRM-"))
    )
    db.commit()
    _new_patient(kernel, db, mrn=f"TFRM-{count + 1:06d}")
    second = db.get(service.Patient, _new_patient(kernel, db))
    assert second is not None
    assert second.mrn == f"TFRM-{count + 2:06d}"


def test_breaking_the_glass_twice_extends_one_grant(kernel: Kernel, db: Session, demo: Demo) -> None:
    doctor = principal(db, "dr.zhang")
    patient_id = demo.patient("陈淑华").id
    first = service.break_glass(
        db, kernel.audit, doctor, patient_id, reason="患者突发胸痛需立即查看", minutes=60
    )
    db.commit()
    second = service.break_glass(
        db, kernel.audit, doctor, patient_id, reason="病情仍在变化，继续查看", minutes=60
    )
    db.commit()
    assert first.id == second.id
    assert service.read_patient(db, kernel.audit, doctor, patient_id).name == "陈淑华"
