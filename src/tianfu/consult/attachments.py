"""Files of the store-and-forward discussion (TC-11): scans of consent forms, ECGs, images, DICOM objects.

Storage: the bytes live in the ``consult_attachment`` row, encrypted with AES-256-GCM under a key
derived from the platform secret key (kept outside the database, SEC-06), the row id bound in as
associated data so that bytes moved to another row do not decrypt. In the database rather than under
the data directory because a file and its row are then written in one transaction (no orphan files, no
row without its file), backed up and restored together, and covered by the same no-delete guard and
legal hold; 20 MB files are well within what PostgreSQL ``bytea`` handles. A 3-year object-store
lifecycle (docs §3) can replace this storage behind :func:`read_bytes` later.

Only the participants upload and download, every upload and download is audited, and uploads follow the
message rules (none in draft or entered-in-error). Types come from an allow-list and the bytes must look
like the type they claim (magic numbers), so a renamed executable is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
import uuid
from collections.abc import Sequence
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.consult import service
from tianfu.consult.tables import Consultation, ConsultAttachment
from tianfu.core.audit.service import AuditLog
from tianfu.core.db import utcnow
from tianfu.core.errors import DomainError, Invalid, NotFound
from tianfu.core.security.principal import Principal

MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
# The multipart envelope around the file (boundaries, headers, the description field).
MULTIPART_OVERHEAD = 256 * 1024
UPLOAD_PATH_PREFIX = "/api/v1/consult/consultations/*/attachments"

PDF, PNG, JPEG, DICOM, TEXT = "application/pdf", "image/png", "image/jpeg", "application/dicom", "text/plain"
ALLOWED_TYPES = frozenset({PDF, PNG, JPEG, DICOM, TEXT})
_ALIASES = {"image/jpg": JPEG, "image/pjpeg": JPEG, "application/x-pdf": PDF}
_UNDECLARED = frozenset({"", "application/octet-stream"})


class TooLarge(DomainError):
    status = 413
    slug = "too-large"
    title = "Request body too large"


class UnsupportedType(DomainError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


def sniff(data: bytes) -> str | None:
    """The allowed type the bytes are, by their magic number; None if none of them."""
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if len(data) >= 132 and data[128:132] == b"DICM":  # DICOM Part 10: 128-byte preamble, then DICM
        return DICOM
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f" for c in text):
        return None
    return TEXT


def checked_type(declared: str | None, data: bytes) -> str:
    """The content type to store: the declared one if allowed and the bytes agree with it."""
    base = (declared or "").split(";", 1)[0].strip().lower()
    base = _ALIASES.get(base, base)
    if base not in _UNDECLARED and base not in ALLOWED_TYPES:
        raise UnsupportedType(
            f"{base} files are not accepted; send PDF, PNG, JPEG, DICOM or plain text",
            allowed=sorted(ALLOWED_TYPES),
        )
    found = sniff(data)
    if found is None:
        raise UnsupportedType(
            "the file is none of PDF, PNG, JPEG, DICOM or UTF-8 plain text", allowed=sorted(ALLOWED_TYPES)
        )
    if base not in _UNDECLARED and found != base:
        raise UnsupportedType(f"the file is declared {base} but its content is {found}")
    return found


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\\"]")


def clean_filename(name: str | None) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", unicodedata.normalize("NFC", base)).strip(" .")
    return base[:200] or "attachment"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the UTF-8 name (RFC 6266 / 5987) for Chinese names."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class AttachmentCipher:
    """AES-256-GCM; the key is derived from the platform secret key, never stored with the data."""

    def __init__(self, secret_key: str) -> None:
        key = hmac.new(secret_key.encode(), b"tianfu-consult-attachment-v1", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, attachment_id: str, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, attachment_id.encode())

    def open(self, attachment_id: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], attachment_id.encode())
        except InvalidTag as exc:
            raise ValueError(f"attachment {attachment_id} cannot be decrypted: altered or wrong key") from exc


def _open_for_files(session: Session, principal: Principal, consultation_id: str) -> Consultation:
    row = service.load(session, principal, consultation_id)
    if row.status in service.CLOSED_FOR_MESSAGES:
        raise Invalid(f"no files on a consultation that is {row.status}")
    return row


def upload(
    session: Session,
    audit: AuditLog,
    cipher: AttachmentCipher,
    principal: Principal,
    consultation_id: str,
    *,
    filename: str | None,
    declared_type: str | None,
    data: bytes,
    description: str = "",
) -> ConsultAttachment:
    row = _open_for_files(session, principal, consultation_id)
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise TooLarge(
            f"an attachment is at most {MAX_ATTACHMENT_BYTES} bytes", max_bytes=MAX_ATTACHMENT_BYTES
        )
    if not data:
        raise Invalid("the file is empty")
    content_type = checked_type(declared_type, data)
    attachment_id = str(uuid.uuid4())  # the associated data of the encryption
    attachment = ConsultAttachment(
        id=attachment_id,
        consultation_id=row.id,
        uploaded_by_id=principal.user_id,
        institution_id=principal.organization_id,
        filename=clean_filename(filename),
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        description=description,
        content_sealed=cipher.seal(attachment_id, data),
        created_at=utcnow(),
    )
    session.add(attachment)
    session.flush()
    service.audit_consultation(
        session,
        audit,
        principal,
        row,
        "consult.attachment.upload",
        "C",
        {"attachment": attachment.id, "sha256": attachment.sha256, "size": attachment.size},
    )
    return attachment


def listing(
    session: Session, audit: AuditLog, principal: Principal, consultation_id: str
) -> Sequence[ConsultAttachment]:
    row = service.load(session, principal, consultation_id)
    service.audit_consultation(session, audit, principal, row, "consult.attachment.list", "R")
    return attachments_of(session, row.id)


def attachments_of(session: Session, consultation_id: str) -> Sequence[ConsultAttachment]:
    return session.scalars(
        select(ConsultAttachment)
        .where(ConsultAttachment.consultation_id == consultation_id)
        .order_by(ConsultAttachment.created_at, ConsultAttachment.id)
    ).all()


def download(
    session: Session,
    audit: AuditLog,
    cipher: AttachmentCipher,
    principal: Principal,
    consultation_id: str,
    attachment_id: str,
) -> tuple[ConsultAttachment, bytes]:
    row = service.load(session, principal, consultation_id)
    attachment = session.get(ConsultAttachment, attachment_id)
    if attachment is None or attachment.consultation_id != row.id:
        raise NotFound(f"no attachment {attachment_id} in this consultation")
    data = cipher.open(attachment.id, attachment.content_sealed)
    if hashlib.sha256(data).hexdigest() != attachment.sha256:
        raise ValueError(f"attachment {attachment.id} does not match its recorded SHA-256")
    service.audit_consultation(
        session, audit, principal, row, "consult.attachment.download", "R", {"attachment": attachment.id}
    )
    return attachment, data


def check_ids(session: Session, consultation_id: str, attachment_ids: Sequence[str]) -> list[str]:
    """The ids, deduplicated in order, if every one is an attachment of this consultation."""
    wanted = list(dict.fromkeys(attachment_ids))
    if not wanted:
        return []
    found = set(
        session.scalars(
            select(ConsultAttachment.id).where(
                ConsultAttachment.id.in_(wanted), ConsultAttachment.consultation_id == consultation_id
            )
        )
    )
    missing = [i for i in wanted if i not in found]
    if missing:
        raise Invalid(f"no attachment {', '.join(missing)} in this consultation", attachment_ids=missing)
    return wanted
