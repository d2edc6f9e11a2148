"""Imaging's tables: the index of received DICOM studies, series and instances (the files themselves live
in the DICOM store on disk, see :mod:`tianfu.imaging.dicom.store`).

A study's patient is matched by its Patient ID (0010,0020) against the MRN of the receiving institution's
patients. A study that matches nobody is kept with ``patient_id`` empty and shown as unmatched to the
receiving institution's clinicians, never dropped. The patient's identity as the modality sent it is kept
in the ``dicom_patient_*`` columns, for matching later and for DICOMweb answers.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow

STUDY_STATUSES = ("received", "analysing", "analysed", "failed")
INSTANCE_SOURCES = ("c-store", "stow", "upload", "ai")


class ImagingStudy(Base):
    """One DICOM study (0020,000D) and the state of its AI analysis."""

    __tablename__ = "imaging_study"
    __table_args__ = (
        # The worklist: an institution's studies by status, most urgent first.
        Index("ix_imaging_study_worklist", "organization_id", "status", "ai_priority"),
        Index("ix_imaging_study_org_date", "organization_id", "study_date"),
    )

    id: Mapped[str] = IdColumn()
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))  # the receiving institution
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patient.id"), index=True)  # None: unmatched
    dicom_patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)  # (0010,0020), an MRN
    dicom_patient_name: Mapped[str] = mapped_column(String(200), default="")
    dicom_patient_birth_date: Mapped[str] = mapped_column(String(8), default="")  # DA, as sent
    dicom_patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    dicom_study_id: Mapped[str] = mapped_column(String(16), default="")  # (0020,0010) Study ID
    study_date: Mapped[date | None] = mapped_column(Date)  # the modality's local date
    study_time: Mapped[str] = mapped_column(String(16), default="")  # TM, as sent (local, no zone)
    modalities: Mapped[str] = mapped_column(String(64), default="")  # backslash-separated, e.g. CR\SR
    description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician: Mapped[str] = mapped_column(String(200), default="")
    number_of_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the newest instance arrived: a study counts as stable (complete) some time after this.
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(12), default="received")  # see STUDY_STATUSES
    ai_priority: Mapped[float | None] = mapped_column(Float)  # higher first on the worklist; None: not scored


class ImagingSeries(Base):
    """One series (0020,000E) of a study."""

    __tablename__ = "imaging_series"

    id: Mapped[str] = IdColumn()
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("imaging_study.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    number_of_instances: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ImagingInstance(Base):
    """One stored SOP instance: where its file is, and how it came.

    A SOP Instance UID is stored once. Receiving it again with the same data set is a success without a
    second copy; with a different data set it is refused and the first copy kept (see
    :func:`tianfu.imaging.dicom.store.store_instance`).
    """

    __tablename__ = "imaging_instance"

    id: Mapped[str] = IdColumn()
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[str] = mapped_column(ForeignKey("imaging_series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    storage_path: Mapped[str] = mapped_column(String(300))  # relative to the DICOM store's root
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the encoded data set, without the file meta header
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    source: Mapped[str] = mapped_column(String(12))  # see INSTANCE_SOURCES
    calling_ae: Mapped[str] = mapped_column(String(16), default="")  # C-STORE only
