"""Imaging at the FHIR edge (R4, validated with the R4B models): ImagingStudy and the AI's DiagnosticReport.

- ``GET /fhir/R4/ImagingStudy/{id}`` and ``?patient=``: a study, its series and instances, and a contained
  Endpoint for DICOMweb (``/api/v1/imaging/dicomweb``), where the images themselves are read.
- ``GET /fhir/R4/DiagnosticReport/{id}`` and ``?patient=``: the AI's findings on a study. The id is
  ``ai-<study id>`` (one AI report per study; the prefix keeps it apart from the doctors' reports that may
  be served here later). It is always ``preliminary``: an AI suggestion is never the signed opinion
  (imaging.md §2.1). One contained Observation per finding (the score, POS/NEG at the model's threshold,
  the model as ``method`` and as a contained ``Device``, the radiologist's review as a note); the
  conclusion says it in Chinese and English. A study without findings has no report (404).

Access is that of DICOMweb: clinical.read, then the care relationship for a matched study
(:func:`tianfu.imaging.dicomweb.open_study`); every read is audited ("R"). Errors are OperationOutcome.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy as FhirImagingStudy
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tianfu.core.errors import NotFound
from tianfu.core.fhir import translators
from tianfu.core.fhir.router import FHIR_ERRORS, FhirResponse, register_search, searchset
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.kernel import Kernel
from tianfu.core.patients.service import require_access
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal
from tianfu.imaging.dicomweb import open_study
from tianfu.imaging.findings import ImagingFinding
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

DICOMWEB_PATH = "/api/v1/imaging/dicomweb"
REPORT_PREFIX = "ai-"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REPORT_CODE_TEXT = "AI imaging triage (decision support, not for diagnosis)"
_RESOURCE = {
    "description": "A FHIR resource or Bundle",
    "content": {"application/fhir+json": {"schema": {"type": "object"}}},
}
_NOT_ID = re.compile(r"[^A-Za-z0-9.\-]")

fhir = APIRouter(
    prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse, responses=FHIR_ERRORS
)
Clinician = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Id = Annotated[str, Path(max_length=64)]
PatientRef = Annotated[str, Query(max_length=50)]
Count = Annotated[int, Query(alias="_count", ge=1, le=200)]
Offset = Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)]

register_search("ImagingStudy", ["patient"])
register_search("DiagnosticReport", ["patient"])


# --- pure translators ------------------------------------------------------------------------------------


def _fhir_id(text: str) -> str:
    return _NOT_ID.sub("-", text)[:64]


def _subject(study: ImagingStudy) -> dict[str, Any]:
    if study.patient_id:
        return {"reference": f"Patient/{study.patient_id}"}
    # Unmatched: ImagingStudy.subject is required, so name the patient as the modality sent it.
    subject: dict[str, Any] = {"type": "Patient", "display": study.dicom_patient_name or "unmatched patient"}
    if study.dicom_patient_id:
        subject["identifier"] = {"value": study.dicom_patient_id}
    return subject


def _coding(code: str) -> dict[str, Any]:
    return {"system": DCM, "code": code}


def imaging_study_resource(
    study: ImagingStudy,
    series_rows: Sequence[ImagingSeries],
    instances_by_series: dict[str, Sequence[ImagingInstance]],
    base_url: str,
) -> dict[str, Any]:
    """A study as an R4 ImagingStudy (validated), with a contained DICOMweb Endpoint."""
    identifiers: list[dict[str, Any]] = [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"}
    ]
    if study.accession_number:
        identifiers.append(
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
                },
                "value": study.accession_number,
            }
        )
    modalities = [m for m in study.modalities.split("\\") if m] or sorted(
        {s.modality for s in series_rows if s.modality}
    )
    series_out = []
    for s in series_rows:
        item: dict[str, Any] = {
            "uid": s.series_instance_uid,
            "modality": _coding(s.modality or "OT"),  # required in R4; OT = "other"
            "numberOfInstances": s.number_of_instances,
            "instance": [
                {
                    "uid": i.sop_instance_uid,
                    "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{i.sop_class_uid}"},
                    **({"number": i.instance_number} if i.instance_number is not None else {}),
                }
                for i in instances_by_series.get(s.id, ())
            ],
        }
        if s.series_number is not None:
            item["number"] = s.series_number
        if s.description:
            item["description"] = s.description
        if s.body_part:
            # DICOM Body Part Examined is a defined term, not yet mapped to SNOMED: display only.
            item["bodySite"] = {"display": s.body_part}
        series_out.append(item)
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": study.id,
        "contained": [
            {
                "resourceType": "Endpoint",
                "id": "dicomweb",
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "dicom-wado-rs",
                },
                "payloadType": [{"text": "DICOM"}],
                "payloadMimeType": ["application/dicom"],
                "address": base_url.rstrip("/") + DICOMWEB_PATH,
            }
        ],
        "identifier": identifiers,
        "status": "available",
        "subject": _subject(study),
        "endpoint": [{"reference": "#dicomweb"}],
        "numberOfSeries": study.number_of_series,
        "numberOfInstances": study.number_of_instances,
        "modality": [_coding(m) for m in modalities],
        "series": series_out,
    }
    if study.study_date:
        # The study time is the modality's local time without a zone, which FHIR dateTime cannot carry.
        resource["started"] = study.study_date.isoformat()
    if study.description:
        resource["description"] = study.description
    if study.referring_physician:
        resource["referrer"] = {"display": study.referring_physician}
    return translators.dump(FhirImagingStudy.model_validate(resource))


def _when(moment: datetime) -> str:
    # SQLite hands back naive values for UTC columns; they are UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def _review_text(f: ImagingFinding) -> tuple[str, str]:
    """The radiologist's review in (Chinese, English); empty when not reviewed."""
    if not f.review:
        return "", ""
    if f.review == "confirmed":
        return "医师已确认", "confirmed by a radiologist"
    return f"医师已更正为 {f.reviewed_label}", f"corrected by a radiologist to {f.reviewed_label}"


def _device(f: ImagingFinding) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": _fhir_id(f"device-{f.task}-{f.model_version}"),
        "deviceName": [{"name": f"tianfu imaging-{f.task}", "type": "model-name"}],
        "version": [{"value": f.model_version or "unknown"}],
        "manufacturer": "Tianfu",
        "note": [{"text": "AI model: decision support, not for diagnosis"}],
    }


def _observation(study: ImagingStudy, f: ImagingFinding, device_id: str) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _fhir_id(f"finding-{f.id}"),
        "status": "preliminary",
        "code": {"text": f"{f.task}, AI probability"},
        "subject": _subject(study) if study.patient_id else None,
        "effectiveDateTime": _when(f.created_at),
        "derivedFrom": [{"reference": f"ImagingStudy/{study.id}"}],
        "valueQuantity": {"value": round(f.score, 4), "system": UCUM, "code": "1"},
        "interpretation": [
            {
                "coding": [{"system": INTERPRETATION, "code": "POS" if f.positive else "NEG"}],
                "text": f"{f.label} ({'at or above' if f.positive else 'below'} threshold {f.threshold:g})",
            }
        ],
        "method": {"text": f"tianfu imaging-{f.task} {f.model_version}, threshold {f.threshold:g}"},
        "device": {"reference": f"#{device_id}"},
    }
    if f.review:
        zh, en = _review_text(f)
        note: dict[str, Any] = {"text": f"{en}; {zh}" + (f": {f.review_comment}" if f.review_comment else "")}
        if f.reviewed_at:
            note["time"] = _when(f.reviewed_at)
        observation["note"] = [note]
    return {k: v for k, v in observation.items() if v is not None}


def conclusion(findings: Sequence[ImagingFinding]) -> str:
    """One sentence in Chinese, one in English: each finding, its score and threshold, and any review."""
    zh_parts, en_parts = [], []
    for f in findings:
        zh_review, en_review = _review_text(f)
        zh_parts.append(
            f"{f.task} {'阳性' if f.positive else '阴性'}（得分 {f.score:.2f}，阈值 {f.threshold:.2f}"
            + (f"，{zh_review}" if zh_review else "")
            + "）"
        )
        en_parts.append(
            f"{f.task} {'positive' if f.positive else 'negative'} (score {f.score:.2f}, threshold "
            f"{f.threshold:.2f}" + (f", {en_review}" if en_review else "") + ")"
        )
    return (
        "AI 辅助分诊（仅供参考，不作诊断）：" + "；".join(zh_parts) + "。"
        " AI triage (decision support, not for diagnosis): " + "; ".join(en_parts) + "."
    )


def diagnostic_report_resource(study: ImagingStudy, findings: Sequence[ImagingFinding]) -> dict[str, Any]:
    """The AI's findings on a study as a preliminary DiagnosticReport with contained Observations."""
    devices: dict[str, dict[str, Any]] = {}
    observations = []
    for f in findings:
        device = _device(f)
        devices.setdefault(device["id"], device)
        observations.append(_observation(study, f, device["id"]))
    positive = [f for f in findings if f.positive]
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id(study.id),
        "contained": [*observations, *devices.values()],
        "status": "preliminary",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}
        ],
        "code": {"text": REPORT_CODE_TEXT},
        "issued": _when(max(f.created_at for f in findings)) if findings else None,
        "imagingStudy": [{"reference": f"ImagingStudy/{study.id}"}],
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": conclusion(findings) if findings else None,
        "conclusionCode": [{"text": f"{f.task}: {f.label}"} for f in positive] or None,
    }
    if study.patient_id:
        resource["subject"] = _subject(study)
    if study.study_date:
        resource["effectiveDateTime"] = study.study_date.isoformat()
    return translators.dump(
        DiagnosticReport.model_validate({k: v for k, v in resource.items() if v is not None})
    )


def report_id(study_id: str) -> str:
    return f"{REPORT_PREFIX}{study_id}"


# --- reading -----------------------------------------------------------------------------------------------


def _series_and_instances(
    session: Session, study: ImagingStudy
) -> tuple[list[ImagingSeries], dict[str, Sequence[ImagingInstance]]]:
    series = list(
        session.scalars(
            select(ImagingSeries)
            .where(ImagingSeries.study_id == study.id)
            .order_by(ImagingSeries.series_number, ImagingSeries.received_at)
        )
    )
    instances: dict[str, list[ImagingInstance]] = {s.id: [] for s in series}
    if series:
        for instance in session.scalars(
            select(ImagingInstance)
            .where(ImagingInstance.series_id.in_(instances))
            .order_by(ImagingInstance.instance_number, ImagingInstance.received_at)
        ):
            instances[instance.series_id].append(instance)
    return series, dict(instances)


def _findings(session: Session, study_id: str) -> list[ImagingFinding]:
    return list(
        session.scalars(
            select(ImagingFinding)
            .where(ImagingFinding.study_id == study_id)
            .order_by(ImagingFinding.created_at, ImagingFinding.task)
        )
    )


def _open(
    session: Session, kernel: Kernel, principal: Principal, study_id: str, action: str
) -> tuple[ImagingStudy, str]:
    found = session.get(ImagingStudy, study_id)
    if found is None:
        raise NotFound(f"no ImagingStudy/{study_id}")
    return open_study(session, kernel, principal, found.study_instance_uid, action=action)


def _audit(
    session: Session,
    kernel: Kernel,
    principal: Principal,
    *,
    action: str,
    resource_type: str,
    studies: Sequence[ImagingStudy],
    purpose: str,
    resource_id: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    kernel.audit.record(
        session,
        actor=principal.actor,
        action=action,
        action_type="R",
        resource_type=resource_type,
        resource_id=resource_id,
        patient_ids=sorted({s.patient_id for s in studies if s.patient_id}),
        purpose=purpose,
        detail=detail,
    )
    session.commit()


def _patient_studies(
    session: Session, kernel: Kernel, principal: Principal, patient: str, action: str, *, with_findings: bool
) -> tuple[str, str, Any]:
    patient_id = patient.removeprefix("Patient/")
    _, decision = require_access(session, kernel.audit, principal, patient_id, action=action)
    stmt = select(ImagingStudy).where(ImagingStudy.patient_id == patient_id)
    if with_findings:
        stmt = stmt.where(ImagingStudy.id.in_(select(ImagingFinding.study_id)))
    return (
        patient_id,
        decision.purpose,
        stmt.order_by(ImagingStudy.study_date.desc(), ImagingStudy.received_at.desc()),
    )


def _page(session: Session, stmt: Any, count: int, offset: int) -> tuple[list[ImagingStudy], int]:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    return list(session.scalars(stmt.limit(count).offset(offset))), total


@fhir.get("/ImagingStudy", responses={200: _RESOURCE}, summary="Search ImagingStudy of a patient")
def search_imaging_study(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Clinician,
    patient: PatientRef,
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    action = "imaging.fhir_search"
    patient_id, purpose, stmt = _patient_studies(
        session, kernel, principal, patient, action, with_findings=False
    )
    studies, total = _page(session, stmt, count, offset)
    base = str(request.base_url)
    resources = [imaging_study_resource(s, *_series_and_instances(session, s), base) for s in studies]
    _audit(
        session,
        kernel,
        principal,
        action=action,
        resource_type="ImagingStudy",
        studies=studies,
        purpose=purpose,
        detail={"patient_id": patient_id, "returned": len(studies)},
    )
    return searchset(request, "ImagingStudy", resources, total, count, offset)


@fhir.get("/ImagingStudy/{study_id}", responses={200: _RESOURCE}, summary="Read ImagingStudy")
def read_imaging_study(
    request: Request, kernel: KernelDep, session: DbDep, principal: Clinician, study_id: Id
) -> FhirResponse:
    action = "imaging.fhir_read"
    study, purpose = _open(session, kernel, principal, study_id, action)
    resource = imaging_study_resource(study, *_series_and_instances(session, study), str(request.base_url))
    _audit(
        session,
        kernel,
        principal,
        action=action,
        resource_type="ImagingStudy",
        studies=[study],
        purpose=purpose,
        resource_id=study.study_instance_uid,
    )
    return FhirResponse(resource)


@fhir.get(
    "/DiagnosticReport", responses={200: _RESOURCE}, summary="Search the AI's DiagnosticReports of a patient"
)
def search_diagnostic_report(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Clinician,
    patient: PatientRef,
    count: Count = 50,
    offset: Offset = 0,
) -> FhirResponse:
    action = "imaging.fhir_report_search"
    patient_id, purpose, stmt = _patient_studies(
        session, kernel, principal, patient, action, with_findings=True
    )
    studies, total = _page(session, stmt, count, offset)
    resources = [diagnostic_report_resource(s, _findings(session, s.id)) for s in studies]
    _audit(
        session,
        kernel,
        principal,
        action=action,
        resource_type="DiagnosticReport",
        studies=studies,
        purpose=purpose,
        detail={"patient_id": patient_id, "returned": len(studies)},
    )
    return searchset(request, "DiagnosticReport", resources, total, count, offset)


@fhir.get(
    "/DiagnosticReport/{report}",
    responses={200: _RESOURCE},
    summary="Read the AI's DiagnosticReport of a study",
)
def read_diagnostic_report(
    kernel: KernelDep, session: DbDep, principal: Clinician, report: Id
) -> FhirResponse:
    if not report.startswith(REPORT_PREFIX):
        raise NotFound(f"no DiagnosticReport/{report}")
    action = "imaging.fhir_report_read"
    study, purpose = _open(session, kernel, principal, report.removeprefix(REPORT_PREFIX), action)
    findings = _findings(session, study.id)
    if not findings:
        raise NotFound(f"no DiagnosticReport/{report}: the AI has not read this study")
    resource = diagnostic_report_resource(study, findings)
    _audit(
        session,
        kernel,
        principal,
        action=action,
        resource_type="DiagnosticReport",
        studies=[study],
        purpose=purpose,
        resource_id=report,
        detail={"findings": len(findings)},
    )
    return FhirResponse(resource)
