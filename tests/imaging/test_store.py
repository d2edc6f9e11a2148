"""The DICOM store and its index: validation, patient matching, duplicates, files, audit and events.

The helpers and fixtures here are shared by the SCP and DICOMweb tests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tianfu.core.audit.models import AuditRecord
from tianfu.core.audit.service import SYSTEM_ACTOR
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.db import Base
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Patient
from tianfu.imaging.dicom import store as dicom
from tianfu.imaging.dicom.store import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH,
    DUPLICATE_INSTANCE,
    EVENT_INSTANCE_STORED,
    DicomStore,
    InstanceConflict,
    InvalidDicom,
    store_instance,
)
from tianfu.imaging.tables import ImagingInstance, ImagingStudy

TABLES = [Base.metadata.tables[name] for name in ("imaging_study", "imaging_series", "imaging_instance")]
FIXTURES = Path(__file__).parent / "fixtures"
CXR_JPEG = FIXTURES / "cxr_jpeg_baseline.dcm"


# --- shared helpers ----------------------------------------------------------------------------------------


def sample_file(name: str) -> Path:
    """A pydicom or pydicom-data test file, found offline; skips when the package providing it is absent."""
    found = get_testdata_file(name, download=False)  # never fetch anything at test time
    if found is None:
        pytest.skip(f"{name} is not installed locally (pip install pydicom-data)")
    return Path(str(found))


def make_instance(
    name: str = "CT_small.dcm",
    *,
    patient_id: str = "",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    study_date: str = "20250611",
    **changes: Any,
) -> bytes:
    """A DICOM file from a sample, with fresh UIDs (or the given ones) and the given patient."""
    path = CXR_JPEG if name == CXR_JPEG.name else sample_file(name)
    ds = pydicom.dcmread(path)
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = study_date
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def create_imaging_tables(kernel: Kernel) -> None:
    """Until the imaging migration exists the demo template lacks these tables; afterwards this is a no-op."""
    Base.metadata.create_all(kernel.engine, tables=TABLES, checkfirst=True)


@pytest.fixture
def imaging(kernel: Kernel) -> Kernel:
    create_imaging_tables(kernel)
    return kernel


@pytest.fixture
def store(tmp_path: Path) -> DicomStore:
    return DicomStore(tmp_path / "dicom")


def stored_events(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(OutboxEvent).where(OutboxEvent.subject == EVENT_INSTANCE_STORED).order_by(OutboxEvent.seq)
    ).all()
    session.commit()
    return [dict(r.data) for r in rows]


# --- storing -----------------------------------------------------------------------------------------------


@pytest.fixture
def session(imaging: Kernel) -> Iterator[Session]:
    with imaging.sessions() as s:
        yield s


def put(
    session: Session, store: DicomStore, kernel: Kernel, data: Any, org: str, **kw: Any
) -> dicom.StoreResult:
    result = store_instance(
        session,
        store,
        data,
        audit=kernel.audit,
        actor=SYSTEM_ACTOR,
        source=kw.pop("source", "upload"),
        organization_id=org,
        **kw,
    )
    session.commit()
    return result


def test_an_instance_is_filed_indexed_matched_audited_and_announced(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    patient, org = demo.patient("刘芳"), demo.organization("TFRM")
    data = make_instance(patient_id=patient.mrn, AccessionNumber="A-1", StudyDescription="CT chest")
    result = put(session, store, imaging, data, org.id, source="upload")
    assert result.status == "stored"
    assert result.patient_id == patient.id
    # The file is the PS3.10 file as received, under <study>/<series>/<sop>.dcm.
    assert (
        result.storage_path
        == f"{result.study_instance_uid}/{result.series_instance_uid}/{result.sop_instance_uid}.dcm"
    )
    assert store.read(result.storage_path) == data
    assert not list(store.root.rglob("*.tmp"))
    study = session.scalars(select(ImagingStudy)).one()
    assert (study.patient_id, study.organization_id, study.status) == (patient.id, org.id, "received")
    assert (study.number_of_series, study.number_of_instances, study.modalities) == (1, 1, "CT")
    assert (study.accession_number, study.description, str(study.study_date)) == (
        "A-1",
        "CT chest",
        "2025-06-11",
    )
    instance = session.scalars(select(ImagingInstance)).one()
    assert (instance.rows, instance.columns, instance.source) == (128, 128, "upload")
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert instance.size_bytes == len(data)
    assert len(instance.sha256) == 64
    [event] = stored_events(session)
    assert event["sop_instance_uid"] == result.sop_instance_uid
    assert (event["patient_id"], event["modality"], event["storage_path"]) == (
        patient.id,
        "CT",
        result.storage_path,
    )
    record = session.scalars(select(AuditRecord).where(AuditRecord.action == "imaging.instance.store")).one()
    assert (record.action_type, record.resource_id, record.patient_ids) == (
        "C",
        result.study_instance_uid,
        [patient.id],
    )
    session.commit()


def test_a_study_without_a_known_patient_is_kept_unmatched_and_matched_later(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    org = demo.organization("TFRM")
    study_uid = generate_uid()
    first = put(session, store, imaging, make_instance(patient_id="TFRM-NEW-1", study_uid=study_uid), org.id)
    assert first.patient_id is None
    study = session.scalars(select(ImagingStudy)).one()
    assert (study.patient_id, study.dicom_patient_id) == (None, "TFRM-NEW-1")
    session.add(Patient(mrn="TFRM-NEW-1", managing_organization_id=org.id, name="新病人", gender="female"))
    session.commit()
    second = put(session, store, imaging, make_instance(patient_id="TFRM-NEW-1", study_uid=study_uid), org.id)
    assert second.patient_id is not None
    session.refresh(study)
    assert (study.patient_id, study.number_of_series, study.number_of_instances) == (second.patient_id, 2, 2)


def test_a_patient_of_another_institution_is_not_matched(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    other = demo.patient("黄玉珍")  # registered at the community centre (JJSQ)
    result = put(session, store, imaging, make_instance(patient_id=other.mrn), demo.organization("TFRM").id)
    assert result.patient_id is None


def test_the_same_instance_again_is_already_stored_not_stored_twice(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    org = demo.organization("TFRM").id
    data = make_instance(patient_id="X1")
    assert put(session, store, imaging, data, org).status == "stored"
    again = put(session, store, imaging, data, org, source="stow")
    assert again.status == "already_stored"
    assert session.scalar(select(func.count()).select_from(ImagingInstance)) == 1
    assert session.scalars(select(ImagingStudy)).one().number_of_instances == 1
    assert len(stored_events(session)) == 1  # no second event: the AI does not analyse it twice


def test_the_same_instance_in_another_transfer_syntax_is_already_stored(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    org = demo.organization("TFRM").id
    # pydicom ships MR_small in several encodings under one SOP Instance UID.
    explicit = sample_file("MR_small.dcm").read_bytes()
    implicit = sample_file("MR_small_implicit.dcm").read_bytes()
    assert put(session, store, imaging, explicit, org).status == "stored"
    assert put(session, store, imaging, implicit, org).status == "already_stored"
    instance = session.scalars(select(ImagingInstance)).one()
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"  # the first copy is kept
    session.commit()


def test_different_content_under_a_stored_uid_is_refused_and_the_first_copy_kept(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    org = demo.organization("TFRM").id
    uids = {"study_uid": generate_uid(), "series_uid": generate_uid(), "sop_uid": generate_uid()}
    first = make_instance(patient_id="X1", **uids)
    result = put(session, store, imaging, first, org)
    changed = make_instance(patient_id="X1", SeriesDescription="edited", **uids)
    with pytest.raises(InstanceConflict) as caught:
        put(session, store, imaging, changed, org)
    session.rollback()
    assert caught.value.status == DUPLICATE_INSTANCE
    assert store.read(result.storage_path) == first
    assert session.scalar(select(func.count()).select_from(ImagingInstance)) == 1


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_non_dicom_and_damaged_input_is_refused_with_a_status(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    org = demo.organization("TFRM").id
    cases: list[tuple[bytes, int, str]] = [
        (b"%PDF-1.7 not an image" * 20, CANNOT_UNDERSTAND, "not a DICOM file"),
        (make_instance(patient_id="X")[:-4000], CANNOT_UNDERSTAND, "truncated"),  # pixel data cut short
        (make_instance(CXR_JPEG.name)[:-50_000], CANNOT_UNDERSTAND, "truncated"),  # JPEG cut short
        (make_instance(patient_id="X")[:200], CANNOT_UNDERSTAND, "meta information"),
    ]
    no_uid = pydicom.dcmread(io.BytesIO(make_instance(patient_id="X")))
    del no_uid.SeriesInstanceUID
    buffer = io.BytesIO()
    no_uid.save_as(buffer, enforce_file_format=True)
    cases.append((buffer.getvalue(), DOES_NOT_MATCH, "SeriesInstanceUID"))
    del no_uid.PixelData
    no_uid.SeriesInstanceUID = generate_uid()
    buffer = io.BytesIO()
    no_uid.save_as(buffer, enforce_file_format=True)
    cases.append((buffer.getvalue(), CANNOT_UNDERSTAND, "without pixel data"))
    for data, status, message in cases:
        with pytest.raises(InvalidDicom, match=message) as caught:
            put(session, store, imaging, data, org)
        assert caught.value.status == status
        session.rollback()
    assert session.scalar(select(func.count()).select_from(ImagingInstance)) == 0
    assert not store.root.exists() or not list(store.root.rglob("*.dcm"))


def test_a_dataset_made_here_is_encoded_and_stored(
    imaging: Kernel, session: Session, store: DicomStore, demo: Demo
) -> None:
    ds: Dataset = pydicom.dcmread(io.BytesIO(make_instance(patient_id="X2")))
    ds.file_meta = pydicom.dataset.FileMetaDataset()  # no transfer syntax: Explicit VR Little Endian is used
    result = put(session, store, imaging, ds, demo.organization("TFRM").id)
    assert result.status == "stored"
    assert pydicom.dcmread(store.path(result.storage_path)).SOPInstanceUID == result.sop_instance_uid


def test_store_paths_cannot_leave_the_root(store: DicomStore) -> None:
    with pytest.raises(ValueError, match="UID"):
        DicomStore.relative_path("1.2", "..", "3")
    with pytest.raises(ValueError, match="UID"):
        DicomStore.relative_path("1.2", "3/../../etc", "4")
    with pytest.raises(ValueError, match="not a path"):
        store.path("../../etc/passwd")
    assert store.path("1.2/3.4/5.6.dcm") == store.root / "1.2/3.4/5.6.dcm"
    store.write("1.2/3.4/5.6.dcm", b"abc")
    assert store.read("1.2/3.4/5.6.dcm") == b"abc"
    assert [p.name for p in (store.root / "1.2/3.4").iterdir()] == ["5.6.dcm"]
