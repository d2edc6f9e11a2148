"""The DICOM listener against real peers on loopback: pynetdicom's SCU and its storescu application."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, MRImageStorage
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    CTImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.conftest import Demo
from tests.imaging.test_store import CXR_JPEG, imaging, make_instance, sample_file, stored_events
from tianfu.core.audit.models import AuditRecord
from tianfu.core.deadletter import service as deadletters
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.kernel import Kernel
from tianfu.imaging.dicom import get_dicom_settings
from tianfu.imaging.dicom.scp import DEAD_LETTER_SOURCE, TianfuScp, accepted_transfer_syntaxes, start_scp
from tianfu.imaging.dicom.store import DicomStore
from tianfu.imaging.tables import ImagingInstance, ImagingStudy

__all__ = ["imaging"]  # the fixture, used by name

NATIVE: list[str] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.fixture
def scp(imaging: Kernel, demo: Demo, tmp_path: Path) -> Iterator[TianfuScp]:
    server = TianfuScp(
        imaging.sessions,
        DicomStore(tmp_path / "dicom"),
        imaging.audit,
        organization_id=demo.organization("TFRM").id,
        port=0,  # an ephemeral port
    )
    server.start()
    yield server
    server.stop()


def associate(
    scp: TianfuScp, contexts: list[tuple[str, list[str]]], ae_title: str = "MODALITY"
) -> Association:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    return ae.associate("127.0.0.1", scp.port, ae_title="TIANFU")


def echo(scp: TianfuScp) -> int:
    assoc = associate(scp, [(Verification, NATIVE)])
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def send(scp: TianfuScp, dataset: Dataset | Path, abstract: str, syntaxes: list[str]) -> Dataset:
    assoc = associate(scp, [(abstract, syntaxes)])
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return status


def rows(session: Session) -> list[ImagingInstance]:
    found = list(session.scalars(select(ImagingInstance).order_by(ImagingInstance.received_at)))
    session.commit()
    return found


def test_c_echo(scp: TianfuScp) -> None:
    assert echo(scp) == 0x0000


def test_the_scp_accepts_the_compressed_syntaxes_it_can_decode() -> None:
    syntaxes = accepted_transfer_syntaxes()
    for uid in (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
    ):
        assert uid in syntaxes  # JPEG baseline, JPEG lossless SV1, JPEG 2000 lossless, RLE


def test_c_store_of_a_15_bit_monochrome1_cr(scp: TianfuScp, db: Session) -> None:
    path = sample_file("RG1_UNCR.dcm")  # 7 MB, 1955×1841
    status = send(scp, path, ComputedRadiographyImageStorage, NATIVE)
    assert status.Status == 0x0000
    [instance] = rows(db)
    assert (instance.rows, instance.columns, instance.source, instance.calling_ae) == (
        1955,
        1841,
        "c-store",
        "MODALITY",
    )
    stored = pydicom.dcmread(scp._store.path(instance.storage_path))
    original = pydicom.dcmread(path)
    assert stored.SOPInstanceUID == original.SOPInstanceUID
    assert stored.PixelData == original.PixelData
    assert stored.file_meta.SourceApplicationEntityTitle == "MODALITY"
    [event] = stored_events(db)
    assert (event["modality"], event["source"]) == ("CR", "c-store")
    record = db.scalars(select(AuditRecord).where(AuditRecord.action == "imaging.instance.store")).one()
    assert (record.actor_username, record.actor_role, record.client_ip) == (
        "dicom:MODALITY",
        "system",
        "127.0.0.1",
    )
    db.commit()


def test_storescu_sends_a_jpeg_radiograph(scp: TianfuScp, db: Session) -> None:
    command = [sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(scp.port), str(CXR_JPEG)]
    done = subprocess.run([*command, "-aet", "TEST", "-cx"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    [instance] = rows(db)
    assert (instance.calling_ae, instance.transfer_syntax_uid) == ("TEST", JPEGBaseline8Bit)
    study = db.scalars(select(ImagingStudy)).one()
    assert (study.patient_id, study.modalities) == (None, "CR")  # an anonymous RSNA image: unmatched, kept
    assert scp._store.read(instance.storage_path).endswith(CXR_JPEG.read_bytes()[-1000:])
    db.commit()


def test_a_patients_jpeg_image_over_c_store_is_matched(scp: TianfuScp, db: Session, demo: Demo) -> None:
    patient = demo.patient("刘芳")
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(make_instance(CXR_JPEG.name, patient_id=patient.mrn)))
    assert send(scp, ds, SecondaryCaptureImageStorage, [JPEGBaseline8Bit]).Status == 0x0000
    assert db.scalars(select(ImagingStudy.patient_id)).one() == patient.id
    db.commit()


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's complaints about the garbage
def test_bad_input_gets_failure_statuses_and_the_scp_keeps_serving(
    scp: TianfuScp, db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Send files' bytes as they are (no decoding by the SCU), as a broken modality would.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    valid = make_instance(patient_id="X")
    header_end = 132 + 12 + int.from_bytes(valid[140:144], "little")  # preamble + meta group
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(valid[:header_end] + b"this is not a DICOM data set, just text\r\n" * 50)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(valid[:-4000])  # pixel data cut short

    not_dicom = send(scp, garbage, CTImageStorage, NATIVE)
    assert not_dicom.Status == 0xC000
    cut = send(scp, truncated, CTImageStorage, NATIVE)
    assert cut.Status == 0xC000
    assert "truncated" in cut.ErrorComment

    assert echo(scp) == 0x0000
    good = tmp_path / "good.dcm"
    good.write_bytes(valid)
    assert send(scp, good, CTImageStorage, NATIVE).Status == 0x0000
    assert len(rows(db)) == 1

    letters = list(db.scalars(select(DeadLetter).where(DeadLetter.source == DEAD_LETTER_SOURCE)))
    assert len(letters) == 2
    assert all(
        letter.meta["status"] == "0xC000" and letter.meta["calling_ae"] == "MODALITY" for letter in letters
    )
    kept = {deadletters.raw_bytes(letter) for letter in letters}
    # Kept as DICOM files (a header around the data set as received), so an admin can re-import them.
    assert all(k[128:132] == b"DICM" for k in kept)
    assert any(k.endswith(valid[header_end:-4000]) for k in kept)
    failures = db.scalars(
        select(AuditRecord).where(AuditRecord.action == "imaging.instance.store", AuditRecord.outcome != 0)
    ).all()
    assert len(failures) == 2
    db.commit()


def test_duplicates_over_c_store(scp: TianfuScp, db: Session) -> None:
    data = make_instance(patient_id="X")
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    assert send(scp, ds, CTImageStorage, NATIVE).Status == 0x0000
    assert send(scp, ds, CTImageStorage, NATIVE).Status == 0x0000  # a retry after a lost response
    assert len(rows(db)) == 1
    ds.SeriesDescription = "changed under the same SOP Instance UID"
    conflict = send(scp, ds, CTImageStorage, NATIVE)
    assert conflict.Status == 0x0111
    assert "already stored" in conflict.ErrorComment
    assert len(rows(db)) == 1
    letter = db.scalars(select(DeadLetter).where(DeadLetter.source == DEAD_LETTER_SOURCE)).one()
    assert letter.meta["status"] == "0x0111"
    db.commit()


def test_a_data_set_that_does_not_match_its_request_is_refused(scp: TianfuScp, db: Session) -> None:
    data = make_instance(patient_id="X")
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    body = data[132 + 12 + int.from_bytes(data[140:144], "little") :]
    status, comment = scp.receive(
        body,
        str(ds.file_meta.TransferSyntaxUID),
        sop_class_uid=MRImageStorage,  # the data set is a CT image
        sop_instance_uid=ds.SOPInstanceUID,
        calling_ae="MODALITY",
    )
    assert status == 0xA900
    assert "differs" in comment
    assert rows(db) == []


def test_storage_failure_is_out_of_resources_not_a_crash(
    scp: TianfuScp, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(relative: str, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scp._store, "write", disk_full)
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(make_instance(patient_id="X")))
    assert send(scp, ds, CTImageStorage, NATIVE).Status == 0xA700
    assert rows(db) == []  # the transaction was rolled back with the failed write
    monkeypatch.undo()
    assert send(scp, ds, CTImageStorage, NATIVE).Status == 0x0000


def test_only_listed_calling_ae_titles_may_send(imaging: Kernel, demo: Demo, tmp_path: Path) -> None:
    server = TianfuScp(
        imaging.sessions,
        DicomStore(tmp_path / "dicom"),
        imaging.audit,
        organization_id=demo.organization("TFRM").id,
        port=0,
        calling_aes=["CT01"],
    )
    server.start()
    try:
        refused = associate(server, [(Verification, NATIVE)], ae_title="STRANGER")
        assert refused.is_rejected
        allowed = associate(server, [(Verification, NATIVE)], ae_title="CT01")
        assert allowed.is_established
        allowed.release()
    finally:
        server.stop()
    assert not server.running


@pytest.fixture
def dicom_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_dicom_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_dicom_settings.cache_clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_module_service_starts_and_stops_the_listener(
    imaging: Kernel, dicom_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dicom_env.setenv("TIANFU_DICOM_PORT", "0")
    stop = await start_scp(imaging)
    assert "imaging.scp" not in imaging.extensions  # port 0: off
    await stop()

    port = free_port()
    dicom_env.setenv("TIANFU_DICOM_PORT", str(port))
    get_dicom_settings.cache_clear()
    stop = await start_scp(imaging)  # two institutions and none named: refuses to guess
    assert "imaging.scp" not in imaging.extensions
    assert "TIANFU_DICOM_ORGANIZATION" in caplog.text
    await stop()

    dicom_env.setenv("TIANFU_DICOM_ORGANIZATION", "TFRM")
    dicom_env.setenv("TIANFU_DICOM_AE_TITLE", "TIANFU_TEST")
    get_dicom_settings.cache_clear()
    stop = await start_scp(imaging)
    scp = imaging.extensions["imaging.scp"]
    assert (scp.port, scp.ae_title) == (port, "TIANFU_TEST")
    assert await asyncio.to_thread(echo, scp) == 0x0000
    await stop()
    assert "imaging.scp" not in imaging.extensions
