"""Keep received DICOM instances: the files on disk and their index in the database.

Files live under ``<root>/<study uid>/<series uid>/<sop instance uid>.dcm`` in the DICOM file format
(PS3.10), the data set byte for byte as it was received: nothing is re-encoded. A file is written to a
temporary name and renamed, so a reader never sees half a file.

Duplicates (the same SOP Instance UID again):

- the same encoded data set, or the same instance in another transfer syntax: "already stored", a success
  without a second copy. A sender that lost our C-STORE response retries, and that must succeed.
- a different data set in the same transfer syntax: refused with :class:`InstanceConflict` (DIMSE status
  0x0111 "Duplicate SOP Instance") and the first copy kept. A changed image must get a new SOP Instance
  UID (PS3.3 C.12.1.1.1), so two different objects under one UID are an error at the sender, which only
  a person can sort out; overwriting would silently change an image a doctor may already have read. This
  is Orthanc's default too (``OverwriteInstances: false``), except that we say so instead of ignoring it,
  and the callers put the refused copy in the dead-letter store.

Each stored instance writes an audit record ("C") and a ``tianfu.imaging.instance_stored`` event (through
the outbox, so it is published only if the transaction commits) in the caller's transaction; the caller
commits. Failures are :class:`InvalidDicom` with the DIMSE status the C-STORE SCP and STOW-RS report.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    AllTransferSyntaxes,
    ExplicitVRLittleEndian,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.audit.service import Actor, AuditLog
from tianfu.core.bus.outbox import enqueue
from tianfu.core.db import utcnow
from tianfu.core.patients.models import Patient
from tianfu.imaging.dicom import get_dicom_settings
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

if TYPE_CHECKING:
    from tianfu.core.kernel import Kernel

log = logging.getLogger(__name__)

EVENT_INSTANCE_STORED = "tianfu.imaging.instance_stored"
Source = Literal["c-store", "stow", "upload", "ai"]

# DIMSE statuses (PS3.4 B.2.3, PS3.7 C), used by the C-STORE SCP and as STOW-RS Failure Reasons (PS3.18).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900  # the data set does not match the SOP class (required attributes missing)
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

# PS3.5 9.1: digits and dots, at most 64 characters. Leading zeros in a component are not allowed by the
# standard but occur in real archives, so they are accepted; what matters here is that a UID can name a file.
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
_UID = re.compile(UID_PATTERN)
_RELATIVE_PATH = re.compile(r"^[0-9.]{1,64}/[0-9.]{1,64}/[0-9.]{1,64}\.dcm$")
# File meta elements whose length is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class InvalidDicom(ValueError):
    """Input that cannot be stored, with the DIMSE status that says why."""

    def __init__(
        self,
        message: str,
        *,
        status: int = CANNOT_UNDERSTAND,
        sop_class_uid: str = "",
        sop_instance_uid: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


class InstanceConflict(InvalidDicom):
    """Another data set is already stored under this SOP Instance UID; the first one is kept."""


def is_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.match(value) is not None


# --- reading what arrives ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedInstance:
    """A received instance: its parsed data set, the encoded data set as received (what is hashed and
    compared for duplicates), and the complete PS3.10 file that is written to disk."""

    dataset: Dataset
    body: bytes
    transfer_syntax: str
    file_bytes: bytes

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)


def read_part10(data: bytes) -> ParsedInstance:
    """A DICOM file (PS3.10: 128-byte preamble, "DICM", file meta information), as STOW-RS and uploads
    send it."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidDicom("not a DICOM file: the PS3.10 preamble and DICM prefix are missing")
    offset = _dataset_offset(data)
    dataset = _parse(data)
    meta = dataset.file_meta
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    _check(dataset, syntax)
    if str(meta.get("MediaStorageSOPInstanceUID", "") or dataset.SOPInstanceUID) != dataset.SOPInstanceUID:
        raise _mismatch(dataset, "the file meta SOP Instance UID differs from the data set's")
    return ParsedInstance(dataset=dataset, body=data[offset:], transfer_syntax=syntax, file_bytes=data)


def read_dimse(
    body: bytes, transfer_syntax: str, *, sop_class_uid: str, sop_instance_uid: str, calling_ae: str = ""
) -> ParsedInstance:
    """A C-STORE data set: the encoded data set in the negotiated transfer syntax, and the UIDs of the
    request, which must agree with the data set."""
    if not body:
        raise InvalidDicom("the C-STORE request carried no data set")
    if not (is_uid(sop_class_uid) and is_uid(sop_instance_uid)):
        raise InvalidDicom("the C-STORE request's affected SOP UIDs are invalid", status=DOES_NOT_MATCH)
    file_bytes = part10(
        body,
        transfer_syntax=transfer_syntax,
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        calling_ae=calling_ae,
    )
    dataset = _parse(file_bytes)
    _check(dataset, transfer_syntax)
    if dataset.SOPClassUID != sop_class_uid or dataset.SOPInstanceUID != sop_instance_uid:
        raise _mismatch(dataset, "the data set's SOP Class/Instance UID differs from the C-STORE request's")
    return ParsedInstance(dataset=dataset, body=body, transfer_syntax=transfer_syntax, file_bytes=file_bytes)


def part10(
    body: bytes, *, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str, calling_ae: str = ""
) -> bytes:
    """An encoded data set with the PS3.10 preamble and file meta information in front of it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if calling_ae:
        meta.SourceApplicationEntityTitle = calling_ae
    try:
        header = DicomBytesIO()
        header.is_little_endian = True
        header.is_implicit_VR = False
        header.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(header, meta, enforce_standard=True)
    except Exception as exc:
        raise InvalidDicom(f"cannot write a file header for this instance: {exc}") from exc
    return header.getvalue() + body


def encode_dataset(dataset: Dataset) -> ParsedInstance:
    """An instance made here (an AI result written with highdicom, say), encoded for storing."""
    if not hasattr(dataset, "file_meta") or "TransferSyntaxUID" not in dataset.file_meta:
        meta = FileMetaDataset(getattr(dataset, "file_meta", FileMetaDataset()))
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta = meta
    buffer = io.BytesIO()
    try:
        dataset.save_as(buffer, enforce_file_format=True)
    except Exception as exc:
        raise InvalidDicom(f"cannot encode the data set: {exc}", status=DOES_NOT_MATCH) from exc
    return read_part10(buffer.getvalue())


def _dataset_offset(data: bytes) -> int:
    """Where the data set starts: after the file meta group (always explicit VR little endian)."""
    position = 132
    while position + 8 <= len(data):
        (group,) = struct.unpack_from("<H", data, position)
        if group != 0x0002:
            return position
        if data[position + 4 : position + 6] in _LONG_VRS:
            if position + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, position + 8)
            position += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            position += 8 + length
    if position > len(data) or position + 8 > len(data):
        raise InvalidDicom("the file ends inside its meta information header")
    return position


def _parse(file_bytes: bytes) -> Dataset:
    try:
        dataset = dcmread(io.BytesIO(file_bytes))
        # pydicom converts values lazily; touch every element now so that a damaged one fails here, at the
        # door, and not later in a viewer or the AI pipeline.
        for _ in dataset.iterall():
            pass
    except Exception as exc:  # pydicom raises many types for damaged input
        raise InvalidDicom(f"cannot read the data set: {type(exc).__name__}: {exc}") from exc
    return dataset


def _check(dataset: Dataset, transfer_syntax: str) -> None:
    """The attributes the index needs, and pixel data that is not cut short."""
    if transfer_syntax not in AllTransferSyntaxes:
        raise InvalidDicom(
            f"unsupported transfer syntax {transfer_syntax!r}", status=TRANSFER_SYNTAX_NOT_SUPPORTED
        )
    if len(dataset) == 0:  # pydicom returns nothing when an undefined-length element has no end
        raise InvalidDicom("the data set is empty or unreadable: the file is probably truncated")
    missing = [keyword for keyword in _REQUIRED_UIDS if not is_uid(str(dataset.get(keyword, "") or ""))]
    if len(missing) == len(_REQUIRED_UIDS):
        raise InvalidDicom("not a DICOM data set: it has none of the SOP, study and series UIDs")
    if missing:
        raise InvalidDicom(
            f"missing or invalid {', '.join(missing)}",
            status=DOES_NOT_MATCH,
            sop_class_uid=str(dataset.get("SOPClassUID", "") or ""),
            sop_instance_uid=str(dataset.get("SOPInstanceUID", "") or ""),
        )
    if "Rows" in dataset and "PixelDataProviderURL" not in dataset:
        if not any(k in dataset for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            # pydicom drops an encapsulated Pixel Data element whose end is missing.
            raise _not_understood(dataset, "an image without pixel data: the file is probably truncated")
        if "PixelData" in dataset:
            _check_pixel_length(dataset, UID(transfer_syntax))


def _check_pixel_length(dataset: Dataset, syntax: UID) -> None:
    data = dataset.PixelData
    if syntax.is_encapsulated:
        try:
            for _ in generate_fragments(data):
                pass
        except Exception as exc:
            raise _not_understood(dataset, f"the compressed pixel data is damaged: {exc}") from exc
        return
    try:
        samples = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel") or 1)
        samples *= max(int(dataset.get("NumberOfFrames") or 1), 1)
        bits = int(dataset.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise _not_understood(dataset, f"the image pixel description is incomplete: {exc}") from exc
    expected = (samples * bits + 7) // 8
    if len(data) < expected:
        raise _not_understood(dataset, f"the pixel data is truncated ({len(data)} of {expected} bytes)")


def _mismatch(dataset: Dataset, message: str) -> InvalidDicom:
    return InvalidDicom(
        message,
        status=DOES_NOT_MATCH,
        sop_class_uid=str(dataset.get("SOPClassUID", "")),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
    )


def _not_understood(dataset: Dataset, message: str) -> InvalidDicom:
    return InvalidDicom(
        message,
        status=CANNOT_UNDERSTAND,
        sop_class_uid=str(dataset.get("SOPClassUID", "")),
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
    )


# --- the files ---------------------------------------------------------------------------------------------


class DicomStore:
    """The directory of DICOM files. Paths in the database are relative to its root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def relative_path(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        for uid in (study_uid, series_uid, sop_instance_uid):
            if not is_uid(uid):  # digits and dots only: a UID can never climb out of the root
                raise ValueError(f"not a valid UID: {uid!r}")
        return f"{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def path(self, relative: str) -> Path:
        if not _RELATIVE_PATH.match(relative) or ".." in relative.split("/"):
            raise ValueError(f"not a path in the DICOM store: {relative!r}")
        return self.root / relative

    def write(self, relative: str, data: bytes) -> int:
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temporary.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return len(data)

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def exists(self, relative: str) -> bool:
        return self.path(relative).is_file()


def dicom_store(kernel: Kernel) -> DicomStore:
    """The process's DICOM store, at ``TIANFU_DICOM_DIR`` or ``<var_dir>/dicom``."""
    store = kernel.extensions.get("imaging.dicom_store")
    if not isinstance(store, DicomStore):
        root = get_dicom_settings().dicom_dir or Path(kernel.settings.var_dir) / "dicom"
        store = DicomStore(root)
        kernel.extensions["imaging.dicom_store"] = store
    return store


# --- the index ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreResult:
    status: Literal["stored", "already_stored"]
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    study_id: str
    instance_id: str
    patient_id: str | None
    storage_path: str


# Called with the target study's (patient id, organisation id) before anything is written; raises to refuse.
Authorize = Callable[[str | None, str], None]


def match_patient(session: Session, organization_id: str, dicom_patient_id: str) -> str | None:
    """The patient whose MRN at the receiving institution is the DICOM Patient ID, if exactly one."""
    if not dicom_patient_id:
        return None
    ids = session.scalars(
        select(Patient.id).where(
            Patient.managing_organization_id == organization_id,
            Patient.mrn == dicom_patient_id,
            Patient.voided.is_(False),
        )
    ).all()
    return ids[0] if len(ids) == 1 else None


def store_instance(
    session: Session,
    store: DicomStore | Path,
    data: bytes | Dataset | ParsedInstance,
    *,
    audit: AuditLog,
    actor: Actor,
    source: Source,
    organization_id: str,
    calling_ae: str = "",
    purpose: str = "",
    authorize: Authorize | None = None,
) -> StoreResult:
    """Index and keep one instance in the caller's transaction (the caller commits).

    ``bytes`` are a PS3.10 file. Raises :class:`InvalidDicom` (nothing written) for input that cannot be
    stored, :class:`InstanceConflict` for a different data set under a stored SOP Instance UID, and lets
    ``authorize``'s exception through. On PostgreSQL two senders storing the same new study at once can
    meet an ``IntegrityError`` on its UID: roll back and call again, and the second call finds the row.
    """
    if not isinstance(store, DicomStore):
        store = DicomStore(store)
    if isinstance(data, ParsedInstance):
        parsed = data
    elif isinstance(data, Dataset):
        parsed = encode_dataset(data)
    else:
        parsed = read_part10(data)
    ds = parsed.dataset
    study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    sop_uid, sop_class = parsed.sop_instance_uid, parsed.sop_class_uid
    digest = hashlib.sha256(parsed.body).hexdigest()

    existing = session.execute(
        select(ImagingInstance, ImagingSeries, ImagingStudy)
        .join(ImagingSeries, ImagingSeries.id == ImagingInstance.series_id)
        .join(ImagingStudy, ImagingStudy.id == ImagingSeries.study_id)
        .where(ImagingInstance.sop_instance_uid == sop_uid)
    ).one_or_none()
    if existing is not None:
        old_instance, old_series, old_study = existing
        if authorize is not None:
            authorize(old_study.patient_id, old_study.organization_id)
        same = old_instance.sha256 == digest or old_instance.transfer_syntax_uid != parsed.transfer_syntax
        moved = old_series.series_instance_uid != series_uid or old_study.study_instance_uid != study_uid
        if not same or moved:
            raise InstanceConflict(
                f"already stored with different content (first copy kept): SOP Instance {sop_uid}",
                status=DUPLICATE_INSTANCE,
                sop_class_uid=sop_class,
                sop_instance_uid=sop_uid,
            )
        _audit(session, audit, actor, old_study, parsed, source, calling_ae, purpose, already_stored=True)
        return _result("already_stored", old_study, old_series, old_instance)

    now = utcnow()
    study = session.scalars(
        select(ImagingStudy).where(ImagingStudy.study_instance_uid == study_uid)
    ).one_or_none()
    dicom_patient_id = _text(ds, "PatientID", 64)
    if study is None:
        study = ImagingStudy(
            study_instance_uid=study_uid,
            organization_id=organization_id,
            patient_id=match_patient(session, organization_id, dicom_patient_id),
            dicom_patient_id=dicom_patient_id,
            received_at=now,
            number_of_series=0,
            number_of_instances=0,
            status="received",
        )
    elif study.patient_id is None and study.dicom_patient_id:
        # The patient may have been registered since the first instance arrived.
        study.patient_id = match_patient(session, study.organization_id, study.dicom_patient_id)
    if dicom_patient_id and study.dicom_patient_id and dicom_patient_id != study.dicom_patient_id:
        log.warning(
            "instance %s names patient %r, its study %s names %r",
            sop_uid,
            dicom_patient_id,
            study_uid,
            study.dicom_patient_id,
        )
    if authorize is not None:
        authorize(study.patient_id, study.organization_id)
    _fill_study(study, ds)
    study.last_received_at = now
    session.add(study)
    session.flush()

    series = session.scalars(
        select(ImagingSeries).where(ImagingSeries.series_instance_uid == series_uid)
    ).one_or_none()
    if series is not None and series.study_id != study.id:
        raise _mismatch(ds, f"series {series_uid} already belongs to another study")
    if series is None:
        series = ImagingSeries(
            series_instance_uid=series_uid,
            study_id=study.id,
            modality=_text(ds, "Modality", 16),
            body_part=_text(ds, "BodyPartExamined", 16),
            description=_text(ds, "SeriesDescription", 64),
            series_number=_int(ds.get("SeriesNumber")),
            number_of_instances=0,
            received_at=now,
        )
        session.add(series)
        modalities = {m for m in study.modalities.split("\\") if m} | ({series.modality} - {""})
        study.modalities = "\\".join(sorted(modalities))[:64]
        # SQL-side increments: concurrent associations adding to one study do not lose counts.
        study.number_of_series = ImagingStudy.number_of_series + 1
        session.flush()
    relative = store.relative_path(study_uid, series_uid, sop_uid)
    instance = ImagingInstance(
        sop_instance_uid=sop_uid,
        series_id=series.id,
        sop_class_uid=sop_class,
        transfer_syntax_uid=parsed.transfer_syntax,
        instance_number=_int(ds.get("InstanceNumber")),
        rows=_int(ds.get("Rows")),
        columns=_int(ds.get("Columns")),
        number_of_frames=_int(ds.get("NumberOfFrames")) or (1 if "PixelData" in ds else None),
        storage_path=relative,
        size_bytes=len(parsed.file_bytes),
        sha256=digest,
        received_at=now,
        source=source,
        calling_ae=calling_ae[:16],
    )
    session.add(instance)
    series.number_of_instances = ImagingSeries.number_of_instances + 1
    study.number_of_instances = ImagingStudy.number_of_instances + 1
    session.flush()  # the unique UIDs are claimed before the file is written
    # Written only once the rows hold the UID: a concurrent sender of the same UID waits on (PostgreSQL) or
    # is serialised behind (SQLite) this transaction and then finds the row, so it never overwrites the file.
    store.write(relative, parsed.file_bytes)

    _audit(session, audit, actor, study, parsed, source, calling_ae, purpose, already_stored=False)
    enqueue(
        session,
        EVENT_INSTANCE_STORED,
        {
            "study_instance_uid": study_uid,
            "series_instance_uid": series_uid,
            "sop_instance_uid": sop_uid,
            "sop_class_uid": sop_class,
            "modality": series.modality,
            "patient_id": study.patient_id,
            "organization_id": study.organization_id,
            "study_id": study.id,
            "storage_path": relative,
            "source": source,
        },
    )
    return _result("stored", study, series, instance)


def _fill_study(study: ImagingStudy, ds: Dataset) -> None:
    """Study attributes from the data set, where the study does not have them yet."""
    values: dict[str, Any] = {
        "dicom_patient_name": _text(ds, "PatientName", 200),
        "dicom_patient_birth_date": _text(ds, "PatientBirthDate", 8),
        "dicom_patient_sex": _text(ds, "PatientSex", 16),
        "accession_number": _text(ds, "AccessionNumber", 16),
        "dicom_study_id": _text(ds, "StudyID", 16),
        "study_date": _date(ds.get("StudyDate")),
        "study_time": _text(ds, "StudyTime", 16),
        "description": _text(ds, "StudyDescription", 64),
        "referring_physician": _text(ds, "ReferringPhysicianName", 200),
    }
    for name, value in values.items():
        if value and not getattr(study, name):
            setattr(study, name, value)


def _audit(
    session: Session,
    audit: AuditLog,
    actor: Actor,
    study: ImagingStudy,
    parsed: ParsedInstance,
    source: str,
    calling_ae: str,
    purpose: str,
    *,
    already_stored: bool,
) -> None:
    detail: dict[str, Any] = {
        "sop_instance_uid": parsed.sop_instance_uid,
        "sop_class_uid": parsed.sop_class_uid,
        "series_instance_uid": str(parsed.dataset.SeriesInstanceUID),
        "source": source,
        "matched": study.patient_id is not None,
    }
    if calling_ae:
        detail["calling_ae"] = calling_ae
    if already_stored:
        detail["already_stored"] = True
    audit.record(
        session,
        actor=actor,
        action="imaging.instance.store",
        action_type="C",
        resource_type="ImagingStudy",
        resource_id=study.study_instance_uid,
        patient_ids=[study.patient_id] if study.patient_id else [],
        purpose=purpose,
        detail=detail,
    )


def _result(
    status: Literal["stored", "already_stored"],
    study: ImagingStudy,
    series: ImagingSeries,
    instance: ImagingInstance,
) -> StoreResult:
    return StoreResult(
        status=status,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        study_id=study.id,
        instance_id=instance.id,
        patient_id=study.patient_id,
        storage_path=instance.storage_path,
    )


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _date(value: Any) -> date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
