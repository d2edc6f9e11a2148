"""AI findings on stored images: which model reads which image, the worklist priority, and review.

The choice of model and the priority rule are pure functions; :func:`analyse_instance` is the bus
consumer's work (read the stored file, run the models, store findings and heatmaps, record every output
through the kernel's AI-output service, raise the study on the worklist), and :func:`review` records the
radiologist's confirmation or correction as feedback on the model output.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow
from tianfu.core.deadletter import service as deadletters
from tianfu.core.errors import Conflict, Invalid, NotFound
from tianfu.core.model_outputs import service as outputs
from tianfu.core.model_outputs.models import ModelOutput
from tianfu.core.model_registry import service as registry
from tianfu.core.model_registry.manifest import ActiveModel

if TYPE_CHECKING:
    from tianfu.imaging import inference

log = logging.getLogger(__name__)
MODULE = "imaging"
SYSTEM = Actor(user_id=None, username="tianfu-imaging-ai", role="system")
DEAD_LETTER_SOURCE = "imaging-analysis"
# Heatmaps are smooth, upsampled class-activation maps: zlib's fastest level loses little size on them and
# takes a third of the time of the default (about 15 ms instead of 45 ms for a 1955×1841 radiograph).
HEATMAP_PNG_LEVEL = 1


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


@dataclass(frozen=True)
class Plan:
    """What the analyser will read for one stored image, looked up in a short transaction."""

    instance_id: str
    sop_instance_uid: str
    storage_path: str  # relative to the store root
    tasks: tuple[str, ...]
    models: tuple[ActiveModel, ...]  # per task: the version the AI platform has active


@dataclass(frozen=True)
class Reading:
    """One model's result for a planned image, and where its heatmap was written."""

    task: str
    model_name: str  # as the AI platform's registry knows it
    result: inference.Finding
    heatmap_path: str  # relative to the store root
    inputs: dict[str, float]  # the image summaries the platform compares with the training data


class AnalysisFailed(Exception):
    """The image cannot be analysed, and trying again will not help (its pixels cannot be read)."""


def registry_name(task: str) -> str:
    """The name the AI platform's registry knows a task's model by (as its metadata file says)."""
    return f"tianfu-imaging-{task}"


def plan_analysis(session: Session, instance_id: str) -> Plan | None:
    """The models that will read this image; None when there is nothing to do (already read, or no model
    reads this kind of image). Only reads."""
    from tianfu.imaging import inference
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries

    instance = session.get(ImagingInstance, instance_id)
    if instance is None:
        raise NotFound(f"no instance {instance_id}")
    if session.scalar(select(ImagingFinding.id).where(ImagingFinding.instance_id == instance_id).limit(1)):
        return None
    series = session.get(ImagingSeries, instance.series_id)
    assert series is not None
    chosen = tasks_for(series.modality or "", series.body_part or "", inference.tasks())
    active = {task: registry.active_model(session, registry_name(task)) for task in chosen}
    running = [task for task in chosen if active[task] is not None]  # an admin may have switched one off
    if not running:
        return None
    return Plan(
        instance.id,
        instance.sop_instance_uid,
        instance.storage_path,
        tuple(running),
        tuple(active[task] for task in running),  # type: ignore[misc]
    )


def read_image(store_root: Path, plan: Plan) -> list[Reading]:
    """Run the planned models on the stored file and write their heatmaps beside it. Touches no database, so
    it runs outside any transaction (on SQLite a transaction holds the one write lock). Raises
    :class:`AnalysisFailed` for pixels that cannot be read."""
    import numpy as np
    import pydicom

    from tianfu.imaging.dicom.pixels import PixelDataError, display_array, to_png

    dataset = pydicom.dcmread(store_root / plan.storage_path)
    try:
        image = display_array(dataset)
    except PixelDataError as exc:
        raise AnalysisFailed(f"no readable pixels: {exc}") from exc
    del dataset  # the decoded pixels are all that is needed from here
    from tianfu.imaging.ai import input_summary, load_model

    readings: list[Reading] = []
    for task, active in zip(plan.tasks, plan.models, strict=True):
        model = load_model(active)  # by the file names the registry holds, whatever the version
        result = model.predict(image)
        heatmap_rel = Path(plan.storage_path).with_suffix(f".{task}.heatmap.png")
        png = to_png((np.clip(result.heatmap, 0, 1) * 255).astype(np.uint8), level=HEATMAP_PNG_LEVEL)
        # Written to a temporary name and renamed, so the viewer never reads half a heatmap.
        target = store_root / heatmap_rel
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        partial.write_bytes(png)
        os.replace(partial, target)
        readings.append(Reading(task, model.name, result, str(heatmap_rel), input_summary(image, model)))
    return readings


def save_findings(
    session: Session, audit: AuditLog, plan: Plan, readings: Sequence[Reading]
) -> list[ImagingFinding]:
    """Record the readings of one image in the caller's (short, writing) transaction; idempotent: when
    another delivery stored this image's findings first, those are returned and nothing is added."""
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

    # Locks the instance's row on PostgreSQL, so two deliveries of one event cannot both add findings
    # (SQLite's BEGIN IMMEDIATE already serialises writers).
    instance = session.scalars(
        select(ImagingInstance).where(ImagingInstance.id == plan.instance_id).with_for_update()
    ).one_or_none()
    if instance is None:
        raise NotFound(f"no instance {plan.instance_id}")
    existing = session.scalars(select(ImagingFinding).where(ImagingFinding.instance_id == instance.id)).all()
    if existing:
        return list(existing)
    series = session.get(ImagingSeries, instance.series_id)
    assert series is not None
    study = session.get(ImagingStudy, series.study_id)
    assert study is not None
    found: list[ImagingFinding] = []
    for reading in readings:
        result = reading.result
        output = outputs.record_output(
            session,
            audit,
            actor=SYSTEM,
            module=MODULE,
            task=reading.task,
            model_name=reading.model_name,
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
            input_features={**reading.inputs, "modality": series.modality},
        )
        finding = ImagingFinding(
            study_id=study.id,
            instance_id=instance.id,
            task=reading.task,
            model_version=result.model_version,
            label=result.label,
            probability=result.probability,
            score=result.score,
            threshold=result.threshold,
            positive=result.positive,
            probabilities=result.probabilities,
            heatmap_path=reading.heatmap_path,
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


def analyse_instance(
    session: Session, audit: AuditLog, store_root: Path, instance_id: str
) -> list[ImagingFinding]:
    """Run every applicable model on one stored image, all in the caller's transaction; idempotent (a
    redelivered event adds nothing). The bus consumer uses the three steps with a transaction each instead
    (:func:`plan_analysis`, :func:`read_image`, :func:`save_findings`)."""
    from tianfu.imaging.tables import ImagingInstance

    plan = plan_analysis(session, instance_id)
    if plan is None:
        existing = session.scalars(
            select(ImagingFinding).where(ImagingFinding.instance_id == instance_id)
        ).all()
        return list(existing)
    try:
        readings = read_image(store_root, plan)
    except AnalysisFailed as exc:
        instance = session.get(ImagingInstance, instance_id)
        log.warning("instance %s: %s", instance.sop_instance_uid if instance else instance_id, exc)
        return []
    return save_findings(session, audit, plan, readings)


def mark_failed(session: Session, instance_id: str, reason: str, *, dead_letter: bool = True) -> None:
    """An image the AI could not read: its study shows "failed" on the worklist and the failure waits in
    the dead-letter store (``imaging-analysis``) for an admin, instead of the study waiting for ever."""
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

    instance = session.get(ImagingInstance, instance_id)
    if instance is None:
        return
    series = session.get(ImagingSeries, instance.series_id)
    study = session.get(ImagingStudy, series.study_id) if series is not None else None
    if study is not None and study.status != "analysed":
        study.status = "failed"
    if not dead_letter:
        return
    deadletters.store(
        session,
        source=DEAD_LETTER_SOURCE,
        reason=f"AI analysis of SOP instance {instance.sop_instance_uid} failed: {reason}"[:2000],
        payload=instance.sop_instance_uid,
        meta={
            "sop_instance_uid": instance.sop_instance_uid,
            "instance_id": instance.id,
            "study_id": study.id if study is not None else None,
            "study_instance_uid": study.study_instance_uid if study is not None else None,
        },
    )


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
