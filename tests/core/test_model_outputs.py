"""The kernel's record of model outputs and clinicians' verdicts."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.core.test_access import principal
from tianfu.core.audit.models import AuditRecord
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service


def _output(
    kernel: Kernel, db: Session, demo: Demo, version: str = "1.0.0", patient: str = "李建国"
) -> service.ModelOutput:
    row = service.record_output(
        db,
        kernel.audit,
        actor=principal(db, "dr.zhang").actor,
        module="monitoring",
        task="deterioration",
        model_name="news2-rules",
        model_version=version,
        input_ref="Observation/abc",
        output={"score": 7, "band": "high"},
        label="high",
        score=0.82,
        patient_id=demo.patient(patient).id,
        input_features={"respiratory_rate": 26},
    )
    db.commit()
    return row


def test_output_is_recorded_audited_and_announced(kernel: Kernel, db: Session, demo: Demo) -> None:
    row = _output(kernel, db, demo)
    assert row.requested_by_id == demo.user("dr.zhang").id
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "ai_output.create")).one()
    assert record.patient_ids == [demo.patient("李建国").id]
    assert db.scalars(
        select(OutboxEvent.subject).where(OutboxEvent.subject == "tianfu.ai.output_recorded")
    ).one()


def test_outputs_recorded_together_are_each_recorded_audited_and_announced(
    kernel: Kernel, db: Session, demo: Demo
) -> None:
    patients = [demo.patient("李建国").id, None]
    ids = service.record_outputs(
        db,
        kernel.audit,
        actor=principal(db, "dr.zhang").actor,
        outputs=[
            service.NewOutput(
                module="monitoring",
                task="sepsis",
                model_name="sepsis-gbt",
                model_version="1.0.0",
                input_ref=f"monitoring/sepsis/{i}",
                output={"risk": 0.1 * i},
                label="no alarm",
                score=0.1 * i,
                patient_id=patient,
            )
            for i, patient in enumerate(patients)
        ],
    )
    db.commit()
    rows = [db.get(service.ModelOutput, i) for i in ids]
    assert [(r.patient_id, r.output, r.input_features) for r in rows if r] == [
        (patients[0], {"risk": 0.0}, {}),
        (None, {"risk": 0.1}, {}),
    ]
    assert rows[0]
    assert rows[0].requested_by_id == demo.user("dr.zhang").id
    records = db.scalars(
        select(AuditRecord).where(AuditRecord.action == "ai_output.create").order_by(AuditRecord.seq)
    ).all()
    assert [(r.resource_id, r.patient_ids) for r in records] == [(ids[0], [patients[0]]), (ids[1], [])]
    announced = db.scalars(
        select(OutboxEvent.data)
        .where(OutboxEvent.subject == "tianfu.ai.output_recorded")
        .order_by(OutboxEvent.seq)
    ).all()
    assert [a["output_id"] for a in announced] == ids
    assert kernel.audit.verify(db).ok
    assert service.record_outputs(db, kernel.audit, actor=principal(db, "dr.zhang").actor, outputs=[]) == []


def test_feedback_and_agreement_rate(kernel: Kernel, db: Session, demo: Demo) -> None:
    doctor = principal(db, "dr.zhang").actor
    rows = [_output(kernel, db, demo) for _ in range(4)] + [_output(kernel, db, demo, version="2.0.0")]
    service.record_feedback(db, kernel.audit, actor=doctor, output=rows[0], verdict="agree")
    service.record_feedback(
        db, kernel.audit, actor=doctor, output=rows[1], verdict="disagree", corrected_label="low"
    )
    service.record_feedback(
        db, kernel.audit, actor=doctor, output=rows[2], verdict="partial", comment="borderline"
    )
    # A later verdict on the same output replaces the earlier one in the rate.
    service.record_feedback(db, kernel.audit, actor=doctor, output=rows[1], verdict="agree")
    db.commit()
    usage = {(u.model_name, u.model_version): u for u in service.usage_by_model(db)}
    v1 = usage[("news2-rules", "1.0.0")]
    assert (v1.outputs, v1.reviewed) == (4, 3)
    assert v1.agreement_rate == pytest.approx(2.5 / 3)
    v2 = usage[("news2-rules", "2.0.0")]
    assert (v2.outputs, v2.reviewed, v2.agreement_rate) == (1, 0, None)


def test_disagreement_needs_the_correct_answer_or_a_comment(kernel: Kernel, db: Session, demo: Demo) -> None:
    row = _output(kernel, db, demo)
    with pytest.raises(ValueError, match="disagreement"):
        service.record_feedback(
            db, kernel.audit, actor=principal(db, "dr.zhang").actor, output=row, verdict="disagree"
        )
