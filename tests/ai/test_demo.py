"""The demo's AI governance data is produced by the real paths: inference API service and kernel feedback."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tianfu.ai import demo, service
from tianfu.ai.settings import AiSettings
from tianfu.core.audit.service import Actor
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service as outputs
from tianfu.core.model_outputs.models import ModelFeedback, ModelOutput


def test_demo_radiologist_reads_two_hundred_images_and_gives_verdicts(kernel: Kernel, db: Session) -> None:
    demo.seed(kernel)
    demo.seed(kernel)  # a second start adds nothing
    assert (
        db.scalar(
            select(func.count()).select_from(ModelOutput).where(ModelOutput.task == "imaging-pneumonia")
        )
        == 200
    )
    assert db.scalar(select(func.count()).select_from(ModelFeedback)) == 200
    summary = service.field_performance(db, "tianfu-imaging-pneumonia", AiSettings())
    assert summary.outputs == 200
    assert summary.reviewed == 200
    assert summary.agreement_rate is not None
    assert 0.8 <= summary.agreement_rate <= 1.0  # the model's validation accuracy is 0.97
    assert len(summary.disagreements) == round(200 * (1 - summary.agreement_rate))
    drift = {d.name: d for d in summary.drift}
    assert set(drift) == {"image_mean", "image_std"}
    assert all(d.psi is not None for d in drift.values())  # 200 values: enough to compare


def test_alerts_are_raised_once_and_cleared_when_the_condition_ends(kernel: Kernel, db: Session) -> None:
    demo.seed(kernel)
    first = db.scalars(select(ModelOutput).where(ModelOutput.task == "imaging-pneumonia")).first()
    assert first is not None
    radiologist = Actor(user_id=first.requested_by_id, username="rad.liu", role="radiologist")
    outputs.record_feedback(  # she changes her mind on one: agreement is now below 100 %
        db, kernel.audit, actor=radiologist, output=first, verdict="disagree", comment="second look"
    )
    strict = AiSettings(agreement_alert_below=1.0, alert_min_reviewed=20, drift_alert_psi=1e-9)
    raised = service.check_alerts(db, strict)
    kinds = {(a.model_name, a.kind) for a in raised}
    assert ("tianfu-imaging-pneumonia", "agreement") in kinds
    assert ("tianfu-imaging-pneumonia", "drift") in kinds
    assert service.check_alerts(db, strict) == []  # still open: not raised twice
    assert service.open_alerts(db, "tianfu-imaging-pneumonia")

    relaxed = AiSettings(agreement_alert_below=0.5, alert_min_reviewed=20, drift_alert_psi=100.0)
    assert service.check_alerts(db, relaxed) == []
    assert service.open_alerts(db, "tianfu-imaging-pneumonia") == []
