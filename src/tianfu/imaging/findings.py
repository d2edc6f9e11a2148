"""AI findings on stored images: which model reads which image, the worklist priority, and review.

The choice of model and the priority rule are pure functions; :func:`analyse_instance` is the bus
consumer's work (read the stored file, run the models, store findings and heatmaps, record every output
through the kernel's AI-output service, raise the study on the worklist), and :func:`review` records the
radiologist's confirmation or correction as feedback on the model output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow
from tianfu.core.errors import Conflict, Invalid, NotFound
from tianfu.core.model_outputs import service as outputs
from tianfu.core.model_outputs.models import ModelOutput

log = logging.getLogger(__name__)
MODULE = "imaging"
SYSTEM = Actor(user_id=None, username="tianfu-imaging-ai", role="system")


class ImagingFinding(Base):
    """One model's reading of one image; the radiologist's review is kept beside it."""

    __tablename__ = "imaging_finding"

    id: Mapped[str] = IdColumn()
    study_id: Mapped[str] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("imaging_instance.id"), index=True)
    task: Mapped[str] = mapped_column(String(40))
    model_version: Mapped[str] = mapped_column(String(40))
    label: Mapped[str] = mapped_column(String(60))
    probability: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)  # the value compared with the threshold
    threshold: Mapped[float] = mapped_column(Float)
    positive: Mapped[bool] = mapped_column(Boolean)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    heatmap_path: Mapped[str] = mapped_column(String(300), default="")  # PNG, relative to the store root
    ai_output_id: Mapped[str | None] = mapped_column(String(36))
    review: Mapped[str] = mapped_column(String(20), default="")  # "" | confirmed | corrected
    reviewed_label: Mapped[str] = mapped_column(String(60), default="")
    review_comment: Mapped[str] = mapped_column(Text, default="")
    reviewed_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# --- pure rules --------------------------------------------------------------------------------------

CHEST_PARTS = {"", "CHEST", "THORAX", "LUNG", "CHEST_LAT", "CHEST PA"}


def tasks_for(modality: str, body_part: str, available: Sequence[str]) -> list[str]:
    """The models that may read an image: chest radiographs, breast ultrasound, fundus photographs."""
    modality, body_part = modality.upper().strip(), body_part.upper().strip()
    wanted: list[str] = []
    if modality in {"CR", "DX"} and body_part in CHEST_PARTS:
        # Not "cxr-abnormal": its patient-grouped CV AUC is 0.63, too weak to reorder anyone's worklist.
        wanted = ["pneumonia"]
    elif modality == "US" and body_part in {"", "BREAST"}:
        wanted = ["breast"]
    elif modality in {"OP", "XC"} and body_part in {"", "EYE", "RETINA", "FUNDUS"}:
        wanted = ["retina"]
    return [t for t in wanted if t in available]


def priority(findings: Sequence[tuple[bool, float]]) -> float:
    """Worklist priority from (positive, score) pairs: any positive finding ranks above every negative
    one; within each group the higher score first."""
    if not findings:
        return 0.0
    best_positive = max((s for p, s in findings if p), default=None)
    if best_positive is not None:
        return 1.0 + best_positive
    return max(s for _, s in findings)


# --- the consumer's work -----------------------------------------------------------------------------


def analyse_instance(
    session: Session, audit: AuditLog, store_root: Path, instance_id: str
) -> list[ImagingFinding]:
    """Run every applicable model on one stored image; idempotent (a redelivered event adds nothing)."""
    import numpy as np
    import pydicom

    from tianfu.imaging import inference
    from tianfu.imaging.dicom.pixels import PixelDataError, display_array, to_png
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

    instance = session.get(ImagingInstance, instance_id)
    if instance is None:
        raise NotFound(f"no instance {instance_id}")
    existing = session.scalars(select(ImagingFinding).where(ImagingFinding.instance_id == instance_id)).all()
    if existing:
        return list(existing)
    series = session.get(ImagingSeries, instance.series_id)
    assert series is not None
    study = session.get(ImagingStudy, series.study_id)
    assert study is not None
    chosen = tasks_for(series.modality or "", series.body_part or "", inference.tasks())
    if not chosen:
        return []
    dataset = pydicom.dcmread(store_root / instance.storage_path)
    try:
        image = display_array(dataset)
    except PixelDataError as exc:
        log.warning("instance %s: no readable pixels (%s)", instance.sop_instance_uid, exc)
        return []
    found: list[ImagingFinding] = []
    for task in chosen:
        model = inference.ImagingModel.load(task)
        result = model.predict(image)
        heatmap_rel = Path(instance.storage_path).with_suffix(f".{task}.heatmap.png")
        (store_root / heatmap_rel).write_bytes(to_png((np.clip(result.heatmap, 0, 1) * 255).astype(np.uint8)))
        output = outputs.record_output(
            session,
            audit,
            actor=SYSTEM,
            module=MODULE,
            task=task,
            model_name=f"imaging-{task}",
            model_version=result.model_version,
            input_ref=f"dicom/{study.study_instance_uid}/{series.series_instance_uid}/{instance.sop_instance_uid}",
            output={
                "label": result.label,
                "probability": result.probability,
                "score": result.score,
                "threshold": result.threshold,
                "positive": result.positive,
            },
            label=result.label,
            score=result.score,
            patient_id=study.patient_id,
            input_features={"modality": series.modality, "rows": instance.rows, "columns": instance.columns},
        )
        finding = ImagingFinding(
            study_id=study.id,
            instance_id=instance.id,
            task=task,
            model_version=result.model_version,
            label=result.label,
            probability=result.probability,
            score=result.score,
            threshold=result.threshold,
            positive=result.positive,
            probabilities=result.probabilities,
            heatmap_path=str(heatmap_rel),
            ai_output_id=output.id,
        )
        session.add(finding)
        found.append(finding)
    session.flush()
    all_findings = session.scalars(select(ImagingFinding).where(ImagingFinding.study_id == study.id)).all()
    study.ai_priority = priority([(f.positive, f.score) for f in all_findings])
    study.status = "analysed"
    enqueue(
        session,
        "tianfu.imaging.analysed",
        {
            "study_uid": study.study_instance_uid,
            "patient_id": study.patient_id,
            "positive": [f.task for f in found if f.positive],
            "priority": study.ai_priority,
        },
    )
    return found


def review(
    session: Session,
    audit: AuditLog,
    actor: Actor,
    finding: ImagingFinding,
    *,
    verdict: str,
    corrected_label: str = "",
    comment: str = "",
) -> ImagingFinding:
    """The radiologist confirms or corrects a finding; it becomes feedback on the model output."""
    if verdict not in ("confirmed", "corrected"):
        raise Invalid("verdict is confirmed or corrected")
    if verdict == "corrected" and not (corrected_label.strip() or comment.strip()):
        raise Invalid("a correction needs the right label or a comment")
    if finding.review:
        raise Conflict("this finding has been reviewed")
    if finding.ai_output_id:
        output = session.get(ModelOutput, finding.ai_output_id)
        if output is not None:
            outputs.record_feedback(
                session,
                audit,
                actor=actor,
                output=output,
                verdict="agree" if verdict == "confirmed" else "disagree",
                corrected_label=corrected_label.strip(),
                comment=comment.strip(),
            )
    finding.review = verdict
    finding.reviewed_label = corrected_label.strip() if verdict == "corrected" else finding.label
    finding.review_comment = comment.strip()
    finding.reviewed_by_id = actor.user_id
    finding.reviewed_at = utcnow()
    return finding
