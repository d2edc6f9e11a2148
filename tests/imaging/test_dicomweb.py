"""DICOMweb through an app: STOW-RS, QIDO-RS and WADO-RS with the care relationship, audit and problems.

The app here mounts only the DICOMweb router and the kernel's problem handlers, on the test kernel, so
these tests run before the imaging module is registered with ``tianfu.app``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.imaging.test_pixels import read_png
from tests.imaging.test_store import CXR_JPEG, imaging, make_instance, sample_file, stored_events
from tianfu.core.audit.models import AuditRecord
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.http import problems
from tianfu.core.kernel import Kernel
from tianfu.imaging import dicomweb
from tianfu.imaging.tables import ImagingStudy

__all__ = ["imaging"]  # the fixture, used by name

Login = Callable[[str], dict[str, str]]
BOUNDARY = "tianfu-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
# Failure Reasons (0008,1197) as JSON numbers.
NOT_AUTHORIZED, DOES_NOT_MATCH, CANNOT_UNDERSTAND = 0x0124, 0xA900, 0xC000


@pytest.fixture
def web(imaging: Kernel) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.kernel = imaging
    problems.install(app)
    app.include_router(dicomweb.router)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


def multipart(*parts: bytes) -> bytes:
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


def stow(web: TestClient, headers: dict[str, str], *parts: bytes, study: str = "") -> Any:
    path = f"/api/v1/imaging/dicomweb/studies/{study}" if study else "/api/v1/imaging/dicomweb/studies"
    return web.post(path, content=multipart(*parts), headers={**headers, "Content-Type": STOW_TYPE})


def split_multipart(response: Any) -> list[tuple[str, bytes]]:
    """(part content type, part body) of a multipart/related response."""
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    pieces = response.content.split(b"--" + boundary.encode())
    parts = []
    for piece in pieces[1:-1]:
        head, _, body = piece.partition(b"\r\n\r\n")
        content_type = head.decode().split("Content-Type:")[1].strip()
        parts.append((content_type, body[:-2]))  # the CRLF before the next delimiter
    assert pieces[-1].startswith(b"--")
    return parts


def uids(study: dict[str, Any]) -> str:
    return str(study["0020000D"]["Value"][0])


@pytest.fixture
def hospital(web: TestClient, token_for: Login, demo: Demo) -> dict[str, Any]:
    """Three studies stored by the radiologist: 刘芳 (cardiology, CT, two series), 杨志强 (respiratory, a
    JPEG CR) and an unmatched MR."""
    rad = token_for("rad.liu")
    liu, yang = demo.patient("刘芳"), demo.patient("杨志强")
    a = generate_uid()
    a1 = make_instance(patient_id=liu.mrn, study_uid=a, study_date="20250611", SeriesNumber=1)
    a2 = make_instance(patient_id=liu.mrn, study_uid=a, study_date="20250611", SeriesNumber=2)
    b_file = make_instance(CXR_JPEG.name, patient_id=yang.mrn, study_date="20250612")
    c_file = make_instance("MR_small.dcm", patient_id="EXT-1", study_date="20250101")
    for data in (a1, a2, b_file, c_file):
        response = stow(web, rad, data)
        assert response.status_code == 200, response.text
    return {
        "a": a,
        "a1": a1,
        "b": str(pydicom.dcmread(io.BytesIO(b_file)).StudyInstanceUID),
        "b_file": b_file,
        "c": str(pydicom.dcmread(io.BytesIO(c_file)).StudyInstanceUID),
        "liu": liu.id,
        "yang": yang.id,
    }


# --- STOW-RS -----------------------------------------------------------------------------------------------


def test_stow_stores_and_reports_each_instance(
    web: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    patient = demo.patient("刘芳")
    good = make_instance(patient_id=patient.mrn)
    response = stow(web, token_for("rad.liu"), good, b"this part is not DICOM at all")
    assert response.status_code == 202  # some stored, some failed
    assert response.headers["content-type"] == "application/dicom+json"
    body = response.json()
    ds = pydicom.dcmread(io.BytesIO(good))
    [stored] = body["00081199"]["Value"]
    assert stored["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert stored["00081190"]["Value"][0].startswith(
        f"http://testserver/api/v1/imaging/dicomweb/studies/{ds.StudyInstanceUID}/"
    )
    [failed] = body["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert "not a DICOM file" in response.headers["warning"]
    assert body["00081190"]["Value"] == [
        f"http://testserver/api/v1/imaging/dicomweb/studies/{ds.StudyInstanceUID}"
    ]

    study = db.scalars(select(ImagingStudy)).one()
    assert study.patient_id == patient.id
    assert stored_events(db)[0]["source"] == "stow"
    records = db.scalars(select(AuditRecord).where(AuditRecord.action == "imaging.instance.store")).all()
    assert {(r.outcome, r.actor_username) for r in records} == {(0, "rad.liu"), (4, "rad.liu")}
    assert db.scalars(select(DeadLetter.source)).all() == ["dicomweb-stow"]
    db.commit()

    again = stow(web, token_for("rad.liu"), good)  # the same instance again: success, stored once
    assert again.status_code == 200


def test_stow_refuses_images_of_a_patient_outside_the_callers_care(
    web: TestClient, token_for: Login, db: Session, demo: Demo
) -> None:
    other_ward = demo.patient("杨志强")  # respiratory ward; nurse.wang works in cardiology
    response = stow(web, token_for("nurse.wang"), make_instance(patient_id=other_ward.mrn))
    assert response.status_code == 409  # nothing stored
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [NOT_AUTHORIZED]
    assert db.scalars(select(ImagingStudy)).all() == []
    denied = db.scalars(select(AuditRecord).where(AuditRecord.outcome != 0)).all()
    assert other_ward.id in {p for r in denied for p in r.patient_ids}
    db.commit()


def test_stow_to_a_study_refuses_instances_of_another(web: TestClient, token_for: Login) -> None:
    response = stow(web, token_for("rad.liu"), make_instance(patient_id="X"), study=generate_uid())
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [DOES_NOT_MATCH]


def test_stow_bad_requests_are_problems(web: TestClient, token_for: Login) -> None:
    rad = token_for("rad.liu")
    as_json = web.post("/api/v1/imaging/dicomweb/studies", json={"a": 1}, headers=rad)
    assert as_json.status_code == 415
    assert as_json.headers["content-type"] == "application/problem+json"
    xml = web.post(
        "/api/v1/imaging/dicomweb/studies",
        content=b"<x/>",
        headers={
            **rad,
            "Content-Type": f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
        },
    )
    assert xml.status_code == 415
    no_boundary = web.post(
        "/api/v1/imaging/dicomweb/studies",
        content=b"x",
        headers={**rad, "Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert no_boundary.status_code == 422
    garbled = web.post(
        "/api/v1/imaging/dicomweb/studies",
        content=b"no parts here",
        headers={**rad, "Content-Type": STOW_TYPE},
    )
    assert garbled.status_code == 422
    assert (
        web.post(
            "/api/v1/imaging/dicomweb/studies",
            content=multipart(),
            headers={**rad, "Content-Type": STOW_TYPE},
        ).status_code
        == 422
    )
    for role in ("auditor", "patient.liu", "admin"):
        assert stow(web, token_for(role), make_instance()).status_code == 403
    assert stow(web, {}, make_instance()).status_code == 401


# --- QIDO-RS -----------------------------------------------------------------------------------------------


def search(web: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = web.get("/api/v1/imaging/dicomweb/studies", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    result: list[dict[str, Any]] = response.json()
    return result


def test_qido_shows_each_caller_the_studies_of_their_care(
    web: TestClient, token_for: Login, hospital: dict[str, Any], db: Session
) -> None:
    a, b, c = hospital["a"], hospital["b"], hospital["c"]
    assert {uids(s) for s in search(web, token_for("rad.liu"))} == {a, b, c}
    assert {uids(s) for s in search(web, token_for("nurse.wang"))} == {a, c}  # cardiology + unmatched
    assert {uids(s) for s in search(web, token_for("dr.chen"))} == {b, c}  # respiratory + unmatched
    assert search(web, token_for("consult.zhao")) == []  # consultants see only what is shared with them
    assert search(web, token_for("dr.huang")) == []  # another institution
    assert web.get("/api/v1/imaging/dicomweb/studies", headers=token_for("auditor")).status_code == 403

    [study] = search(web, token_for("nurse.wang"), PatientID="TFRM-000003")
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00201206"]["Value"] == [2]
    assert study["00201208"]["Value"] == [2]
    assert study["00100020"]["Value"] == ["TFRM-000003"]
    assert study["00081190"]["Value"] == [f"http://testserver/api/v1/imaging/dicomweb/studies/{a}"]
    record = db.scalars(
        select(AuditRecord)
        .where(AuditRecord.action == "imaging.study.search")
        .order_by(AuditRecord.seq.desc())
    ).first()
    assert record is not None
    assert record.action_type == "R"
    assert record.patient_ids == [hospital["liu"]]
    db.commit()


def test_qido_query_keys(web: TestClient, token_for: Login, hospital: dict[str, Any]) -> None:
    rad = token_for("rad.liu")
    a, b, c = hospital["a"], hospital["b"], hospital["c"]
    assert {uids(s) for s in search(web, rad, StudyDate="20250611-20250612")} == {a, b}
    assert {uids(s) for s in search(web, rad, StudyDate="-20250131")} == {c}
    assert {uids(s) for s in search(web, rad, StudyDate="20250612")} == {b}
    assert {uids(s) for s in search(web, rad, ModalitiesInStudy="CR")} == {b}
    assert {uids(s) for s in search(web, rad, PatientID="TFRM-*")} == {a, b}
    assert {uids(s) for s in search(web, rad, StudyInstanceUID=f"{a},{c}")} == {a, c}
    assert [uids(s) for s in search(web, rad, limit=1)] == [b]  # newest study date first
    assert [uids(s) for s in search(web, rad, limit=1, offset=2)] == [c]
    bad = web.get("/api/v1/imaging/dicomweb/studies", params={"StudyDate": "2025"}, headers=rad)
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert web.get("/api/v1/imaging/dicomweb/studies", params={"limit": 0}, headers=rad).status_code == 422
    assert (
        web.get(
            "/api/v1/imaging/dicomweb/studies", headers={**rad, "Accept": "application/dicom+xml"}
        ).status_code
        == 406
    )


def test_qido_series_and_instances(web: TestClient, token_for: Login, hospital: dict[str, Any]) -> None:
    nurse = token_for("nurse.wang")
    a = hospital["a"]
    series = web.get(f"/api/v1/imaging/dicomweb/studies/{a}/series", headers=nurse).json()
    assert [s["00200011"]["Value"] for s in series] == [[1], [2]]
    assert all(s["00080060"]["Value"] == ["CT"] for s in series)
    series_uid = series[0]["0020000E"]["Value"][0]
    [instance] = web.get(
        f"/api/v1/imaging/dicomweb/studies/{a}/series/{series_uid}/instances", headers=nurse
    ).json()
    assert instance["00280010"]["Value"] == [128]
    assert instance["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    # Another ward's patient: refused (and audited); another institution's unmatched study: not found.
    assert (
        web.get(f"/api/v1/imaging/dicomweb/studies/{hospital['b']}/series", headers=nurse).status_code == 403
    )
    assert (
        web.get(
            f"/api/v1/imaging/dicomweb/studies/{hospital['c']}/series", headers=token_for("dr.huang")
        ).status_code
        == 404
    )
    assert (
        web.get(f"/api/v1/imaging/dicomweb/studies/{a}/series/1.2.3/instances", headers=nurse).status_code
        == 404
    )
    assert web.get("/api/v1/imaging/dicomweb/studies/not-a-uid/series", headers=nurse).status_code == 422


# --- WADO-RS -----------------------------------------------------------------------------------------------


def _first_instance(web: TestClient, headers: dict[str, str], study: str) -> str:
    series = web.get(f"/api/v1/imaging/dicomweb/studies/{study}/series", headers=headers).json()[0][
        "0020000E"
    ]["Value"][0]
    instance = web.get(
        f"/api/v1/imaging/dicomweb/studies/{study}/series/{series}/instances", headers=headers
    ).json()[0]
    sop = instance["00080018"]["Value"][0]
    return f"/api/v1/imaging/dicomweb/studies/{study}/series/{series}/instances/{sop}"


def test_wado_returns_the_stored_file_or_explicit_little_endian(
    web: TestClient, token_for: Login, hospital: dict[str, Any], db: Session
) -> None:
    rad = token_for("rad.liu")
    url = _first_instance(web, rad, hospital["b"])  # the JPEG radiograph
    as_stored = web.get(
        url, headers={**rad, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert as_stored.status_code == 200
    [(content_type, data)] = split_multipart(as_stored)
    assert content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert data == hospital["b_file"]

    default = web.get(url, headers={**rad, "Accept": 'multipart/related; type="application/dicom"'})
    [(content_type, data)] = split_multipart(default)
    assert content_type.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert len(ds.PixelData) == 1024 * 1024
    original = pydicom.dcmread(io.BytesIO(hospital["b_file"]))
    assert ds.SOPInstanceUID == original.SOPInstanceUID  # the same instance, another encoding
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)

    j2k = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'
    assert web.get(url, headers={**rad, "Accept": j2k}).status_code == 406
    assert web.get(url, headers={**rad, "Accept": "application/json"}).status_code == 406
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "imaging.instance.retrieve")).first()
    assert record is not None
    assert record.patient_ids == [hospital["yang"]]
    db.commit()


def test_wado_retrieves_a_whole_study(web: TestClient, token_for: Login, hospital: dict[str, Any]) -> None:
    response = web.get(f"/api/v1/imaging/dicomweb/studies/{hospital['a']}", headers=token_for("dr.zhang"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    parts = split_multipart(response)
    assert len(parts) == 2
    assert hospital["a1"] in {data for _, data in parts}
    assert (
        web.get(f"/api/v1/imaging/dicomweb/studies/{hospital['a']}", headers=token_for("dr.chen")).status_code
        == 403
    )


def test_rendered_png(web: TestClient, token_for: Login, hospital: dict[str, Any]) -> None:
    rad = token_for("rad.liu")
    url = _first_instance(web, rad, hospital["b"]) + "/rendered"
    response = web.get(url, headers={**rad, "Accept": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = read_png(response.content)
    assert image.shape == (1024, 1024)
    windowed = read_png(web.get(url, params={"window": "128,256,linear"}, headers=rad).content)
    assert windowed.shape == (1024, 1024)
    assert web.get(url, params={"window": "128"}, headers=rad).status_code == 422
    assert web.get(url, headers={**rad, "Accept": "image/jpeg"}).status_code == 406
    assert web.get(url, headers=token_for("nurse.wang")).status_code == 403


def test_an_object_without_pixels_cannot_be_rendered(web: TestClient, token_for: Login) -> None:
    rad = token_for("rad.liu")
    plan = pydicom.dcmread(sample_file("rtplan.dcm"))
    plan.PatientID = "EXT-2"
    buffer = io.BytesIO()
    plan.save_as(buffer, enforce_file_format=True)
    assert stow(web, rad, buffer.getvalue()).status_code == 200
    url = _first_instance(web, rad, str(plan.StudyInstanceUID)) + "/rendered"
    response = web.get(url, headers=rad)
    assert response.status_code == 422
    assert "no pixel data" in response.json()["detail"]


def test_retrieve_urls_follow_where_the_router_is_mounted(imaging: Kernel, token_for: Login) -> None:
    app = FastAPI()
    app.state.kernel = imaging
    problems.install(app)
    api = APIRouter(prefix="/pacs")  # behind another prefix, e.g. a reverse proxy path
    api.include_router(dicomweb.router)
    app.include_router(api)
    with TestClient(app, base_url="http://testserver") as client:
        data = make_instance(patient_id="X")
        response = client.post(
            "/pacs/api/v1/imaging/dicomweb/studies",
            content=multipart(data),
            headers={**token_for("rad.liu"), "Content-Type": STOW_TYPE},
        )
        assert response.status_code == 200
        study = pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID
        root = "http://testserver/pacs/api/v1/imaging/dicomweb"
        assert response.json()["00081190"]["Value"] == [f"{root}/studies/{study}"]
        [found] = client.get("/pacs/api/v1/imaging/dicomweb/studies", headers=token_for("rad.liu")).json()
        assert found["00081190"]["Value"] == [f"{root}/studies/{study}"]


# --- WADO-RS metadata, frames and bulk data ----------------------------------------------------------------

RG1_FRAME_BYTES = 1955 * 1841 * 1 * 16 // 8  # rows × columns × samples × bits allocated / 8


@pytest.fixture
def radiographs(web: TestClient, token_for: Login, demo: Demo) -> dict[str, Any]:
    """杨志强's (respiratory ward) study: pydicom-data's uncompressed 16-bit CR and the JPEG CR, stored by
    the radiologist in one study."""
    rad = token_for("rad.liu")
    yang = demo.patient("杨志强")
    study = generate_uid()
    uncompressed = make_instance("RG1_UNCR.dcm", patient_id=yang.mrn, study_uid=study, SeriesNumber=1)
    jpeg = make_instance(CXR_JPEG.name, patient_id=yang.mrn, study_uid=study, SeriesNumber=2)
    for data in (uncompressed, jpeg):
        assert stow(web, rad, data).status_code == 200
    return {
        "study": study,
        "yang": yang.id,
        "mrn": yang.mrn,
        "uncompressed": pydicom.dcmread(io.BytesIO(uncompressed)),
        "jpeg": pydicom.dcmread(io.BytesIO(jpeg)),
    }


def instance_path(ds: pydicom.Dataset) -> str:
    return (
        f"/api/v1/imaging/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def test_metadata_is_the_dicom_json_model_with_bulk_data_uris(
    web: TestClient, token_for: Login, radiographs: dict[str, Any], db: Session
) -> None:
    rad = token_for("rad.liu")
    study = radiographs["study"]
    response = web.get(f"/api/v1/imaging/dicomweb/studies/{study}/metadata", headers=rad)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    uncompressed, jpeg = response.json()  # in series order
    source = radiographs["uncompressed"]
    url = "http://testserver" + instance_path(source)

    assert uncompressed["00080018"] == {"vr": "UI", "Value": [source.SOPInstanceUID]}
    assert uncompressed["0020000D"] == {"vr": "UI", "Value": [study]}
    assert uncompressed["00100020"] == {"vr": "LO", "Value": [radiographs["mrn"]]}
    assert uncompressed["00080060"] == {"vr": "CS", "Value": ["CR"]}
    assert uncompressed["00280010"] == {"vr": "US", "Value": [1955]}
    assert uncompressed["00280011"] == {"vr": "US", "Value": [1841]}
    assert uncompressed["00280100"] == {"vr": "US", "Value": [16]}
    assert uncompressed["00280004"] == {"vr": "CS", "Value": ["MONOCHROME1"]}
    assert uncompressed["00081190"] == {"vr": "UR", "Value": [url]}
    assert uncompressed["00083002"] == {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}
    assert uncompressed["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    assert "InlineBinary" not in json.dumps(uncompressed["7FE00010"])
    assert "00020010" not in uncompressed  # file meta information is not part of the model
    assert jpeg["7FE00010"]["vr"] == "OB"
    assert jpeg["00083002"] == {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.50"]}

    # The series and instance resources answer the same model for their instances.
    path = instance_path(source)
    series_path = path.rsplit("/instances/", 1)[0]
    assert web.get(f"{series_path}/metadata", headers=rad).json() == [uncompressed]
    assert web.get(f"{path}/metadata", headers=rad).json() == [uncompressed]

    # The BulkDataURI is retrievable: the pixel data, one part per frame.
    bulk = web.get(uncompressed["7FE00010"]["BulkDataURI"].removeprefix("http://testserver"), headers=rad)
    assert bulk.status_code == 200
    assert bulk.headers["content-type"].startswith('multipart/related; type="application/octet-stream"')
    [(_, pixels)] = split_multipart(bulk)
    assert len(pixels) == RG1_FRAME_BYTES

    actions = db.scalars(
        select(AuditRecord.action).where(
            AuditRecord.action.like("imaging.%.metadata"), AuditRecord.action_type == "R"
        )
    ).all()
    assert sorted(actions) == [
        "imaging.instance.metadata",
        "imaging.series.metadata",
        "imaging.study.metadata",
    ]
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "imaging.study.metadata")).one()
    assert record.patient_ids == [radiographs["yang"]]
    assert record.actor_username == "rad.liu"
    db.commit()


def test_bulk_data_inside_a_sequence_has_its_own_uri(web: TestClient, token_for: Login) -> None:
    rad = token_for("rad.liu")
    icon = pydicom.Dataset()
    icon.add_new(0x7FE00010, "OB", bytes(range(256)) * 8)  # 2 KiB: over the inline threshold
    icon.add_new(0x00280010, "US", 64)
    data = make_instance(patient_id="EXT-3", IconImageSequence=[icon])
    ds = pydicom.dcmread(io.BytesIO(data))
    assert stow(web, rad, data).status_code == 200
    [model] = web.get(f"{instance_path(ds)}/metadata", headers=rad).json()
    item = model["00880200"]["Value"][0]
    assert item["00280010"] == {"vr": "US", "Value": [64]}
    uri = item["7FE00010"]["BulkDataURI"]
    assert uri == f"http://testserver{instance_path(ds)}/bulkdata/00880200/0/7FE00010"
    [(content_type, value)] = split_multipart(web.get(uri.removeprefix("http://testserver"), headers=rad))
    assert content_type.startswith("application/octet-stream")
    assert value == bytes(range(256)) * 8
    missing = web.get(f"{instance_path(ds)}/bulkdata/00880200/5/7FE00010", headers=rad)
    assert missing.status_code == 404


def test_frames_are_native_pixels_one_part_each(
    web: TestClient, token_for: Login, radiographs: dict[str, Any], db: Session
) -> None:
    rad = token_for("rad.liu")
    source = radiographs["uncompressed"]
    response = web.get(f"{instance_path(source)}/frames/1", headers=rad)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith('multipart/related; type="application/octet-stream"')
    [(content_type, frame)] = split_multipart(response)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert len(frame) == RG1_FRAME_BYTES
    np.testing.assert_array_equal(np.frombuffer(frame, dtype="<u2").reshape(1955, 1841), source.pixel_array)
    assert len(split_multipart(web.get(f"{instance_path(source)}/frames/1,1", headers=rad))) == 2

    # A compressed radiograph: decoded by default, as stored with transfer-syntax=*.
    jpeg = radiographs["jpeg"]
    [(content_type, frame)] = split_multipart(web.get(f"{instance_path(jpeg)}/frames/1", headers=rad))
    assert content_type.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    assert len(frame) == 1024 * 1024 * 1 * 8 // 8
    np.testing.assert_array_equal(np.frombuffer(frame, dtype=np.uint8).reshape(1024, 1024), jpeg.pixel_array)
    as_stored = web.get(
        f"{instance_path(jpeg)}/frames/1",
        headers={**rad, "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    [(content_type, frame)] = split_multipart(as_stored)
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert frame.startswith(b"\xff\xd8")  # the JPEG stream itself
    image_jpeg = web.get(
        f"{instance_path(jpeg)}/frames/1", headers={**rad, "Accept": 'multipart/related; type="image/png"'}
    )
    assert image_jpeg.status_code == 406

    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "imaging.instance.frames")).first()
    assert record is not None
    assert record.action_type == "R"
    assert record.patient_ids == [radiographs["yang"]]
    assert record.detail["sop_instance_uid"] == source.SOPInstanceUID
    db.commit()


def test_bad_frame_numbers_are_problems(
    web: TestClient, token_for: Login, radiographs: dict[str, Any]
) -> None:
    rad = token_for("rad.liu")
    path = instance_path(radiographs["uncompressed"])
    for frames in ("0", "a", "1,x", "-1", "1,,2", " "):
        response = web.get(f"{path}/frames/{frames}", headers=rad)
        assert response.status_code == 400, frames
        assert response.headers["content-type"] == "application/problem+json"
    past_the_end = web.get(f"{path}/frames/2", headers=rad)
    assert past_the_end.status_code == 404
    assert "has 1" in past_the_end.json()["detail"]
    assert web.get(f"{path}/frames/1,2", headers=rad).status_code == 404


def test_metadata_and_frames_are_refused_outside_the_patients_care(
    web: TestClient, token_for: Login, radiographs: dict[str, Any], db: Session
) -> None:
    nurse = token_for("nurse.wang")  # cardiology; 杨志强 is on the respiratory ward
    path = instance_path(radiographs["uncompressed"])
    for url in (
        f"/api/v1/imaging/dicomweb/studies/{radiographs['study']}/metadata",
        f"{path.rsplit('/instances/', 1)[0]}/metadata",
        f"{path}/metadata",
        f"{path}/frames/1",
        f"{path}/bulkdata/7FE00010",
    ):
        response = web.get(url, headers=nurse)
        assert response.status_code == 403, url
        assert response.headers["content-type"] == "application/problem+json"
    denied = db.scalars(
        select(AuditRecord).where(AuditRecord.outcome != 0, AuditRecord.actor_username == "nurse.wang")
    ).all()
    assert {r.action for r in denied} >= {
        "imaging.study.metadata",
        "imaging.series.metadata",
        "imaging.instance.metadata",
        "imaging.instance.frames",
        "imaging.instance.bulkdata",
    }
    assert all(radiographs["yang"] in r.patient_ids for r in denied)
    db.commit()  # the read holds SQLite's lock until it ends
    # Another institution's physician is refused too.
    assert web.get(f"{path}/frames/1", headers=token_for("dr.huang")).status_code in {403, 404}
