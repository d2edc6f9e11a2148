"""The analyser under load: several modalities sending at once over C-STORE, every image gets its finding;
no transaction is open while the models run; a failure is visible; nothing stored is left unread."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pynetdicom import AE
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from tests.conftest import Demo
from tests.imaging.test_store import CXR_JPEG, make_instance
from tianfu.app import create_app
from tianfu.core.audit.service import SYSTEM_ACTOR
from tianfu.core.bus.models import OutboxEvent
from tianfu.core.deadletter.models import DeadLetter
from tianfu.core.kernel import Kernel
from tianfu.core.settings import Settings
from tianfu.imaging import findings, module
from tianfu.imaging.dicom.scp import TianfuScp
from tianfu.imaging.dicom.store import dicom_store, store_instance
from tianfu.imaging.findings import ImagingFinding
from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

SENDERS = 4
STUDIES_EACH = 3


@pytest.fixture
def app(kernel: Kernel, settings: Settings) -> Iterator[TestClient]:
    """The app with its bus consumers and module services running (the DICOM port stays unset)."""
    with TestClient(create_app(settings, kernel=kernel)) as client:
        yield client


def radiograph(patient_id: str = "") -> bytes:
    return make_instance(CXR_JPEG.name, patient_id=patient_id, BodyPartExamined="CHEST")


def stored(kernel: Kernel, demo: Demo, data: bytes) -> str:
    """Store an instance the way C-STORE does (its event goes to the outbox); its SOP Instance UID."""
    with kernel.sessions() as session:
        result = store_instance(
            session,
            dicom_store(kernel),
            data,
            audit=kernel.audit,
            actor=SYSTEM_ACTOR,
            source="c-store",
            organization_id=demo.organization("TFRM").id,
        )
        session.commit()
    return result.sop_instance_uid


def finding_uids(kernel: Kernel) -> set[str]:
    with kernel.sessions() as session:
        return set(
            session.scalars(
                select(ImagingInstance.sop_instance_uid).join(
                    ImagingFinding, ImagingFinding.instance_id == ImagingInstance.id
                )
            )
        )


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_concurrent_c_store_senders_each_get_a_finding(
    app: TestClient, kernel: Kernel, demo: Demo, tmp_path: Path
) -> None:
    # The received data sets are built before the senders start, one per study: a pydicom Dataset.copy()
    # shares its elements, and threads changing the UIDs of shared copies send (and wait for) each
    # other's studies. That race, in the benchmark, was the "lost analysis" of several senders at once.
    datasets = [
        [pydicom.dcmread(io.BytesIO(radiograph())) for _ in range(STUDIES_EACH)] for _ in range(SENDERS)
    ]
    scp = TianfuScp(
        kernel.sessions,
        dicom_store(kernel),
        kernel.audit,
        organization_id=demo.organization("TFRM").id,
        port=0,
    )
    scp.start()
    statuses: list[int] = []
    errors: list[BaseException] = []

    def send(batch: list[pydicom.Dataset], k: int) -> None:
        try:
            ae = AE(ae_title=f"MODALITY{k}")
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
            for ds in batch:  # one association per study, as modalities do
                ae.requested_contexts = []
                ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
                assoc = ae.associate("127.0.0.1", scp.port, ae_title="TIANFU")
                assert assoc.is_established
                try:
                    statuses.append(int(assoc.send_c_store(ds).Status))
                finally:
                    assoc.release()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=send, args=(batch, k)) for k, batch in enumerate(datasets)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        scp.stop()
    assert not errors
    assert statuses == [0x0000] * SENDERS * STUDIES_EACH
    sent = {str(ds.SOPInstanceUID) for batch in datasets for ds in batch}
    wait_for(lambda: sent <= finding_uids(kernel))
    with kernel.sessions() as session:
        studies = session.scalars(
            select(ImagingStudy.status).where(
                ImagingStudy.study_instance_uid.in_([str(ds.StudyInstanceUID) for b in datasets for ds in b])
            )
        ).all()
        assert sorted(studies) == ["analysed"] * len(sent)
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0
        # One finding per image: deliveries racing each other added nothing twice.
        counts = session.execute(
            select(ImagingFinding.instance_id, func.count()).group_by(ImagingFinding.instance_id)
        ).all()
        assert {n for _, n in counts} == {1}


def test_no_transaction_is_open_while_the_models_run(
    kernel: Kernel, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite an open transaction holds the one write lock: C-STORE must not wait for the models."""
    if kernel.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single write lock")
    uid = stored(kernel, demo, radiograph())
    database = make_url(str(kernel.engine.url)).database
    assert database is not None
    original = findings.read_image
    took: list[float] = []

    def read_image(store_root: Path, plan: findings.Plan) -> list[findings.Reading]:
        other = sqlite3.connect(database, timeout=5, isolation_level=None)
        started = time.monotonic()
        other.execute("BEGIN IMMEDIATE")  # "database is locked" after 5 s if the analyser held the lock
        other.execute("ROLLBACK")
        other.close()
        took.append(time.monotonic() - started)
        return original(store_root, plan)

    monkeypatch.setattr(findings, "read_image", read_image)
    module.analyse_stored(kernel, uid)
    assert took
    assert took[0] < 1.0
    assert uid in finding_uids(kernel)


def study_status(kernel: Kernel, sop_uid: str) -> str:
    with kernel.sessions() as session:
        status: str = session.scalars(
            select(ImagingStudy.status)
            .join(ImagingSeries, ImagingSeries.study_id == ImagingStudy.id)
            .join(ImagingInstance, ImagingInstance.series_id == ImagingSeries.id)
            .where(ImagingInstance.sop_instance_uid == sop_uid)
        ).one()
    return status


def test_an_image_the_models_cannot_read_shows_as_failed_and_waits_for_an_admin(
    kernel: Kernel, demo: Demo
) -> None:
    uid = stored(kernel, demo, radiograph())
    with kernel.sessions() as session:
        row = session.scalars(select(ImagingInstance).where(ImagingInstance.sop_instance_uid == uid)).one()
    # The stored file loses its pixels (damaged on disk): the analysis cannot succeed, however often tried.
    path = dicom_store(kernel).path(row.storage_path)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    module.analyse_stored(kernel, uid)
    assert uid not in finding_uids(kernel)
    assert study_status(kernel, uid) == "failed"
    with kernel.sessions() as session:
        letter = session.scalars(
            select(DeadLetter).where(DeadLetter.source == findings.DEAD_LETTER_SOURCE)
        ).one()
    assert letter.meta["sop_instance_uid"] == uid
    assert "no readable pixels" in letter.reason
    # Nothing is resumed at the next start for a study marked failed.
    assert uid not in module.pending_instances(kernel)


def test_an_analysis_that_keeps_failing_is_dead_lettered_and_its_study_marked_failed(
    app: TestClient, kernel: Kernel, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(store_root: Path, plan: findings.Plan) -> list[findings.Reading]:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(findings, "read_image", broken)
    uid = stored(kernel, demo, radiograph())

    def dead_letters() -> list[DeadLetter]:
        with kernel.sessions() as session:
            return list(session.scalars(select(DeadLetter).where(DeadLetter.source == "bus")))

    wait_for(lambda: bool(dead_letters()), timeout=30)
    [letter] = dead_letters()
    assert letter.meta["consumer"] == module.ANALYSER
    assert "database is locked" in letter.reason
    assert study_status(kernel, uid) == "failed"


def test_images_stored_but_never_read_are_read_at_the_next_start(
    kernel: Kernel, settings: Settings, demo: Demo
) -> None:
    """The in-process bus keeps its queue in memory: what was queued when the process stopped is read at
    the next start."""
    uids = [stored(kernel, demo, radiograph()) for _ in range(2)]
    # As if the relay had published their events and the process had stopped before the analyser ran.
    with kernel.sessions() as session, session.begin():
        session.execute(update(OutboxEvent).values(published_at=func.now()))
    with TestClient(create_app(settings, kernel=kernel)):
        wait_for(lambda: set(uids) <= finding_uids(kernel))
