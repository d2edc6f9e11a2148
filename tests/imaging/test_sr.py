"""The AI's findings as a DICOM SR (TID 1500): content, references, round trip, storing, and no loop."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.imaging.test_store import CXR_JPEG, create_imaging_tables, make_instance
from tianfu.core.audit.service import SYSTEM_ACTOR
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.db import Base
from tianfu.core.kernel import Kernel
from tianfu.imaging import sr
from tianfu.imaging.dicom.store import EVENT_INSTANCE_STORED, dicom_store, store_instance
from tianfu.imaging.findings import ImagingFinding, analyse_instance, tasks_for
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy


def finding(**kw: Any) -> ImagingFinding:
    values: dict[str, Any] = {
        "id": "f-pneumonia",
        "study_id": "s",
        "instance_id": "i",
        "task": "pneumonia",
        "model_version": "1.3.0",
        "label": "pneumonia",
        "probability": 0.87,
        "score": 0.87,
        "threshold": 0.62,
        "positive": True,
        "probabilities": {},
        "review": "",
        "reviewed_label": "",
        "review_comment": "",
    }
    return ImagingFinding(**(values | kw))


def roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def groups(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    measurements = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return list(measurements[0].ContentSequence)


def items(group: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    return {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in group.ContentSequence}


def test_the_report_references_the_image_and_says_what_the_ai_found() -> None:
    source = pydicom.dcmread(CXR_JPEG)
    negative = finding(
        id="f-abn", task="cxr-abnormal", score=0.2, probability=0.2, positive=False, label="normal"
    )
    reviewed = finding(review="corrected", reviewed_label="normal", review_comment="旧病灶")
    ds = roundtrip(sr.structured_report(source, [reviewed, negative]))

    assert ds.SOPClassUID == ComprehensiveSRStorage
    assert ds.Modality == "SR"
    assert ds.SeriesNumber == 990
    assert "not for diagnosis" in ds.SeriesDescription
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    assert ds.PatientID == source.PatientID
    assert ds.PatientName == source.PatientName
    assert ds.CompletionFlag == "COMPLETE"
    assert ds.VerificationFlag == "UNVERIFIED"  # an AI suggestion is never the signed opinion
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID

    # The observer is the AI as a device.
    observer = {i.ConceptNameCodeSequence[0].CodeMeaning: i for i in ds.ContentSequence}
    assert observer["Observer Type"].ConceptCodeSequence[0].CodeValue == codes.DCM.Device.value
    assert "imaging-pneumonia 1.3.0" in observer["Device Observer Model Name"].TextValue

    first, second = groups(ds)
    pneumonia = items(first)
    assert pneumonia["pneumonia"].ConceptCodeSequence[0].CodeValue == codes.SCT.Present.value
    assert pneumonia["pneumonia"].ConceptNameCodeSequence[0].CodingSchemeDesignator == "99TIANFU"
    number = pneumonia["pneumonia, AI probability"].MeasuredValueSequence[0]
    assert float(number.NumericValue) == pytest.approx(0.87)
    assert number.MeasurementUnitsCodeSequence[0].CodeValue == "{probability}"
    assert pneumonia["Algorithm Name"].TextValue == "tianfu imaging-pneumonia"
    assert pneumonia["Algorithm Version"].TextValue == "1.3.0"
    assert pneumonia["Algorithm Parameters"].TextValue == "threshold=0.62"
    image = pneumonia["Source of Measurement"].ReferencedSOPSequence[0]
    assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert image.ReferencedSOPClassUID == source.SOPClassUID
    assert "corrected to normal" in pneumonia["Comment"].TextValue
    assert "旧病灶" in pneumonia["Comment"].TextValue
    assert items(second)["cxr-abnormal"].ConceptCodeSequence[0].CodeValue == codes.SCT.Absent.value


def test_the_same_findings_make_the_same_report_uid_and_a_review_a_new_one() -> None:
    source = pydicom.dcmread(CXR_JPEG, stop_before_pixels=True)
    first = sr.structured_report(source, [finding()])
    again = sr.structured_report(source, [finding()])
    reviewed = sr.structured_report(source, [finding(review="confirmed", reviewed_label="pneumonia")])
    assert first.SOPInstanceUID == again.SOPInstanceUID != reviewed.SOPInstanceUID
    assert first.SeriesInstanceUID == reviewed.SeriesInstanceUID
    with pytest.raises(ValueError, match="no findings"):
        sr.structured_report(source, [])


# --- stored next to the source images ----------------------------------------------------------------------


@pytest.fixture
def session(kernel: Kernel) -> Iterator[Session]:
    create_imaging_tables(kernel)
    Base.metadata.create_all(kernel.engine, tables=[Base.metadata.tables["imaging_finding"]], checkfirst=True)
    with kernel.sessions() as s:
        yield s


def test_write_result_stores_the_report_in_the_study_once_and_nothing_reads_it(
    kernel: Kernel, session: Session, demo: Demo
) -> None:
    patient, org = demo.patient("杨志强"), demo.organization("TFRM")
    data = make_instance("cxr_jpeg_baseline.dcm", patient_id=patient.mrn, BodyPartExamined="CHEST")
    stored = store_instance(
        session,
        dicom_store(kernel),
        data,
        audit=kernel.audit,
        actor=SYSTEM_ACTOR,
        source="stow",
        organization_id=org.id,
    )
    session.add(finding(id=None, study_id=stored.study_id, instance_id=stored.instance_id))
    session.commit()

    uids = sr.write_result(session, kernel, stored.study_id)
    session.commit()
    assert len(uids) == 1
    row = session.scalars(select(ImagingInstance).where(ImagingInstance.sop_instance_uid == uids[0])).one()
    assert row.source == sr.AI_SOURCE
    series = session.get(ImagingSeries, row.series_id)
    assert series is not None
    assert series.modality == "SR"
    assert series.study_id == stored.study_id  # same study as the radiograph
    study = session.get(ImagingStudy, stored.study_id)
    assert study is not None
    assert study.patient_id == patient.id
    assert "SR" in study.modalities.split("\\")
    report = pydicom.dcmread(dicom_store(kernel).path(row.storage_path))
    assert report.PatientID == patient.mrn
    assert groups(report)[0].ContentSequence  # the finding is in it

    # Writing again stores nothing new.
    assert sr.write_result(session, kernel, stored.study_id) == uids
    session.commit()
    assert session.scalars(
        select(ImagingInstance).where(ImagingInstance.series_id == row.series_id)
    ).all() == [row]

    # The SR is announced like any image, and the analyser leaves it alone: no model reads SR.
    events = session.scalars(select(OutboxEvent).where(OutboxEvent.subject == EVENT_INSTANCE_STORED)).all()
    assert [e.data["modality"] for e in events][-1] == "SR"
    assert tasks_for("SR", "", ["pneumonia", "cxr-abnormal", "breast", "retina"]) == []
    assert tasks_for("SR", "CHEST", ["pneumonia", "cxr-abnormal", "breast", "retina"]) == []
    assert analyse_instance(session, kernel.audit, dicom_store(kernel).root, row.id) == []
    session.commit()
    found = session.scalars(select(ImagingFinding).where(ImagingFinding.instance_id == row.id)).all()
    assert found == []
