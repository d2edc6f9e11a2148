"""Tianfu's own DICOM node: Verification (C-ECHO) and Storage (C-STORE) SCP on pynetdicom.

Modalities and PACS send images here. Every received instance goes through
:func:`tianfu.imaging.dicom.store.store_instance` in its own transaction. The C-STORE handler never
raises: bad input gets a DICOM failure status with an Error Comment, is logged, audited and kept in the
dead-letter store (source ``dicom-cstore``), and the listener goes on serving. Statuses:

====== ==============================================================================================
0x0000 stored, or already stored (the same data set again)
0x0111 Duplicate SOP Instance: a different data set under a stored SOP Instance UID (first copy kept)
0xA700 Out of resources: the disk or database failed; the sender should retry later
0xA900 Data set does not match SOP class: required UIDs missing, or different from the request's
0xC000 Cannot understand: not a DICOM data set, damaged, or truncated pixel data
0x0110 Processing failure: anything unexpected (logged with its traceback)
====== ==============================================================================================

The listener runs in pynetdicom's threads (``block=False``), one per association.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE, Actor, AuditLog
from tianfu.core.deadletter import service as deadletters
from tianfu.core.patients.models import Organization
from tianfu.imaging.dicom import get_dicom_settings
from tianfu.imaging.dicom.store import (
    DUPLICATE_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    DicomStore,
    InvalidDicom,
    dicom_store,
    part10,
    read_dimse,
    store_instance,
)

if TYPE_CHECKING:
    from tianfu.core.kernel import Kernel

log = logging.getLogger(__name__)

DEAD_LETTER_SOURCE = "dicom-cstore"
# A refused instance is kept whole up to this size; beyond it only its head (which names it) is kept, so
# that one huge multi-frame object cannot bloat the dead-letter table.
DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024
_DEAD_LETTER_HEAD = 64 * 1024

# Explicit VR Big Endian (retired in 2006) is left out: senders fall back to little endian, and pydicom cannot
# transcode big endian pixel data for WADO-RS clients that ask for the default syntax.
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
_COMPRESSED = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)


def accepted_transfer_syntaxes() -> list[str]:
    """Uncompressed syntaxes, and the compressed ones an installed plugin can decode: an image accepted in a
    syntax nobody here can decode could be stored but never shown or analysed, so the sender is made to
    use another (it usually proposes several)."""
    return [str(uid) for uid in _NATIVE] + [str(uid) for uid in _COMPRESSED if _decodable(uid)]


def _decodable(uid: UID) -> bool:
    try:
        return bool(get_decoder(uid).is_available)
    except Exception:  # no decoder registered for this syntax
        return False


def dicom_actor(calling_ae: str, address: str = "") -> Actor:
    """The audit actor for a DICOM peer: the system, naming the calling AE title."""
    return Actor(user_id=None, username=f"dicom:{calling_ae or '?'}"[:64], role="system", client_ip=address)


class TianfuScp:
    """The C-ECHO and C-STORE service class provider. ``start()`` returns at once; ``stop()`` ends it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: DicomStore,
        audit: AuditLog,
        *,
        organization_id: str,
        ae_title: str = "TIANFU",
        host: str = "127.0.0.1",
        port: int = 11112,
        calling_aes: Sequence[str] = (),
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._audit = audit
        self.organization_id = organization_id
        self.ae_title = ae_title
        self.host = host
        self._port = port
        self.calling_aes = tuple(calling_aes)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when started on port 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> int:
        if self._server is not None:
            return self.port
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        if self.calling_aes:
            ae.require_calling_aet = list(self.calling_aes)
        syntaxes = accepted_transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification, [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)])
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        server = ae.start_server((self.host, self._port), block=False, evt_handlers=handlers)
        assert server is not None  # not blocking: the server is returned
        # pynetdicom's server runs a full gc.collect() every 30 s for its association threads; in a server
        # that also holds thousands of beds' state, that stopped every thread (the central station's too)
        # for half a second. The interpreter's own collector frees the associations as well.
        server.service_actions = lambda: None  # type: ignore[method-assign]
        self._server = server
        log.info("DICOM SCP %s listening on %s:%s", self.ae_title, self.host, self.port)
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            log.info("DICOM SCP %s stopped", self.ae_title)

    # --- handlers (pynetdicom's threads) -------------------------------------------------------------------

    def handle_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def handle_store(self, event: evt.Event) -> Dataset:
        try:
            requestor = event.assoc.requestor
            request: Any = event.request
            status, comment = self.receive(
                event.encoded_dataset(include_meta=False),
                str(event.context.transfer_syntax),
                sop_class_uid=str(request.AffectedSOPClassUID or ""),
                sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
                calling_ae=str(requestor.ae_title).strip(),
                address=str(requestor.address),
            )
        except Exception:  # a handler must answer, whatever happened
            log.exception("C-STORE handler failed")
            status, comment = PROCESSING_FAILURE, "internal error; logged"
        response = Dataset()
        response.Status = status
        if status != SUCCESS and comment:
            response.ErrorComment = comment[:64]  # LO
        return response

    def _on_rejected(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        log.warning("refused an association from %s (%s)", requestor.ae_title, requestor.address)

    # --- the work, testable without a network --------------------------------------------------------------

    def receive(
        self,
        body: bytes,
        transfer_syntax: str,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        calling_ae: str,
        address: str = "",
    ) -> tuple[int, str]:
        """Store one C-STORE data set; returns the DIMSE status and a comment. Never raises."""
        actor = dicom_actor(calling_ae, address)
        refusal: InvalidDicom | None = None
        status, reason = PROCESSING_FAILURE, ""
        try:
            parsed = read_dimse(
                body,
                transfer_syntax,
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                calling_ae=calling_ae,
            )
            for attempt in (1, 2):
                try:
                    with self._sessions() as session:
                        result = store_instance(
                            session,
                            self._store,
                            parsed,
                            audit=self._audit,
                            actor=actor,
                            source="c-store",
                            organization_id=self.organization_id,
                            calling_ae=calling_ae,
                        )
                        session.commit()
                    log.info("C-STORE %s from %s: %s", sop_instance_uid, calling_ae, result.status)
                    return SUCCESS, ""
                except IntegrityError:
                    # Another association stored this study or instance at the same moment: again finds it.
                    if attempt == 2:
                        raise
        except InvalidDicom as exc:
            refusal = exc
            status, reason = exc.status, str(exc)
            log.warning(
                "C-STORE %s from %s refused (0x%04X): %s", sop_instance_uid, calling_ae, status, reason
            )
        except (OSError, OperationalError, DBAPIError) as exc:
            status, reason = OUT_OF_RESOURCES, f"cannot store now: {type(exc).__name__}"
            log.exception("C-STORE %s from %s: storage failed", sop_instance_uid, calling_ae)
        except Exception as exc:
            status, reason = PROCESSING_FAILURE, f"unexpected error: {type(exc).__name__}"
            log.exception("C-STORE %s from %s failed", sop_instance_uid, calling_ae)
        self._keep_refused(
            body,
            transfer_syntax,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            actor=actor,
            status=status,
            reason=reason,
            refusal=refusal,
        )
        return status, reason

    def _keep_refused(
        self,
        body: bytes,
        transfer_syntax: str,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        actor: Actor,
        status: int,
        reason: str,
        refusal: InvalidDicom | None,
    ) -> None:
        """Dead-letter the refused instance (as a DICOM file where possible, so it can be re-imported) and
        audit the refusal. Failing here is logged, never raised: the peer still gets its status."""
        try:
            try:
                payload = part10(
                    body,
                    transfer_syntax=transfer_syntax,
                    sop_class_uid=sop_class_uid,
                    sop_instance_uid=sop_instance_uid,
                    calling_ae=actor.username.removeprefix("dicom:"),
                )
            except InvalidDicom:
                payload = body
            meta: dict[str, Any] = {
                "calling_ae": actor.username.removeprefix("dicom:"),
                "peer": actor.client_ip,
                "status": f"0x{status:04X}",
                "sop_class_uid": sop_class_uid,
                "sop_instance_uid": sop_instance_uid,
                "transfer_syntax": transfer_syntax,
                "size": len(payload),
            }
            if len(payload) > DEAD_LETTER_MAX_BYTES:
                payload, meta["truncated"] = payload[:_DEAD_LETTER_HEAD], True
            with self._sessions() as session:
                deadletters.store(
                    session, source=DEAD_LETTER_SOURCE, reason=reason, payload=payload, meta=meta
                )
                self._audit.record(
                    session,
                    actor=actor,
                    action="imaging.instance.store",
                    action_type="C",
                    outcome=OUTCOME_MINOR_FAILURE,
                    outcome_desc=f"0x{status:04X}: {reason}"[:500],
                    resource_type="ImagingStudy",
                    detail={
                        "sop_instance_uid": sop_instance_uid,
                        "source": "c-store",
                        "conflict": refusal is not None and refusal.status == DUPLICATE_INSTANCE,
                    },
                )
                session.commit()
        except Exception:
            log.exception("could not keep the refused instance %s", sop_instance_uid)


# --- running inside the app ------------------------------------------------------------------------------


def receiving_organization(session: Session, code: str) -> str | None:
    """The institution that receives C-STORE: the one with this code, or the only one there is."""
    if code:
        found: str | None = session.scalar(select(Organization.id).where(Organization.code == code))
        return found
    ids = session.scalars(select(Organization.id).limit(2)).all()
    return ids[0] if len(ids) == 1 else None


DEMO_RECEIVER = "TFRM"


async def start_scp(kernel: Kernel) -> Callable[[], Awaitable[None]]:
    """A module service: listen for C-ECHO and C-STORE per ``TIANFU_DICOM_*``; returns the stopper.

    Does nothing when ``TIANFU_DICOM_PORT`` is 0, or (logged as an error) when the receiving institution is
    unknown: without it neither patient matching nor access to unmatched studies can work.
    """

    async def nothing() -> None:
        return None

    settings = get_dicom_settings()
    if not settings.dicom_port:
        return nothing

    # The demo hospital has two institutions; its modalities send to the tertiary one.
    code = settings.dicom_organization or (DEMO_RECEIVER if kernel.settings.demo else "")

    def organization() -> str | None:
        with kernel.sessions() as session:
            return receiving_organization(session, code)

    organization_id = await asyncio.to_thread(organization)
    if organization_id is None:
        log.error(
            "DICOM SCP not started: set TIANFU_DICOM_ORGANIZATION to the code of the receiving institution "
            "(%r names none, or several institutions exist)",
            settings.dicom_organization,
        )
        return nothing
    scp = TianfuScp(
        kernel.sessions,
        dicom_store(kernel),
        kernel.audit,
        organization_id=organization_id,
        ae_title=settings.dicom_ae_title,
        host=settings.dicom_host,
        port=settings.dicom_port,
        calling_aes=settings.dicom_calling_aes,
    )
    try:
        await asyncio.to_thread(scp.start)
    except OSError:
        # A taken port must not keep the rest of Tianfu from starting; the error says what to fix.
        log.exception("DICOM SCP not started: cannot listen on %s:%s", settings.dicom_host, scp.port)
        return nothing
    kernel.extensions["imaging.scp"] = scp

    async def stop() -> None:
        await asyncio.to_thread(scp.stop)
        kernel.extensions.pop("imaging.scp", None)

    return stop
