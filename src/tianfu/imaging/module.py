"""Medical image recognition (智能医学影像识别), plugged into the kernel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select

from tianfu.core.bus import Event
from tianfu.core.kernel import Kernel
from tianfu.core.plugins import ConsumerSpec, TianfuModule
from tianfu.imaging import ai, cli, dicomweb, views
from tianfu.imaging import fhir as imaging_fhir
from tianfu.imaging.dicom.scp import start_scp
from tianfu.imaging.dicom.store import dicom_store

log = logging.getLogger(__name__)


def make_analyser(kernel: Kernel) -> Callable[[Event], Awaitable[None]]:
    """Reads each stored image with the matching models; a failure is retried, then dead-lettered."""
    from tianfu.imaging.findings import analyse_instance
    from tianfu.imaging.tables import ImagingInstance

    def work(sop_uid: str) -> None:
        with kernel.sessions() as session, session.begin():
            instance_id = session.scalar(
                select(ImagingInstance.id).where(ImagingInstance.sop_instance_uid == sop_uid)
            )
            if instance_id is None:
                log.warning("stored-instance event for unknown SOP instance %s", sop_uid)
                return
            found = analyse_instance(session, kernel.audit, dicom_store(kernel).root, instance_id)
            if found:  # the result as a DICOM SR beside the image, for PACS and viewers (IHE AIR)
                from tianfu.imaging.sr import write_result

                write_result(session, kernel, found[0].study_id)

    async def handle(event: Event) -> None:
        await asyncio.to_thread(work, str(event.data["sop_instance_uid"]))

    return handle


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
    consumers=(ConsumerSpec("tianfu.imaging.instance_stored", "imaging-analyser", make_analyser),),
    services=(start_scp,),
    # STOW-RS enforces TIANFU_STOW_MAX_BYTES itself; the upload page takes one file of up to 64 MiB.
    own_body_limit_paths=("/api/v1/imaging/dicomweb/studies", "/imaging/upload"),
)
