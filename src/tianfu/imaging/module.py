"""Medical image recognition (智能医学影像识别), plugged into the kernel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.bus import Event
from tianfu.core.i18n import N_
from tianfu.core.kernel import Kernel
from tianfu.core.plugins import CasePacketSection, ConsumerSpec, TianfuModule
from tianfu.imaging import ai, cli, dicomweb, views
from tianfu.imaging import fhir as imaging_fhir
from tianfu.imaging.dicom.scp import start_scp
from tianfu.imaging.dicom.store import dicom_store

log = logging.getLogger(__name__)


ANALYSER = "imaging-analyser"
ANALYSER_MAX_DELIVER = 5


def analyse_stored(kernel: Kernel, sop_uid: str) -> None:
    """The analyser's work for one stored instance, in three short steps so that no transaction is open
    while the models run (on SQLite an open transaction holds the one write lock, and C-STORE, the outbox
    relay and every other writer would queue behind an analysis): look up what to read, read the image
    (no database), store the findings. The result is then written as a DICOM SR in a transaction of its
    own. Idempotent: a redelivery finds the findings and only makes sure the SR exists."""
    from tianfu.imaging.findings import (
        AnalysisFailed,
        ImagingFinding,
        mark_failed,
        plan_analysis,
        read_image,
        save_findings,
    )
    from tianfu.imaging.tables import ImagingInstance

    with kernel.sessions() as session, session.begin():
        instance_id = session.scalar(
            select(ImagingInstance.id).where(ImagingInstance.sop_instance_uid == sop_uid)
        )
        if instance_id is None:
            log.warning("stored-instance event for unknown SOP instance %s", sop_uid)
            return
        plan = plan_analysis(session, instance_id)
        study_id = session.scalar(
            select(ImagingFinding.study_id).where(ImagingFinding.instance_id == instance_id).limit(1)
        )
    if plan is not None:
        try:
            readings = read_image(dicom_store(kernel).root, plan)
        except AnalysisFailed as exc:  # retrying cannot help: say so where an admin looks
            log.warning("instance %s: %s", sop_uid, exc)
            with kernel.sessions() as session, session.begin():
                mark_failed(session, instance_id, str(exc))
            return
        with kernel.sessions() as session, session.begin():
            found = save_findings(session, kernel.audit, plan, readings)
            study_id = found[0].study_id if found else None
    if study_id is not None:  # the result as a DICOM SR beside the image, for PACS and viewers (IHE AIR)
        from tianfu.imaging.sr import store_result

        store_result(kernel, study_id)


def make_analyser(kernel: Kernel) -> Callable[[Event], Awaitable[None]]:
    """Reads each stored image with the matching models. A failure is retried; on the last delivery the
    study is marked failed on the worklist and the bus puts the event in the dead-letter store."""

    def give_up(sop_uid: str, error: str) -> None:
        from tianfu.imaging.findings import mark_failed
        from tianfu.imaging.tables import ImagingInstance

        with kernel.sessions() as session, session.begin():
            instance_id = session.scalar(
                select(ImagingInstance.id).where(ImagingInstance.sop_instance_uid == sop_uid)
            )
            if instance_id is not None:
                mark_failed(session, instance_id, error, dead_letter=False)  # the bus dead-letters the event

    async def handle(event: Event) -> None:
        sop_uid = str(event.data["sop_instance_uid"])
        try:
            await asyncio.to_thread(analyse_stored, kernel, sop_uid)
        except Exception as exc:
            if event.delivery >= ANALYSER_MAX_DELIVER:
                try:
                    await asyncio.to_thread(give_up, sop_uid, f"{type(exc).__name__}: {exc}")
                except Exception:
                    log.exception("could not mark the analysis of %s as failed", sop_uid)
            raise

    return handle


def pending_instances(kernel: Kernel, limit: int = 10_000) -> list[str]:
    """Stored images a model should read that have no finding yet (their study not marked failed), oldest
    first: what was still queued when the process stopped (the in-process bus keeps its queue in memory)."""
    from tianfu.imaging import inference
    from tianfu.imaging.findings import ImagingFinding, tasks_for
    from tianfu.imaging.tables import ImagingInstance, ImagingSeries, ImagingStudy

    available = inference.tasks()
    with kernel.sessions() as session, session.begin():
        rows = session.execute(
            select(ImagingInstance.sop_instance_uid, ImagingSeries.modality, ImagingSeries.body_part)
            .join(ImagingSeries, ImagingSeries.id == ImagingInstance.series_id)
            .join(ImagingStudy, ImagingStudy.id == ImagingSeries.study_id)
            .outerjoin(ImagingFinding, ImagingFinding.instance_id == ImagingInstance.id)
            .where(
                ImagingFinding.id.is_(None), ImagingStudy.status != "failed", ImagingSeries.modality != "SR"
            )
            .order_by(ImagingInstance.received_at)
            .limit(limit)
        ).all()
    return [uid for uid, modality, part in rows if tasks_for(modality or "", part or "", available)]


async def resume_analyses(kernel: Kernel) -> Callable[[], Awaitable[None]]:
    """A module service: analyse, in the background, the images that were stored but never read (a crash or
    a restart with analyses still queued). Nothing stored is left without its finding or a failure."""

    async def sweep() -> None:
        uids = await asyncio.to_thread(pending_instances, kernel)
        if uids:
            log.info("resuming the AI analysis of %d stored images", len(uids))
        for uid in uids:
            try:
                await asyncio.to_thread(analyse_stored, kernel, uid)
            except Exception:  # tried again at the next start; the live consumer is unaffected
                log.exception("resumed analysis of %s failed", uid)

    task = asyncio.create_task(sweep(), name="imaging-resume-analyses")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


async def prepare_analyser(kernel: Kernel) -> Callable[[], Awaitable[None]]:
    """A module service, before the DICOM listener: load the models and the libraries the first analysis
    needs, so that the first image received is not the one that pays for it (about a second)."""

    def warm() -> None:
        import numpy as np
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        import tianfu.imaging.sr  # noqa: F401  (highdicom)
        from tianfu.imaging import inference
        from tianfu.imaging.dicom.pixels import display_array

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.arange(32 * 32, dtype="<u2").tobytes()
        image = display_array(ds)
        for task in inference.tasks():
            inference.ImagingModel.load(task).predict(image)

    async def nothing() -> None:
        return None

    try:
        await asyncio.to_thread(warm)
    except Exception:  # the first analysis will load what it needs and say what is wrong
        log.exception("could not prepare the imaging models")
    return nothing


CASE_PACKET_MAX_STUDIES = 10


def case_packet(session: Session, patient_id: str, since: datetime) -> CasePacketSection | None:
    """The patient's latest studies with their AI findings (marked as AI suggestions) and links to them."""
    from tianfu.imaging.findings import ImagingFinding
    from tianfu.imaging.tables import ImagingStudy

    studies = session.scalars(
        select(ImagingStudy)
        .where(ImagingStudy.patient_id == patient_id)
        .order_by(ImagingStudy.received_at.desc())
        .limit(CASE_PACKET_MAX_STUDIES)
    ).all()
    if not studies:
        return None
    findings: dict[str, list[dict[str, Any]]] = {}
    for finding in session.scalars(
        select(ImagingFinding)
        .where(ImagingFinding.study_id.in_([s.id for s in studies]))
        .order_by(ImagingFinding.created_at)
    ):
        findings.setdefault(finding.study_id, []).append(
            {
                "origin": "ai-suggestion",  # never an opinion (TC-08): a clinician's review says more
                "task": finding.task,
                "model_version": finding.model_version,
                "label": finding.label,
                "probability": finding.probability,
                "positive": finding.positive,
                "review": finding.review,
                "reviewed_label": finding.reviewed_label,
            }
        )
    items = [
        {
            "kind": "study",
            "study_id": study.id,
            "study_instance_uid": study.study_instance_uid,
            "study_date": study.study_date.isoformat() if study.study_date else None,
            "modalities": study.modalities,
            "description": study.description,
            "status": study.status,
            "recent": study.received_at >= since,
            "findings": findings.get(study.id, []),
            "href": f"/imaging/studies/{study.id}",
            "api": f"/api/v1/imaging/studies/{study.id}",
        }
        for study in studies
    ]
    return CasePacketSection(
        "imaging", N_("Imaging studies"), items, [{"label": N_("Imaging"), "href": "/imaging"}]
    )


MODULE = TianfuModule(
    key="imaging",
    shipped_models=ai.shipped_models,
    read_model_manifest=ai.read_model_manifest,
    ai_tasks=ai.ai_tasks,
    home_path="/imaging",
    api_router=views.api,
    page_router=views.pages,
    fhir_router=imaging_fhir.fhir,
    extra_routers=(dicomweb.router,),
    templates_dir=Path(__file__).parent / "templates",
    static_dir=Path(__file__).parent / "static",
    model_modules=("tianfu.imaging.tables", "tianfu.imaging.findings"),
    cli=cli.app,
    cli_name="imaging",
    consumers=(
        ConsumerSpec(
            "tianfu.imaging.instance_stored", ANALYSER, make_analyser, max_deliver=ANALYSER_MAX_DELIVER
        ),
    ),
    # The models are loaded before the listener takes images; stored images never read are read after.
    services=(prepare_analyser, start_scp, resume_analyses),
    # STOW-RS enforces TIANFU_STOW_MAX_BYTES itself; the upload page takes one file of up to 64 MiB.
    own_body_limit_paths=("/api/v1/imaging/dicomweb/studies", "/imaging/upload"),
    case_packet=case_packet,
)
