"""The consultation module's tables. Nothing is ever deleted (电子病历应用管理规范 art. 14, SEC-08).

A consultation row holds the current state; every transition is a row of ``consult_status_change``;
an opinion is a chain of signed, append-only versions; consents and agreements are withdrawn or
terminated by a time stamp, never removed: :mod:`tianfu.consult.retention` refuses every ORM delete of
these rows and gives each clinical row a ``retain_until`` (its retention class, SEC-08).
"""

from __future__ import annotations

import base64
from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.consult import signing
from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow


class CooperationAgreement(Base):
    """A remote-medicine cooperation agreement between two institutions (TC-01, FHIR Contract)."""

    __tablename__ = "consult_agreement"

    id: Mapped[str] = IdColumn()
    first_institution_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    second_institution_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    platform_id: Mapped[str | None] = mapped_column(String(64))  # a 第三方平台 that is a party, if any
    title: Mapped[str] = mapped_column(String(200), default="")
    document_ref: Mapped[str] = mapped_column(String(300), default="")  # the signed agreement
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended | terminated
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # exclusive
    recorded_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    terminated_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    termination_reason: Mapped[str] = mapped_column(Text, default="")


class ConsultantQualification(Base):
    """A physician's qualification as the assignment check reads it (TC-05). A change is a new row;
    the old one gets ``superseded_at``."""

    __tablename__ = "consult_qualification"

    id: Mapped[str] = IdColumn()
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"), index=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    licence_number: Mapped[str] = mapped_column(String(64), default="")
    licence_valid_until: Mapped[date | None] = mapped_column(Date)
    licence_suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    independent_practice_since: Mapped[date | None] = mapped_column(Date)
    specialties: Mapped[list[str]] = mapped_column(JSON, default=list)
    title: Mapped[int | None] = mapped_column(Integer)  # workflow.ProfessionalTitle
    recorded_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    superseded_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    supersede_reason: Mapped[str] = mapped_column(Text, default="")


class Consultation(Base):
    """A consultation request (ServiceRequest) and its fulfilment (Task) in one row."""

    __tablename__ = "consultation"
    __table_args__ = (
        Index("ix_consultation_invited_queue", "invited_institution_id", "status", "response_due_at"),
        Index("ix_consultation_requester", "requester_id", "created_at"),
    )

    id: Mapped[str] = IdColumn()
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    inviting_institution_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    requester_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    invited_institution_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    platform_id: Mapped[str | None] = mapped_column(String(64))
    # The invitation (TC-03)
    reason: Mapped[str] = mapped_column(Text, default="")
    purpose: Mapped[str] = mapped_column(Text, default="")
    case_summary: Mapped[str] = mapped_column(Text, default="")
    specialty: Mapped[str] = mapped_column(String(100), default="")
    title: Mapped[int | None] = mapped_column(Integer)  # wanted minimum workflow.ProfessionalTitle
    time_frame_earliest: Mapped[datetime | None] = mapped_column(UTCDateTime())
    time_frame_latest: Mapped[datetime | None] = mapped_column(UTCDateTime())
    priority: Mapped[str] = mapped_column(String(8), default="routine")
    mode: Mapped[str] = mapped_column(String(20), default="store-and-forward")
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    accompanying_physician_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    # The task
    status: Mapped[str] = mapped_column(String(20), default="draft", index=True)
    business_status: Mapped[str] = mapped_column(String(40), default="草稿")
    status_reason: Mapped[str | None] = mapped_column(Text)
    assigned_consultant_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Response timers (TC-04), from workflow.response_schedule; None when no response is owed.
    response_stage: Mapped[str | None] = mapped_column(String(16))
    response_remind_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    response_escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The inviting physician's decision (TC-08)
    decision_text: Mapped[str | None] = mapped_column(Text)
    decided_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Retention (SEC-08): set at creation by retention.py; a legal hold (封存) keeps everything past it.
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    legal_hold_reason: Mapped[str] = mapped_column(Text, default="")
    legal_hold_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    legal_hold_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsultStatusChange(Base):
    """One transition (Provenance of the Task): append-only."""

    __tablename__ = "consult_status_change"

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"), index=True)
    action: Mapped[str] = mapped_column(String(24))
    source: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConsultMessage(Base):
    """Store-and-forward discussion (Communication), the 3-year 图文对话 record; it may cite the
    consultation's attachments (``attachment_ids``)."""

    __tablename__ = "consult_message"
    __table_args__ = (Index("ix_consult_message_thread", "consultation_id", "sent_at"),)

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"))
    author_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    author_institution_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    in_response_to_id: Mapped[str | None] = mapped_column(ForeignKey("consult_message.id"))
    body: Mapped[str] = mapped_column(Text)
    attachment_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsultConsent(Base):
    """One of the patient's two consents (TC-02, PIPL art. 29); withdrawn by a time stamp (art. 15)."""

    __tablename__ = "consult_consent"

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"))
    kind: Mapped[str] = mapped_column(String(20))  # workflow.ConsentKind: treatment | patient-privacy
    signed_by: Mapped[str] = mapped_column(String(20), default="patient")  # workflow.ConsentSigner
    signer_name: Mapped[str] = mapped_column(String(100), default="")  # the guardian or relative
    signed_form_ref: Mapped[str] = mapped_column(String(300), default="")  # the written, signed form
    recipient_institution_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    withdrawn_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    withdrawal_reason: Mapped[str] = mapped_column(Text, default="")
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OpinionVersion(Base):
    """One signed version of the opinion report: its canonical bytes and signature record, never
    updated (an amendment is the next version, chained by ``previous_hash``)."""

    __tablename__ = "consult_opinion_version"
    __table_args__ = (UniqueConstraint("consultation_id", "version", name="uq_consult_opinion_version"),)

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"), index=True)
    document_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    canonical_content: Mapped[str] = mapped_column(Text)
    previous_hash: Mapped[str | None] = mapped_column(String(64))
    amendment_reason: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(20), default="clinician")  # workflow.OpinionOrigin
    algorithm: Mapped[str] = mapped_column(String(40))
    hash_algorithm: Mapped[str] = mapped_column(String(20))
    signer_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    content_hash: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(Text)  # base64 DER SubjectPublicKeyInfo
    public_key_fingerprint: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)  # base64
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def as_signed_version(self) -> signing.SignedVersion:
        """The stored version as :mod:`~tianfu.consult.signing` verifies it."""
        return signing.SignedVersion(
            document_id=self.document_id,
            version=self.version,
            canonical_content=self.canonical_content.encode("utf-8"),
            previous_hash=self.previous_hash,
            amendment_reason=self.amendment_reason,
            signature=signing.SignatureRecord(
                algorithm=self.algorithm,
                hash_algorithm=self.hash_algorithm,
                signer_id=self.signer_id,
                signed_at=self.signed_at,
                content_hash=self.content_hash,
                public_key=_b64(self.public_key),
                public_key_fingerprint=self.public_key_fingerprint,
                signature=_b64(self.signature),
            ),
        )


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # altered in storage: verification then fails on an empty value
        return b""


class SignerKey(Base):
    """A consultant's signing key. The public key is what verification trusts.

    The private key is stored only sealed under a key derived from the consultant's **signing PIN**
    (``pin_sealed_key``: scrypt + AES-256-GCM, :func:`tianfu.consult.signing.seal_private_key`), itself
    wrapped by the kernel's SecretBox (so a stolen database alone does not allow guessing the PIN
    offline): the server cannot sign without the signer (电子签名法 art. 13). Keys made before PINs
    (``private_key_sealed``, SecretBox only) had that part destroyed by migration 0008: they still
    verify what they signed, and never sign again.
    A USB key or a CA-issued SM2 certificate replaces the private part: only the public key stays here.

    Lifecycle: ``superseded_at`` when a newer key is enrolled (still trusted for what it signed);
    ``locked_at`` after too many wrong PINs (no signing until an administrator unlocks it or the
    consultant enrols a new key); ``revoked_at`` when compromised (no longer trusted at all).
    """

    __tablename__ = "consult_signer_key"

    id: Mapped[str] = IdColumn()
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"), index=True)
    algorithm: Mapped[str] = mapped_column(String(40))
    public_key: Mapped[str] = mapped_column(Text)  # base64 DER
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    private_key_sealed: Mapped[str | None] = mapped_column(Text)  # legacy, emptied by migration 0008
    pin_sealed_key: Mapped[str | None] = mapped_column(Text)  # SecretBox(seal_private_key(key, PIN))
    failed_pin_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsultAttachment(Base):
    """A file of the store-and-forward discussion (Media / DocumentReference): a scan, an ECG, a
    DICOM object. The bytes live in this row, encrypted (AES-256-GCM, key derived from the platform
    secret key, which is kept outside the database); ``sha256`` is of the plain bytes."""

    __tablename__ = "consult_attachment"
    __table_args__ = (Index("ix_consult_attachment_consultation", "consultation_id", "created_at"),)

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"))
    uploaded_by_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    institution_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    content_sealed: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # nonce ‖ AES-GCM output
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsultDeadlineNotice(Base):
    """A response-deadline reminder or escalation that was sent (TC-04): once per stage and kind."""

    __tablename__ = "consult_deadline_notice"
    __table_args__ = (
        UniqueConstraint("consultation_id", "stage", "kind", name="uq_consult_deadline_notice"),
    )

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))  # workflow.SlaStage
    kind: Mapped[str] = mapped_column(String(16))  # reminder | escalation
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the response deadline it is about
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsultAppointment(Base):
    """A proposed live session (FHIR Appointment + the counter-party's AppointmentResponse)."""

    __tablename__ = "consult_appointment"

    id: Mapped[str] = IdColumn()
    consultation_id: Mapped[str] = mapped_column(ForeignKey("consultation.id"), index=True)
    proposed_by_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"))
    proposer_institution_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id"))
    start: Mapped[datetime] = mapped_column(UTCDateTime())
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="proposed")  # proposed|booked|declined|superseded
    responded_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


# The guard against deletes and the retain_until stamps are listeners on every ORM session.
from tianfu.consult import retention as _retention  # noqa: E402

_retention.install()
