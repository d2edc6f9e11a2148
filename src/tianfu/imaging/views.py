"""Imaging's API (/api/v1/imaging) and pages (/imaging): the prioritised worklist, the viewer, review."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import AuditLog
from tianfu.core.errors import Invalid, NotFound
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import RequestModel, ResponseModel
from tianfu.core.patients.models import Patient
from tianfu.core.patients.service import require_access
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal
from tianfu.imaging import findings as ai
from tianfu.imaging.dicom.store import dicom_store
from tianfu.imaging.dicomweb import sees_unmatched, visible_studies
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy
from tianfu.web.rendering import redirect, render

api = APIRouter(prefix="/api/v1/imaging", tags=["imaging"], responses=PROBLEM_RESPONSES)
pages = APIRouter(prefix="/imaging", include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Writer = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
Id = Annotated[str, Path(max_length=64)]
MAX_UPLOAD = 64 * 1024 * 1024


def worklist(session: Session, audit: AuditLog, principal: Principal, limit: int = 100) -> list[ImagingStudy]:
    """Most urgent AI finding first, then the longest wait."""
    rows = list(
        session.scalars(
            select(ImagingStudy)
            .where(visible_studies(principal))
            .order_by(ImagingStudy.ai_priority.desc(), ImagingStudy.received_at)
            .limit(limit)
        ).all()
    )
    audit.record(
        session,
        actor=principal.actor,
        action="imaging.worklist.read",
        action_type="R",
        resource_type="ImagingStudy",
        patient_ids=sorted({r.patient_id for r in rows if r.patient_id}),
        purpose=principal.purpose,
        detail={"count": len(rows)},
    )
    return rows


def read_study(session: Session, audit: AuditLog, principal: Principal, study_id: str) -> ImagingStudy:
    study = session.get(ImagingStudy, study_id)
    if study is None:
        raise NotFound(f"no imaging study {study_id}")
    if study.patient_id is not None:
        require_access(session, audit, principal, study.patient_id, action="imaging.study.read")
    elif not sees_unmatched(principal, study.organization_id):
        raise NotFound(f"no imaging study {study_id}")
    audit.record(
        session,
        actor=principal.actor,
        action="imaging.study.read",
        action_type="R",
        resource_type="ImagingStudy",
        resource_id=study.id,
        patient_ids=[study.patient_id] if study.patient_id else [],
        purpose=principal.purpose,
    )
    return study


def _finding(session: Session, audit: AuditLog, principal: Principal, finding_id: str) -> ai.ImagingFinding:
    finding = session.get(ai.ImagingFinding, finding_id)
    if finding is None:
        raise NotFound(f"no finding {finding_id}")
    read_study(session, audit, principal, finding.study_id)
    return finding


class FindingOut(ResponseModel):
    id: str
    task: str
    model_version: str
    label: str
    probability: float
    score: float
    threshold: float
    positive: bool
    probabilities: dict[str, float]
    review: str
    reviewed_label: str
    instance_uid: str


class StudyOut(ResponseModel):
    id: str
    study_instance_uid: str
    patient_id: str | None
    accession_number: str
    description: str
    modalities: str
    status: str
    ai_priority: float
    received_at: datetime
    findings: list[FindingOut]


def _finding_out(f: ai.ImagingFinding, instance_uid: str) -> FindingOut:
    return FindingOut(
        id=f.id,
        task=f.task,
        model_version=f.model_version,
        label=f.label,
        probability=f.probability,
        score=f.score,
        threshold=f.threshold,
        positive=f.positive,
        probabilities=f.probabilities,
        review=f.review,
        reviewed_label=f.reviewed_label,
        instance_uid=instance_uid,
    )


def _study_out(session: Session, study: ImagingStudy) -> StudyOut:
    rows = session.execute(
        select(ai.ImagingFinding, ImagingInstance.sop_instance_uid)
        .join(ImagingInstance, ImagingInstance.id == ai.ImagingFinding.instance_id)
        .where(ai.ImagingFinding.study_id == study.id)
        .order_by(ai.ImagingFinding.created_at)
    ).all()
    return StudyOut(
        id=study.id,
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient_id,
        accession_number=study.accession_number or "",
        description=study.description or "",
        modalities=study.modalities or "",
        status=study.status,
        ai_priority=study.ai_priority or 0.0,
        received_at=study.received_at,
        findings=[_finding_out(f, uid) for f, uid in rows],
    )


@api.get("/worklist", summary="Studies, most urgent AI finding first, then the longest wait")
def read_worklist(kernel: KernelDep, session: DbDep, principal: Reader) -> list[StudyOut]:
    rows = worklist(session, kernel.audit, principal)
    out = [_study_out(session, s) for s in rows]
    session.commit()
    return out


@api.get("/studies/{study_id}", summary="A study with its AI findings")
def get_study(kernel: KernelDep, session: DbDep, principal: Reader, study_id: Id) -> StudyOut:
    study = read_study(session, kernel.audit, principal, study_id)
    out = _study_out(session, study)
    session.commit()
    return out


class ReviewIn(RequestModel):
    verdict: Literal["confirmed", "corrected"]
    corrected_label: str = Field("", max_length=60)
    comment: str = Field("", max_length=500)


@api.post("/findings/{finding_id}/review", summary="Confirm or correct an AI finding (recorded as feedback)")
def review_finding(
    kernel: KernelDep, session: DbDep, principal: Writer, finding_id: Id, body: ReviewIn
) -> FindingOut:
    finding = _finding(session, kernel.audit, principal, finding_id)
    ai.review(
        session,
        kernel.audit,
        principal.actor,
        finding,
        verdict=body.verdict,
        corrected_label=body.corrected_label,
        comment=body.comment,
    )
    session.commit()
    instance = session.get(ImagingInstance, finding.instance_id)
    return _finding_out(finding, instance.sop_instance_uid if instance else "")


@api.get("/findings/{finding_id}/heatmap.png", summary="The finding's heatmap (PNG, the image's size)")
def heatmap(kernel: KernelDep, session: DbDep, principal: Reader, finding_id: Id) -> Response:
    finding = _finding(session, kernel.audit, principal, finding_id)
    session.commit()
    path = dicom_store(kernel).root / finding.heatmap_path
    if not finding.heatmap_path or not path.is_file():
        raise NotFound("this finding has no heatmap")
    return Response(
        path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"}
    )


# --- pages -------------------------------------------------------------------------------------------


@pages.get("")
def worklist_page(request: Request, kernel: KernelDep, session: DbDep, principal: Reader) -> HTMLResponse:
    rows = [_study_out(session, s) for s in worklist(session, kernel.audit, principal)]
    names = {
        p.id: p
        for p in session.scalars(
            select(Patient).where(Patient.id.in_([r.patient_id for r in rows if r.patient_id]))
        )
    }
    session.commit()
    return render(request, "imaging/worklist.html", {"rows": rows, "patients": names})


@pages.get("/studies/{study_id}")
def viewer_page(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, study_id: Id
) -> HTMLResponse:
    study = read_study(session, kernel.audit, principal, study_id)
    out = _study_out(session, study)
    rows = session.execute(
        select(ImagingInstance, ImagingSeries)
        .join(ImagingSeries, ImagingSeries.id == ImagingInstance.series_id)
        .where(ImagingSeries.study_id == study.id)
    ).all()
    read = {f.instance_uid for f in out.findings}
    # The image the AI read comes first, never the SR or heatmap capture Tianfu wrote back into the study.
    instances = sorted(
        rows,
        key=lambda r: (
            r[0].sop_instance_uid not in read,
            r[1].modality in ("SR", "OT"),
            r[1].series_number or 0,
            r[0].instance_number or 0,
        ),
    )
    patient = session.get(Patient, study.patient_id) if study.patient_id else None
    session.commit()
    return render(
        request,
        "imaging/viewer.html",
        {"study": out, "instances": instances, "patient": patient, "study_uid": study.study_instance_uid},
    )


@pages.post("/findings/{finding_id}/review")
def review_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    finding_id: Id,
    verdict: Annotated[Literal["confirmed", "corrected"], Form()],
    corrected_label: Annotated[str, Form(max_length=60)] = "",
    comment: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    finding = _finding(session, kernel.audit, principal, finding_id)
    ai.review(
        session,
        kernel.audit,
        principal.actor,
        finding,
        verdict=verdict,
        corrected_label=corrected_label,
        comment=comment,
    )
    session.commit()
    return redirect(f"/imaging/studies/{finding.study_id}")


@pages.post("/upload")
async def upload_form(
    kernel: KernelDep, session: DbDep, principal: Writer, file: Annotated[UploadFile, File()]
) -> Response:
    from tianfu.imaging.dicom.store import InvalidDicom, store_instance

    if principal.organization_id is None:
        raise Invalid("your account belongs to no institution to receive the study")
    data = await file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise Invalid("the file is larger than 64 MiB")
    try:
        result = store_instance(
            session,
            dicom_store(kernel),
            data,
            audit=kernel.audit,
            actor=principal.actor,
            source="upload",
            organization_id=principal.organization_id,
            purpose=principal.purpose,
        )
    except InvalidDicom as exc:
        raise Invalid(f"not a DICOM file Tianfu can store: {exc}") from exc
    session.commit()
    return redirect(f"/imaging/studies/{result.study_id}", "已接收 / received")
