"""The AI heatmap as a DICOM Secondary Capture: pixels, caption, attributes, and stored beside the SR."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from fastapi.testclient import TestClient
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage
from sqlalchemy import select

from tests.conftest import Demo
from tests.imaging.test_dicomweb import Login, split_multipart, stow, web
from tests.imaging.test_sr import finding
from tests.imaging.test_store import CXR_JPEG, imaging, make_instance
from tianfu.core.audit.service import SYSTEM_ACTOR
from tianfu.core.db import Base
from tianfu.core.kernel import Kernel
from tianfu.imaging import module, sc, sr
from tianfu.imaging.dicom import pixels
from tianfu.imaging.dicom.store import dicom_store, store_instance
from tianfu.imaging.findings import ImagingFinding, tasks_for
from tianfu.imaging.tables import ImagingInstance, ImagingSeries

__all__ = ["imaging", "web"]  # fixtures, used by name

DICOMWEB = "/api/v1/imaging/dicomweb"


def hot_spot(rows: int, columns: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A heatmap that is hot in the middle of the image and cold elsewhere."""
    y, x = np.mgrid[0:rows, 0:columns]
    heat = np.exp(-(((y - rows / 2) / (rows / 8)) ** 2 + ((x - columns / 2) / (columns / 8)) ** 2))
    return (heat * 255).astype(np.uint8)


def test_the_capture_is_the_image_with_the_heatmap_and_the_caption_burned_in(tmp_path: Path) -> None:
    source = pydicom.dcmread(CXR_JPEG)
    heatmap = tmp_path / "heat.png"
    heatmap.write_bytes(pixels.to_png(hot_spot(512, 512)))  # half the image's size: resized to fit
    result = finding()
    image = sc.overlay_image(source, heatmap, result)
    ds = sc.secondary_capture(source, image, result)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    back = pydicom.dcmread(io.BytesIO(buffer.getvalue()))

    assert back.SOPClassUID == SecondaryCaptureImageStorage
    assert back.Modality == "OT"  # no model reads it again
    assert tasks_for(back.Modality, str(back.get("BodyPartExamined", "")), ["pneumonia"]) == []
    assert back.BurnedInAnnotation == "YES"
    assert back.SeriesDescription == "AI heatmap"
    assert back.PhotometricInterpretation == "RGB"
    assert back.pixel_array.shape == (1024, 1024, 3)
    assert back.PatientID == source.PatientID
    assert back.PatientName == source.PatientName
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID not in {
        source.SeriesInstanceUID,
        sr.series_uid_for(source.StudyInstanceUID),
    }
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert back.LossyImageCompression == "01"  # made from a JPEG baseline radiograph
    assert "not for diagnosis" in back.ImageComments
    assert "pneumonia p=0.87" in back.ImageComments
    assert "model 1.3.0" in back.ImageComments

    rgb = back.pixel_array.astype(int)
    centre = rgb[480:544, 480:544]
    assert (centre[..., 0] - centre[..., 2]).mean() > 40  # the hot spot is red
    corner = rgb[900:, :100]
    assert np.abs(corner[..., 0] - corner[..., 1]).max() <= 2  # where the model did not look: grey
    assert (rgb[:4] == 0).mean() > 0.5  # the caption's black band across the top
    assert (rgb[: 1024 // 40] == 255).any()  # and its white text


def test_a_narrow_image_gets_a_smaller_caption_that_fits() -> None:
    image = np.full((400, 120, 3), 128, dtype=np.uint8)
    captioned = sc.burn_in(image, finding())
    assert captioned.shape == image.shape
    assert (captioned[:, -3:] == 255).sum() < (captioned[:, :60] == 255).sum()


def test_after_an_analysis_the_study_has_a_heatmap_capture_that_qido_lists_and_wado_returns(
    web: TestClient, imaging: Kernel, token_for: Login, demo: Demo
) -> None:
    rad = token_for("rad.liu")
    patient = demo.patient("杨志强")
    data = make_instance(CXR_JPEG.name, patient_id=patient.mrn, BodyPartExamined="CHEST")
    radiograph = pydicom.dcmread(io.BytesIO(data))
    assert stow(web, rad, data).status_code == 200
    module.analyse_stored(imaging, str(radiograph.SOPInstanceUID))

    with imaging.sessions() as session:
        [result] = session.scalars(select(ImagingFinding)).all()
        assert result.heatmap_path
        # The radiograph fixture is itself a Secondary Capture: the AI's is the one the AI wrote.
        [capture] = session.scalars(
            select(ImagingInstance).where(
                ImagingInstance.sop_class_uid == SecondaryCaptureImageStorage,
                ImagingInstance.source == sr.AI_SOURCE,
            )
        ).all()
        series = session.get(ImagingSeries, capture.series_id)
        assert series is not None
        assert (series.modality, series.description) == ("OT", "AI heatmap")
        assert {s.modality for s in session.scalars(select(ImagingSeries))} == {"CR", "SR", "OT"}
        stored = pydicom.dcmread(dicom_store(imaging).path(capture.storage_path))
    assert stored.pixel_array.shape == (radiograph.Rows, radiograph.Columns, 3)
    assert stored.PatientID == patient.mrn
    assert stored.StudyInstanceUID == radiograph.StudyInstanceUID
    assert stored.BurnedInAnnotation == "YES"
    assert f"p={result.probability:.2f}" in stored.ImageComments

    # Writing the result again (a redelivered event) stores nothing new.
    before = sr.store_result(imaging, result.study_id)
    assert capture.sop_instance_uid in before
    assert sr.store_result(imaging, result.study_id) == before
    with imaging.sessions() as session:
        assert len(session.scalars(select(ImagingInstance)).all()) == 3  # radiograph, SR, SC

    study_uid = str(radiograph.StudyInstanceUID)
    listed = web.get(f"{DICOMWEB}/studies/{study_uid}/series", params={"Modality": "OT"}, headers=rad)
    [found] = listed.json()
    assert found["0008103E"]["Value"] == ["AI heatmap"]
    series_uid = found["0020000E"]["Value"][0]
    [instance] = web.get(f"{DICOMWEB}/studies/{study_uid}/series/{series_uid}/instances", headers=rad).json()
    assert instance["00080018"]["Value"] == [capture.sop_instance_uid]
    url = f"{DICOMWEB}/studies/{study_uid}/series/{series_uid}/instances/{capture.sop_instance_uid}"
    [(_, body)] = split_multipart(web.get(url, headers=rad))
    assert pydicom.dcmread(io.BytesIO(body)).BurnedInAnnotation == "YES"
    # The nurse of another ward may not see it, like the radiograph itself.
    assert web.get(url, headers=token_for("nurse.wang")).status_code == 403


def test_a_finding_whose_heatmap_is_gone_still_gets_its_report(imaging: Kernel, demo: Demo) -> None:
    with imaging.sessions() as session:
        data = make_instance(CXR_JPEG.name, patient_id=demo.patient("杨志强").mrn, BodyPartExamined="CHEST")
        Base.metadata.create_all(
            imaging.engine, tables=[Base.metadata.tables["imaging_finding"]], checkfirst=True
        )
        stored = store_instance(
            session,
            dicom_store(imaging),
            data,
            audit=imaging.audit,
            actor=SYSTEM_ACTOR,
            source="stow",
            organization_id=demo.organization("TFRM").id,
        )
        session.add(
            finding(
                id=None,
                study_id=stored.study_id,
                instance_id=stored.instance_id,
                heatmap_path="missing/heat.png",
            )
        )
        session.commit()
    written = sr.store_result(imaging, stored.study_id)
    assert len(written) == 1  # the SR; the capture is left out, and tried again next time
    with imaging.sessions() as session:
        written_by_ai = set(
            session.scalars(
                select(ImagingInstance.sop_class_uid).where(ImagingInstance.source == sr.AI_SOURCE)
            )
        )
    assert written_by_ai == {ComprehensiveSRStorage}
