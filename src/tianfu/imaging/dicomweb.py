"""DICOMweb (PS3.18) over the imaging index: STOW-RS, QIDO-RS and WADO-RS, under ``/dicomweb``.

- STOW-RS ``POST /studies[/{study}]``: ``multipart/related; type="application/dicom"``, one PS3.10 file per
  part. Answers 200 (all stored), 202 (some failed) or 409 (none stored) with the Store Instances Response
  (application/dicom+json): Referenced SOP Sequence, and Failed SOP Sequence with a Failure Reason per
  refused instance (the DIMSE statuses of :mod:`tianfu.imaging.dicom.store`; 0x0124 when the caller may not
  add images for that patient). The reason in words goes into ``Warning`` headers.
- QIDO-RS ``GET /studies``, ``/studies/{study}/series``, ``/studies/{study}/series/{series}/instances``:
  application/dicom+json. Keys: PatientID, PatientName (``*`` and ``?`` wildcards), StudyDate
  (``YYYYMMDD``, or a range ``A-B``, ``A-``, ``-B``), ModalitiesInStudy, AccessionNumber, StudyInstanceUID
  (comma-separated list); Modality and SeriesInstanceUID for series; SOPInstanceUID for instances;
  ``limit`` and ``offset``. Other keys are ignored. No match: 200 with ``[]``.
- WADO-RS ``GET /studies/{study}[/series/{series}[/instances/{instance}]]``: multipart/related of
  application/dicom parts, as stored when the client accepts ``transfer-syntax=*`` (or sends no Accept),
  else Explicit VR Little Endian (the standard's default; compressed images are decompressed).
  ``.../instances/{instance}/rendered``: the first frame as image/png (``window=center,width[,function]``).
- WADO-RS metadata ``GET /studies/{study}[/series/{series}[/instances/{instance}]]/metadata``: the DICOM
  JSON model of each instance (application/dicom+json). Pixel data, and other binary values over 1 KiB, are
  a BulkDataURI ``.../instances/{instance}/bulkdata/{tag}[/{item}/{tag}...]``, which answers the value as
  one application/octet-stream part (pixel data: one part per frame, as the frames resource does).
- WADO-RS frames ``.../instances/{instance}/frames/{1,2,...}``: ``multipart/related;
  type="application/octet-stream"``, one part per frame. By default native little-endian pixels
  (compressed frames are decoded; YBR colour comes back RGB, as pydicom decodes it); with
  ``transfer-syntax=*`` each frame as stored, a compressed one still compressed, its part's content type
  naming its transfer syntax. A frame list that is not numbers from 1 is 400, a frame past the last 404.

Access: reading needs clinical.read, storing clinical.write. A study matched to a patient follows the care
relationship (:func:`tianfu.core.patients.service.require_access`); an unmatched one is visible to the
nurses, physicians and radiologists of the institution that received it (consultants see only what is
shared with them). Every answer is audited: "R" for reads, "C" for stores.
"""

from __future__ import annotations

import email.message
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path as FilePath
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE
from tianfu.core.deadletter import service as deadletters
from tianfu.core.errors import DomainError, Forbidden, Invalid, NotFound
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES, ProblemDetail
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Patient
from tianfu.core.patients.service import require_access
from tianfu.core.security import access
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal
from tianfu.imaging.dicom import get_dicom_settings, pixels
from tianfu.imaging.dicom.store import (
    DOES_NOT_MATCH,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    UID_PATTERN,
    InvalidDicom,
    dicom_store,
    read_part10,
    store_instance,
)
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

log = logging.getLogger(__name__)

PREFIX = "/api/v1/imaging/dicomweb"
DICOM_JSON = "application/dicom+json"
DEAD_LETTER_SOURCE = "dicomweb-stow"
# Roles that see the unmatched studies of their own institution (a consultant sees only what is shared).
UNMATCHED_ROLES = frozenset({Role.NURSE, Role.PHYSICIAN, Role.RADIOLOGIST})


class UnsupportedMediaType(DomainError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class NotAcceptable(DomainError):
    status = 406
    slug = "not-acceptable"
    title = "Not acceptable"


class TooLarge(DomainError):
    status = 413
    slug = "too-large"
    title = "Request body too large"


def _problem(description: str) -> dict[str, Any]:
    return {
        "model": ProblemDetail,
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
    }


_JSON_ARRAY = {
    "description": "Matching objects (PS3.18 F.2 DICOM JSON)",
    "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
}
_STORE_RESPONSE = {"content": {DICOM_JSON: {"schema": {"type": "object"}}}}
_MULTIPART = {
    "description": "The instances, one application/dicom part each",
    "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    406: _problem("Not acceptable"),
    415: _problem("Unsupported media type"),
}

router = APIRouter(prefix=PREFIX, tags=["DICOMweb"], responses=_ERRORS)

Reader = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Writer = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
StudyUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
SeriesUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
InstanceUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


# --- access ------------------------------------------------------------------------------------------------


def sees_unmatched(principal: Principal, organization_id: str | None = None) -> bool:
    if principal.organization_id is None or principal.role not in UNMATCHED_ROLES:
        return False
    return organization_id is None or organization_id == principal.organization_id


def visible_studies(principal: Principal) -> ColumnElement[bool]:
    """A WHERE clause on ImagingStudy selecting the studies this caller may see."""
    matched = ImagingStudy.patient_id.in_(select(Patient.id).where(access.visible_patients(principal)))
    if not sees_unmatched(principal):
        return matched
    unmatched = and_(
        ImagingStudy.patient_id.is_(None), ImagingStudy.organization_id == principal.organization_id
    )
    return or_(matched, unmatched)


def open_study(
    session: Session, kernel: Kernel, principal: Principal, study_uid: str, *, action: str
) -> tuple[ImagingStudy, str]:
    """The study and the purpose of use, if the caller may see it; a refusal on a patient is audited."""
    study = session.scalars(
        select(ImagingStudy).where(ImagingStudy.study_instance_uid == study_uid)
    ).one_or_none()
    if study is None:
        raise NotFound(f"no study {study_uid}")
    if study.patient_id is not None:
        _, decision = require_access(session, kernel.audit, principal, study.patient_id, action=action)
        return study, decision.purpose
    if not sees_unmatched(principal, study.organization_id):
        raise NotFound(
            f"no study {study_uid}"
        )  # another institution's unmatched study: not even its existence
    return study, principal.purpose


def _audit_read(
    session: Session,
    kernel: Kernel,
    principal: Principal,
    *,
    action: str,
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
        resource_type="ImagingStudy",
        resource_id=resource_id,
        patient_ids=[s.patient_id for s in studies if s.patient_id],
        purpose=purpose,
        detail=detail,
    )
    session.commit()


# --- DICOM JSON (PS3.18 F.2) -------------------------------------------------------------------------------


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    kept = [v for v in values if v is not None and v != ""]
    return {"vr": vr, "Value": kept} if kept else {"vr": vr}


def _pn(name: str) -> dict[str, Any]:
    if not name:
        return {"vr": "PN"}
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), name.split("="), strict=False))
    return {"vr": "PN", "Value": [{k: v for k, v in groups.items() if v}]}


def _study_json(study: ImagingStudy, base: str) -> dict[str, Any]:
    uid = study.study_instance_uid
    return {
        "00080020": _attr("DA", study.study_date.strftime("%Y%m%d") if study.study_date else None),
        "00080030": _attr("TM", study.study_time),
        "00080050": _attr("SH", study.accession_number),
        "00080061": _attr("CS", *study.modalities.split("\\")),
        "00080090": _pn(study.referring_physician),
        "00081030": _attr("LO", study.description),
        "00081190": _attr("UR", f"{base}/studies/{uid}"),
        "00100010": _pn(study.dicom_patient_name),
        "00100020": _attr("LO", study.dicom_patient_id),
        "00100030": _attr("DA", study.dicom_patient_birth_date),
        "00100040": _attr("CS", study.dicom_patient_sex),
        "0020000D": _attr("UI", uid),
        "00200010": _attr("SH", study.dicom_study_id),
        "00201206": _attr("IS", study.number_of_series),
        "00201208": _attr("IS", study.number_of_instances),
    }


def _series_json(study: ImagingStudy, series: ImagingSeries, base: str) -> dict[str, Any]:
    url = f"{base}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
    return {
        "00080060": _attr("CS", series.modality),
        "0008103E": _attr("LO", series.description),
        "00081190": _attr("UR", url),
        "00180015": _attr("CS", series.body_part),
        "0020000D": _attr("UI", study.study_instance_uid),
        "0020000E": _attr("UI", series.series_instance_uid),
        "00200011": _attr("IS", series.series_number),
        "00201209": _attr("IS", series.number_of_instances),
    }


def _instance_json(
    study: ImagingStudy, series: ImagingSeries, instance: ImagingInstance, base: str
) -> dict[str, Any]:
    url = (
        f"{base}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    return {
        "00080016": _attr("UI", instance.sop_class_uid),
        "00080018": _attr("UI", instance.sop_instance_uid),
        "00081190": _attr("UR", url),
        "00083002": _attr("UI", instance.transfer_syntax_uid),
        "0020000D": _attr("UI", study.study_instance_uid),
        "0020000E": _attr("UI", series.series_instance_uid),
        "00200013": _attr("IS", instance.instance_number),
        "00280008": _attr("IS", instance.number_of_frames),
        "00280010": _attr("US", instance.rows),
        "00280011": _attr("US", instance.columns),
    }


def _dicom_json(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status_code, media_type=DICOM_JSON, headers=headers)


def _base(request: Request) -> str:
    """The DICOMweb root URL as this request reached it, wherever the router is mounted."""
    path = request.url.path  # every route lies under <root>/studies, and a UID cannot contain "/studies"
    mount = path[: path.index("/studies")] if "/studies" in path else PREFIX
    return f"{request.url.scheme}://{request.url.netloc}{mount}"


def _check_json_accept(request: Request) -> None:
    accept = request.headers.get("accept", "").lower()
    if not accept:
        return
    if not any(t in accept for t in (DICOM_JSON, "application/json", "application/*", "*/*")):
        raise NotAcceptable("searches and metadata are answered in application/dicom+json")


# --- QIDO-RS -----------------------------------------------------------------------------------------------


def _like(pattern: str) -> str:
    """DICOM wildcard matching (PS3.4 C.2.2.2.4) as SQL LIKE: * any run, ? one character."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _date_range(value: str) -> tuple[date | None, date | None]:
    match = re.fullmatch(r"(\d{8})?(-)?(\d{8})?", value.strip())
    if not match or not (match.group(1) or match.group(3)) or (match.group(3) and not match.group(2)):
        raise Invalid("StudyDate must be YYYYMMDD, or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-")

    def parse(text: str | None) -> date | None:
        if not text:
            return None
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError as exc:
            raise Invalid(f"StudyDate {text} is not a date") from exc

    start, end = parse(match.group(1)), parse(match.group(3))
    if match.group(2) is None:
        end = start
    return start, end


def _uid_list(value: str) -> list[str]:
    uids = [u.strip() for u in re.split(r"[,\\]", value) if u.strip()]
    if not uids or len(uids) > 100 or any(not re.fullmatch(UID_PATTERN, u) or len(u) > 64 for u in uids):
        raise Invalid("expected up to 100 UIDs, separated by commas")
    return uids


@router.get("/studies", responses={200: _JSON_ARRAY}, summary="QIDO-RS: search for studies")
def search_studies(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    patient_id: Annotated[str | None, Query(alias="PatientID", max_length=64)] = None,
    patient_name: Annotated[str | None, Query(alias="PatientName", max_length=200)] = None,
    study_date: Annotated[str | None, Query(alias="StudyDate", max_length=17)] = None,
    modalities: Annotated[str | None, Query(alias="ModalitiesInStudy", max_length=64)] = None,
    accession_number: Annotated[str | None, Query(alias="AccessionNumber", max_length=16)] = None,
    study_uids: Annotated[str | None, Query(alias="StudyInstanceUID", max_length=6600)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    _check_json_accept(request)
    query: Select[ImagingStudy] = select(ImagingStudy).where(visible_studies(principal))
    if patient_id:
        query = query.where(ImagingStudy.dicom_patient_id.like(_like(patient_id), escape="\\"))
    if patient_name:
        query = query.where(ImagingStudy.dicom_patient_name.ilike(_like(patient_name), escape="\\"))
    if study_date:
        start, end = _date_range(study_date)
        if start:
            query = query.where(ImagingStudy.study_date >= start)
        if end:
            query = query.where(ImagingStudy.study_date <= end)
    if modalities:
        wanted = [m.strip().upper() for m in re.split(r"[,\\]", modalities) if m.strip()]
        if wanted:
            query = query.where(
                exists().where(ImagingSeries.study_id == ImagingStudy.id, ImagingSeries.modality.in_(wanted))
            )
    if accession_number:
        query = query.where(ImagingStudy.accession_number == accession_number)
    if study_uids:
        query = query.where(ImagingStudy.study_instance_uid.in_(_uid_list(study_uids)))
    studies = session.scalars(
        query.order_by(
            ImagingStudy.study_date.desc().nulls_last(), ImagingStudy.received_at.desc(), ImagingStudy.id
        )
        .limit(limit)
        .offset(offset)
    ).all()
    keys = sorted(k for k in request.query_params if k not in {"limit", "offset"})
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.study.search",
        studies=studies,
        purpose=principal.purpose,
        detail={"keys": keys[:20], "results": len(studies)},
    )
    base = _base(request)
    return _dicom_json([_study_json(s, base) for s in studies])


@router.get(
    "/studies/{study_uid}/series", responses={200: _JSON_ARRAY}, summary="QIDO-RS: the series of a study"
)
def search_series(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    modality: Annotated[str | None, Query(alias="Modality", max_length=16)] = None,
    series_uids: Annotated[str | None, Query(alias="SeriesInstanceUID", max_length=6600)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    _check_json_accept(request)
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.series.search")
    query = select(ImagingSeries).where(ImagingSeries.study_id == study.id)
    if modality:
        query = query.where(ImagingSeries.modality == modality.upper())
    if series_uids:
        query = query.where(ImagingSeries.series_instance_uid.in_(_uid_list(series_uids)))
    rows = session.scalars(
        query.order_by(ImagingSeries.series_number.is_(None), ImagingSeries.series_number, ImagingSeries.id)
        .limit(limit)
        .offset(offset)
    ).all()
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.series.search",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"results": len(rows)},
    )
    base = _base(request)
    return _dicom_json([_series_json(study, s, base) for s in rows])


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances",
    responses={200: _JSON_ARRAY},
    summary="QIDO-RS: the instances of a series",
)
def search_instances(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
    sop_instance_uids: Annotated[str | None, Query(alias="SOPInstanceUID", max_length=6600)] = None,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> Response:
    _check_json_accept(request)
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.instance.search")
    series = _series_of(session, study, series_uid)
    query = select(ImagingInstance).where(ImagingInstance.series_id == series.id)
    if sop_instance_uids:
        query = query.where(ImagingInstance.sop_instance_uid.in_(_uid_list(sop_instance_uids)))
    rows = session.scalars(
        query.order_by(
            ImagingInstance.instance_number.is_(None), ImagingInstance.instance_number, ImagingInstance.id
        )
        .limit(limit)
        .offset(offset)
    ).all()
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.instance.search",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"series_instance_uid": series_uid, "results": len(rows)},
    )
    base = _base(request)
    return _dicom_json([_instance_json(study, series, i, base) for i in rows])


def _series_of(session: Session, study: ImagingStudy, series_uid: str) -> ImagingSeries:
    series = session.scalars(
        select(ImagingSeries).where(
            ImagingSeries.series_instance_uid == series_uid, ImagingSeries.study_id == study.id
        )
    ).one_or_none()
    if series is None:
        raise NotFound(f"no series {series_uid} in study {study.study_instance_uid}")
    return series


def _instance_of(session: Session, series: ImagingSeries, sop_uid: str) -> ImagingInstance:
    instance = session.scalars(
        select(ImagingInstance).where(
            ImagingInstance.sop_instance_uid == sop_uid, ImagingInstance.series_id == series.id
        )
    ).one_or_none()
    if instance is None:
        raise NotFound(f"no instance {sop_uid} in series {series.series_instance_uid}")
    return instance


# --- WADO-RS -----------------------------------------------------------------------------------------------


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";") if p.strip()]
        if not parts:
            continue
        params = {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append((parts[0].lower(), params))
    return ranges


def wanted_syntax(accept: str) -> str | None:
    """The transfer syntax to answer WADO-RS in: None for "as stored". Raises NotAcceptable."""
    if not accept.strip():
        return None
    for media, params in _media_ranges(accept):
        if media in {"*/*", "multipart/*"}:
            return params.get("transfer-syntax") if params.get("transfer-syntax", "*") != "*" else None
        if media in {"multipart/related", "application/dicom"}:
            if params.get("type", "application/dicom").lower() != "application/dicom":
                continue
            syntax = params.get("transfer-syntax", str(ExplicitVRLittleEndian))
            return None if syntax == "*" else syntax
    raise NotAcceptable('WADO-RS answers multipart/related; type="application/dicom"')


def _as_syntax(data: bytes, stored: str, wanted: str | None) -> tuple[bytes, str]:
    if wanted is None or wanted == stored:
        return data, stored
    if wanted != str(ExplicitVRLittleEndian):
        raise NotAcceptable(f"instances are available as stored ({stored}) or in Explicit VR Little Endian")
    try:
        ds = dcmread(io.BytesIO(data))
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            # The same instance in another encoding: it keeps its UID (PS3.18 8.7.3.5).
            ds.decompress(generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise NotAcceptable(
            f"this instance cannot be sent uncompressed ({exc}); ask for transfer-syntax=*"
        ) from exc
    return buffer.getvalue(), str(ExplicitVRLittleEndian)


def _multipart(files: Sequence[tuple[FilePath, str]], wanted: str | None, boundary: str) -> Iterator[bytes]:
    for path, stored in files:
        try:
            data, syntax = _as_syntax(path.read_bytes(), stored, wanted)
        except (DomainError, OSError) as exc:
            # The status line has gone out already: leave this instance out rather than break the body.
            log.error("WADO-RS: %s left out of the response: %s", path.name, exc)
            continue
        yield f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n".encode()
        yield data
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _retrieve(
    request: Request,
    kernel: Kernel,
    instances: Sequence[ImagingInstance],
) -> StreamingResponse:
    wanted = wanted_syntax(request.headers.get("accept", ""))
    store = dicom_store(kernel)
    files = []
    for instance in instances:
        path = store.path(instance.storage_path)
        if path.is_file():
            files.append((path, instance.transfer_syntax_uid))
        else:
            log.error("DICOM file of instance %s is missing: %s", instance.sop_instance_uid, path)
    if not files:
        raise NotFound("the requested instances' files are missing from the DICOM store")
    if len(files) == 1:  # one instance: transcode before answering, so a failure is a clean 406
        data, syntax = _as_syntax(files[0][0].read_bytes(), files[0][1], wanted)
        boundary = uuid.uuid4().hex
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        return StreamingResponse(iter([body]), media_type=_multipart_type(boundary))
    boundary = uuid.uuid4().hex
    return StreamingResponse(_multipart(files, wanted, boundary), media_type=_multipart_type(boundary))


def _multipart_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


@router.get("/studies/{study_uid}", responses={200: _MULTIPART}, summary="WADO-RS: all instances of a study")
def retrieve_study(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, study_uid: StudyUid
) -> StreamingResponse:
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.study.retrieve")
    instances = session.scalars(
        select(ImagingInstance)
        .join(ImagingSeries, ImagingSeries.id == ImagingInstance.series_id)
        .where(ImagingSeries.study_id == study.id)
        .order_by(ImagingSeries.series_number, ImagingInstance.instance_number, ImagingInstance.id)
    ).all()
    response = _retrieve(request, kernel, instances)
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.study.retrieve",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"instances": len(instances)},
    )
    return response


@router.get(
    "/studies/{study_uid}/series/{series_uid}",
    responses={200: _MULTIPART},
    summary="WADO-RS: all instances of a series",
)
def retrieve_series(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
) -> StreamingResponse:
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.series.retrieve")
    series = _series_of(session, study, series_uid)
    instances = session.scalars(
        select(ImagingInstance)
        .where(ImagingInstance.series_id == series.id)
        .order_by(ImagingInstance.instance_number, ImagingInstance.id)
    ).all()
    response = _retrieve(request, kernel, instances)
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.series.retrieve",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"series_instance_uid": series_uid, "instances": len(instances)},
    )
    return response


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}",
    responses={200: _MULTIPART},
    summary="WADO-RS: one instance",
)
def retrieve_instance(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
    instance_uid: InstanceUid,
) -> StreamingResponse:
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.instance.retrieve")
    instance = _instance_of(session, _series_of(session, study, series_uid), instance_uid)
    response = _retrieve(request, kernel, [instance])
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.instance.retrieve",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"sop_instance_uid": instance_uid},
    )
    return response


_WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def _window(value: str | None) -> pixels.Window | None:
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError) as exc:
        raise Invalid("window must be center,width[,linear|linear-exact|sigmoid]") from exc
    function = _WINDOW_FUNCTIONS.get(parts[2].lower() if len(parts) > 2 else "linear")
    if function is None or len(parts) > 3 or width <= 0 or (function == "LINEAR" and width < 1):
        raise Invalid("window must be center,width[,linear|linear-exact|sigmoid] with a positive width")
    return pixels.Window(center, width, function)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/rendered",
    responses={200: {"description": "The first frame", "content": {"image/png": {}}}},
    summary="WADO-RS: an instance rendered as PNG (first frame)",
)
def rendered_instance(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
    instance_uid: InstanceUid,
    window: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    accept = request.headers.get("accept", "").lower()
    if accept and not any(t in accept for t in ("image/png", "image/*", "*/*")):
        raise NotAcceptable("rendered instances are image/png")
    chosen = _window(window)
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.instance.render")
    instance = _instance_of(session, _series_of(session, study, series_uid), instance_uid)
    path = dicom_store(kernel).path(instance.storage_path)
    if not path.is_file():
        raise NotFound(f"the file of instance {instance_uid} is missing from the DICOM store")
    try:
        png = pixels.to_png(pixels.render(dcmread(path), window=chosen))
    except pixels.PixelDataError as exc:
        raise Invalid(f"this instance cannot be rendered: {exc}") from exc
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.instance.render",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"sop_instance_uid": instance_uid},
    )
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})


# --- WADO-RS metadata, frames and bulk data (what OHIF and other web viewers ask for) ----------------------

# Binary values longer than this are referenced by a BulkDataURI instead of inlined (pydicom's default).
BULK_DATA_THRESHOLD = 1024
OCTET_STREAM = "application/octet-stream"
# Pixel data is always a BulkDataURI, however small: viewers fetch its frames, never inline base64.
PIXEL_DATA_TAGS = ("7FE00008", "7FE00009", "7FE00010")
PIXEL_DATA = "7FE00010"
MAX_FRAMES_PER_REQUEST = 10_000
_BULK_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*$")
_FRAMES = {
    "description": "One part per requested frame",
    "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}},
}
_JSON_METADATA = {
    "description": "The instances' attributes (PS3.18 F.2 DICOM JSON), bulk data as BulkDataURI",
    "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
}


class InvalidFrameList(DomainError):
    status = 400
    slug = "invalid-frame-list"
    title = "Invalid frame list"


def instance_metadata(ds: Dataset, url: str, transfer_syntax: str) -> dict[str, Any]:
    """The DICOM JSON model of one instance (PS3.18 F.2): binary values over
    :data:`BULK_DATA_THRESHOLD` bytes, and the pixel data always, as a BulkDataURI under
    ``<url>/bulkdata/<tag>[/<item>/<tag>...]``."""
    # pydicom's handler gets only the element, so the path of each (nested) element is found first; the
    # conversion visits the very same element objects.
    paths: dict[int, str] = {}

    def index(dataset: Dataset, prefix: str) -> None:
        for element in dataset:
            tag = f"{element.tag:08X}"
            if element.VR == "SQ":
                for number, item in enumerate(element.value):
                    index(item, f"{prefix}{tag}/{number}/")
            else:
                paths[id(element)] = prefix + tag

    index(ds, "")

    def bulk_data_uri(element: DataElement) -> str:
        return f"{url}/bulkdata/{paths.get(id(element), f'{element.tag:08X}')}"

    model: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=BULK_DATA_THRESHOLD,
        bulk_data_element_handler=bulk_data_uri,
        suppress_invalid_tags=True,  # one unreadable private value must not hide the whole instance
    )
    for tag in PIXEL_DATA_TAGS:
        if tag in model:
            model[tag] = {"vr": model[tag]["vr"], "BulkDataURI": f"{url}/bulkdata/{tag}"}
    model["00081190"] = _attr("UR", url)
    model["00083002"] = _attr("UI", transfer_syntax)
    return model


def _instance_url(base: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return f"{base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def _read(kernel: Kernel, instance: ImagingInstance) -> Dataset:
    path = dicom_store(kernel).path(instance.storage_path)
    if not path.is_file():
        raise NotFound(f"the file of instance {instance.sop_instance_uid} is missing from the DICOM store")
    return dcmread(path)


def _metadata(
    request: Request,
    kernel: Kernel,
    study: ImagingStudy,
    rows: Sequence[tuple[ImagingSeries, ImagingInstance]],
) -> list[dict[str, Any]]:
    base = _base(request)
    models = []
    for series, instance in rows:
        try:
            ds = _read(kernel, instance)
        except (NotFound, OSError, InvalidDicomError) as exc:  # one lost file must not hide the others
            log.error("WADO-RS metadata: %s left out: %s", instance.sop_instance_uid, exc)
            continue
        url = _instance_url(
            base, study.study_instance_uid, series.series_instance_uid, instance.sop_instance_uid
        )
        models.append(instance_metadata(ds, url, instance.transfer_syntax_uid))
    return models


@router.get(
    "/studies/{study_uid}/metadata",
    responses={200: _JSON_METADATA},
    summary="WADO-RS: the metadata of every instance of a study",
)
def study_metadata(
    request: Request, kernel: KernelDep, session: DbDep, principal: Reader, study_uid: StudyUid
) -> Response:
    _check_json_accept(request)
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.study.metadata")
    rows = session.execute(
        select(ImagingSeries, ImagingInstance)
        .join(ImagingInstance, ImagingInstance.series_id == ImagingSeries.id)
        .where(ImagingSeries.study_id == study.id)
        .order_by(ImagingSeries.series_number, ImagingInstance.instance_number, ImagingInstance.id)
    ).all()
    models = _metadata(request, kernel, study, [(s, i) for s, i in rows])
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.study.metadata",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"instances": len(models)},
    )
    return _dicom_json(models)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/metadata",
    responses={200: _JSON_METADATA},
    summary="WADO-RS: the metadata of every instance of a series",
)
def series_metadata(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
) -> Response:
    _check_json_accept(request)
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.series.metadata")
    series = _series_of(session, study, series_uid)
    instances = session.scalars(
        select(ImagingInstance)
        .where(ImagingInstance.series_id == series.id)
        .order_by(ImagingInstance.instance_number, ImagingInstance.id)
    ).all()
    models = _metadata(request, kernel, study, [(series, i) for i in instances])
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.series.metadata",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"series_instance_uid": series_uid, "instances": len(models)},
    )
    return _dicom_json(models)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/metadata",
    responses={200: _JSON_METADATA},
    summary="WADO-RS: the metadata of one instance",
)
def instance_metadata_route(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
    instance_uid: InstanceUid,
) -> Response:
    _check_json_accept(request)
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.instance.metadata")
    series = _series_of(session, study, series_uid)
    instance = _instance_of(session, series, instance_uid)
    url = _instance_url(_base(request), study_uid, series_uid, instance_uid)
    model = instance_metadata(_read(kernel, instance), url, instance.transfer_syntax_uid)
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.instance.metadata",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"sop_instance_uid": instance_uid},
    )
    return _dicom_json([model])


def frame_numbers(frame_list: str) -> list[int]:
    """``1,3,5`` as frame numbers (1-based, PS3.18 8.3.5.1.3). Raises :class:`InvalidFrameList`."""
    parts = [p.strip() for p in frame_list.split(",")]
    if not all(p.isdigit() and len(p) <= 9 and int(p) >= 1 for p in parts):
        raise InvalidFrameList(f"frames are numbered from 1, separated by commas, not {frame_list[:40]!r}")
    if len(parts) > MAX_FRAMES_PER_REQUEST:
        raise InvalidFrameList(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    return [int(p) for p in parts]


def wanted_frame_syntax(accept: str) -> str | None:
    """The transfer syntax to send frames in: None for "as stored" (``transfer-syntax=*``), else Explicit
    VR Little Endian, i.e. native, decoded pixels (PS3.18's default for octet-stream). Raises
    NotAcceptable."""
    native = str(ExplicitVRLittleEndian)
    if not accept.strip():
        return native
    for media, params in _media_ranges(accept):
        if media == "multipart/related":
            if params.get("type", OCTET_STREAM).lower() not in {OCTET_STREAM, "*/*", "application/*"}:
                continue
        elif media not in {"*/*", "multipart/*", OCTET_STREAM}:
            continue
        syntax = params.get("transfer-syntax", native)
        if syntax == "*":
            return None
        if syntax in {native, str(ImplicitVRLittleEndian)}:  # the same bytes for pixel data
            return native
    raise NotAcceptable(
        'frames are sent as multipart/related; type="application/octet-stream": decoded (the default) '
        "or as stored (transfer-syntax=*)"
    )


def frame_bytes(ds: Dataset, number: int, wanted: str | None) -> tuple[bytes, str]:
    """One frame (1-based) and the transfer syntax it is in: native little-endian pixels, or with
    ``wanted`` None the frame as stored (a compressed frame stays compressed)."""
    if not any(keyword in ds for keyword in pixels.PIXEL_KEYWORDS):
        raise NotFound("the instance has no pixel data")
    frames = pixels.number_of_frames(ds)
    if number > frames:
        raise NotFound(f"frame {number} does not exist: the instance has {frames}")
    native = str(ExplicitVRLittleEndian)
    syntax = ds.file_meta.TransferSyntaxUID
    if "PixelData" not in ds:  # float pixel data: never compressed
        array = pixel_array(ds, index=number - 1, raw=True)
        return _little_endian(array), native
    if syntax.is_encapsulated:
        if wanted is None:
            return get_frame(ds.PixelData, number - 1, number_of_frames=frames), str(syntax)
        try:  # decoded, as pydicom decodes (YBR colour comes back as RGB)
            array = pixel_array(ds, index=number - 1)
        except Exception as exc:  # pydicom raises many types for unsupported or damaged data
            raise NotAcceptable(f"this frame cannot be decoded ({exc}); ask for transfer-syntax=*") from exc
        return _little_endian(array), native
    bits = int(ds.BitsAllocated)
    if bits % 8 == 0 and syntax.is_little_endian:  # the stored bytes are the frame: no decoding
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * bits // 8
        data = bytes(ds.PixelData[(number - 1) * size : number * size])
        if len(data) != size:
            raise Invalid(f"the stored pixel data is too short for frame {number}")
        return data, native
    # Big-endian or 1-bit pixels: decoded and written out again, little-endian (bits packed).
    array = pixel_array(ds, index=number - 1, raw=True)
    if bits == 1:
        return np.packbits(array.ravel(), bitorder="little").tobytes(), native
    return _little_endian(array), native


def _little_endian(array: npt.NDArray[Any]) -> bytes:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _octet_parts(parts: Sequence[tuple[bytes, str]]) -> Response:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {OCTET_STREAM}; transfer-syntax={syntax}\r\n\r\n".encode()
        + data
        + b"\r\n"
        for data, syntax in parts
    )
    return Response(
        body + f"--{boundary}--\r\n".encode(),
        media_type=f'multipart/related; type="{OCTET_STREAM}"; boundary={boundary}',
        headers={"Cache-Control": "private, no-store"},
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/frames/{frame_list}",
    responses={200: _FRAMES, 400: _problem("Invalid frame list")},
    summary="WADO-RS: frames of an instance (pixel data, one part per frame)",
)
def retrieve_frames(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
    instance_uid: InstanceUid,
    frame_list: Annotated[str, Path(max_length=100_000)],
) -> Response:
    numbers = frame_numbers(frame_list)
    wanted = wanted_frame_syntax(request.headers.get("accept", ""))
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.instance.frames")
    instance = _instance_of(session, _series_of(session, study, series_uid), instance_uid)
    ds = _read(kernel, instance)
    response = _octet_parts([frame_bytes(ds, n, wanted) for n in numbers])
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.instance.frames",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"sop_instance_uid": instance_uid, "frames": numbers[:20]},
    )
    return response


def _bulk_element(ds: Dataset, path: str) -> DataElement:
    """The element at ``tag[/item/tag...]`` (as :func:`instance_metadata` wrote it)."""
    if not _BULK_PATH.match(path):
        raise NotFound(f"no bulk data at {path[:80]}")
    steps = path.split("/")
    dataset = ds
    for position in range(0, len(steps) - 1, 2):
        tag, item = int(steps[position], 16), int(steps[position + 1])
        element = dataset.get(tag)
        if element is None or element.VR != "SQ" or item >= len(element.value):
            raise NotFound(f"no bulk data at {path}")
        dataset = element.value[item]
    element = dataset.get(int(steps[-1], 16))
    if element is None or not isinstance(element.value, bytes) or element.VR == "SQ":
        raise NotFound(f"no bulk data at {path}")
    return element


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/bulkdata/{bulk_path:path}",
    responses={200: _FRAMES},
    summary="WADO-RS: a bulk data value named by a BulkDataURI (pixel data: all frames)",
)
def retrieve_bulk_data(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Reader,
    study_uid: StudyUid,
    series_uid: SeriesUid,
    instance_uid: InstanceUid,
    bulk_path: Annotated[str, Path(max_length=300)],
) -> Response:
    wanted = wanted_frame_syntax(request.headers.get("accept", ""))
    study, purpose = open_study(session, kernel, principal, study_uid, action="imaging.instance.bulkdata")
    instance = _instance_of(session, _series_of(session, study, series_uid), instance_uid)
    ds = _read(kernel, instance)
    if bulk_path.upper() in PIXEL_DATA_TAGS and any(k in ds for k in pixels.PIXEL_KEYWORDS):
        # The pixel data as its frames: a compressed stream is only useful frame by frame.
        frames = range(1, pixels.number_of_frames(ds) + 1)
        response = _octet_parts([frame_bytes(ds, n, wanted) for n in frames])
    else:
        element = _bulk_element(ds, bulk_path)
        response = _octet_parts([(bytes(element.value), str(ExplicitVRLittleEndian))])
    _audit_read(
        session,
        kernel,
        principal,
        action="imaging.instance.bulkdata",
        studies=[study],
        purpose=purpose,
        resource_id=study_uid,
        detail={"sop_instance_uid": instance_uid, "bulk_data": bulk_path[:80]},
    )
    return response


# --- STOW-RS -----------------------------------------------------------------------------------------------


async def stow_body(request: Request) -> bytes:
    """The request body, read up to ``TIANFU_STOW_MAX_BYTES``."""
    limit = get_dicom_settings().stow_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"a STOW-RS request may carry at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"a STOW-RS request may carry at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_multipart_related(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a ``multipart/related`` body (RFC 2387, RFC 2046 5.1)."""
    header = email.message.Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/related":
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    root_type = str(header.get_param("type") or "application/dicom").lower()
    if root_type != "application/dicom":
        raise UnsupportedMediaType(f"only application/dicom parts are supported, not {root_type}")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise Invalid("the multipart/related content type needs a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        position = len(delimiter)
    else:
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise Invalid("the body does not contain the multipart boundary")
        position = start + 2 + len(delimiter)
    parts: list[bytes] = []
    while not body.startswith(b"--", position):  # "--" after a delimiter closes the body
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise Invalid("malformed multipart body: a boundary line is followed by garbage")
        headers_end = body.find(b"\r\n\r\n", line_end)
        if headers_end < 0:
            raise Invalid("malformed multipart body: a part has no header end")
        part_type = _part_content_type(body[line_end + 2 : headers_end])
        content_start = headers_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter < 0:
            raise Invalid("malformed multipart body: the closing boundary is missing")
        if part_type != "application/dicom":
            raise UnsupportedMediaType(f"only application/dicom parts are supported, not {part_type}")
        parts.append(body[content_start:next_delimiter])
        position = next_delimiter + 2 + len(delimiter)
    return parts


def _part_content_type(raw: bytes) -> str:
    for line in raw.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return "application/dicom"


def _failed_item(sop_class: str, sop_instance: str, reason: int) -> dict[str, Any]:
    return {
        "00081150": _attr("UI", sop_class),
        "00081155": _attr("UI", sop_instance),
        "00081197": _attr("US", reason),
    }


def _stow(
    request: Request,
    kernel: Kernel,
    session: Session,
    principal: Principal,
    body: bytes,
    study_uid: str | None,
) -> Response:
    parts = parse_multipart_related(request.headers.get("content-type", ""), body)
    if not parts:
        raise Invalid("the request carries no DICOM instance")
    organization_id = principal.organization_id
    if organization_id is None:
        raise Forbidden("your account belongs to no institution, so there is nowhere to store images")
    store = dicom_store(kernel)
    base = _base(request)

    def authorize(patient_id: str | None, study_organization_id: str) -> None:
        if patient_id is not None:
            require_access(session, kernel.audit, principal, patient_id, action="imaging.instance.store")
        elif not sees_unmatched(principal, study_organization_id):
            raise Forbidden("this study belongs to another institution's unmatched images")

    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    warnings: list[str] = []
    studies: set[str] = set()

    def refuse(
        payload: bytes, sop_class: str, sop_instance: str, reason: int, message: str, keep: bool
    ) -> None:
        session.rollback()
        failed.append(_failed_item(sop_class, sop_instance, reason))
        warnings.append(
            f'299 tianfu "{sop_instance or "instance"}: {message}"'.replace("\r", " ").replace("\n", " ")
        )
        kernel.audit.record(
            session,
            actor=principal.actor,
            action="imaging.instance.store",
            action_type="C",
            outcome=OUTCOME_MINOR_FAILURE,
            outcome_desc=f"0x{reason:04X}: {message}"[:500],
            resource_type="ImagingStudy",
            purpose=principal.purpose,
            detail={"sop_instance_uid": sop_instance, "source": "stow"},
        )
        if keep:
            deadletters.store(
                session,
                source=DEAD_LETTER_SOURCE,
                reason=message,
                payload=payload,
                meta={
                    "user": principal.username,
                    "status": f"0x{reason:04X}",
                    "sop_instance_uid": sop_instance,
                },
            )
        session.commit()

    for payload in parts:
        try:
            parsed = read_part10(payload)
        except InvalidDicom as exc:
            refuse(payload, exc.sop_class_uid, exc.sop_instance_uid, exc.status, str(exc), keep=True)
            continue
        sop_class, sop_instance = parsed.sop_class_uid, parsed.sop_instance_uid
        if study_uid is not None and str(parsed.dataset.StudyInstanceUID) != study_uid:
            refuse(
                payload,
                sop_class,
                sop_instance,
                DOES_NOT_MATCH,
                f"the instance is not of study {study_uid}",
                False,
            )
            continue
        for attempt in (1, 2):
            try:
                result = store_instance(
                    session,
                    store,
                    parsed,
                    audit=kernel.audit,
                    actor=principal.actor,
                    source="stow",
                    organization_id=organization_id,
                    purpose=principal.purpose,
                    authorize=authorize,
                )
                session.commit()
            except IntegrityError:
                session.rollback()
                if attempt == 1:
                    continue  # a concurrent sender stored this study at the same moment: look again
                refuse(
                    payload, sop_class, sop_instance, PROCESSING_FAILURE, "conflicting concurrent store", True
                )
            except InvalidDicom as exc:
                refuse(payload, sop_class, sop_instance, exc.status, str(exc), keep=True)
            except Forbidden as exc:
                refuse(payload, sop_class, sop_instance, NOT_AUTHORIZED, exc.detail, False)
            except DomainError as exc:
                refuse(payload, sop_class, sop_instance, PROCESSING_FAILURE, exc.detail, False)
            except OSError as exc:
                log.exception("STOW-RS: storing %s failed", sop_instance)
                refuse(
                    payload,
                    sop_class,
                    sop_instance,
                    OUT_OF_RESOURCES,
                    f"cannot store now: {exc.strerror}",
                    False,
                )
            else:
                studies.add(result.study_instance_uid)
                url = f"{base}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
                referenced.append(
                    {
                        "00081150": _attr("UI", sop_class),
                        "00081155": _attr("UI", sop_instance),
                        "00081190": _attr("UR", f"{url}/instances/{sop_instance}"),
                    }
                )
            break

    response: dict[str, Any] = {}
    target = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if target is not None:
        response["00081190"] = _attr("UR", f"{base}/studies/{target}")
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        response["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    headers = {"Warning": ", ".join(warnings[:20])} if warnings else None
    return _dicom_json(response, status, headers)


_STOW_REQUEST = {
    "requestBody": {
        "required": True,
        "content": {"multipart/related": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "All instances stored", **_STORE_RESPONSE},
    202: {"description": "Some instances stored; see the Failed SOP Sequence", **_STORE_RESPONSE},
    409: {"description": "No instance stored; see the Failed SOP Sequence", **_STORE_RESPONSE},
    413: _problem("Request body too large"),
}


@router.post(
    "/studies",
    responses=_STOW_RESPONSES,
    openapi_extra=_STOW_REQUEST,
    summary="STOW-RS: store instances",
)
def store_studies(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    body: Annotated[bytes, Depends(stow_body)],
) -> Response:
    return _stow(request, kernel, session, principal, body, None)


@router.post(
    "/studies/{study_uid}",
    responses=_STOW_RESPONSES,
    openapi_extra=_STOW_REQUEST,
    summary="STOW-RS: store instances of one study",
)
def store_study(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Writer,
    study_uid: StudyUid,
    body: Annotated[bytes, Depends(stow_body)],
) -> Response:
    return _stow(request, kernel, session, principal, body, study_uid)
