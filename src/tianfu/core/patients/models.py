"""The shared patient record: institutions, their wards and beds, patients and encounters."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tianfu.core.db import Base, IdColumn, UTCDateTime, utcnow

if TYPE_CHECKING:
    from tianfu.core.identity.models import User


class Organization(Base):
    """A healthcare institution (医疗机构) of the network."""

    __tablename__ = "organization"

    id: Mapped[str] = IdColumn()
    code: Mapped[str] = mapped_column(String(64), unique=True)  # e.g. 统一社会信用代码 or internal code
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    level: Mapped[str] = mapped_column(String(32), default="")  # 三级甲等, 社区卫生服务中心 ...
    address: Mapped[str] = mapped_column(String(300), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    locations: Mapped[list[Location]] = relationship(back_populates="organization")


class Location(Base):
    """A ward (病区), room or bed, nested through ``parent_id``."""

    __tablename__ = "location"
    __table_args__ = (UniqueConstraint("organization_id", "code", name="uq_location_org_code"),)

    id: Mapped[str] = IdColumn()
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # ward | room | bed
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="")
    specialty: Mapped[str] = mapped_column(String(100), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    organization: Mapped[Organization] = relationship(back_populates="locations")
    parent: Mapped[Location | None] = relationship(remote_side="Location.id")


class Patient(Base):
    """A person receiving care. Never hard-deleted: records are voided with a reason."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("managing_organization_id", "mrn", name="uq_patient_org_mrn"),)

    id: Mapped[str] = IdColumn()
    mrn: Mapped[str] = mapped_column(String(64), index=True)  # 病案号 within the managing institution
    managing_organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    family_name: Mapped[str] = mapped_column(String(50), default="")
    given_name: Mapped[str] = mapped_column(String(50), default="")
    gender: Mapped[str] = mapped_column(String(10))  # FHIR administrative-gender
    birth_date: Mapped[date | None] = mapped_column(Date)
    national_id: Mapped[str] = mapped_column(String(32), default="")  # 居民身份证号; shown masked
    phone: Mapped[str] = mapped_column(String(40), default="")
    address: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    voided: Mapped[bool] = mapped_column(Boolean, default=False)
    void_reason: Mapped[str] = mapped_column(String(300), default="")

    managing_organization: Mapped[Organization] = relationship()
    encounters: Mapped[list[Encounter]] = relationship(
        back_populates="patient", order_by="Encounter.period_start.desc()"
    )


class Encounter(Base):
    """A stay or visit; an in-progress inpatient encounter places the patient in a ward and bed."""

    __tablename__ = "encounter"
    __table_args__ = (Index("ix_encounter_active_ward", "status", "ward_id"),)

    id: Mapped[str] = IdColumn()
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"), index=True)
    encounter_class: Mapped[str] = mapped_column(String(8))  # v3-ActCode: IMP, EMER, AMB, VR
    status: Mapped[str] = mapped_column(String(16))  # planned | in-progress | finished | cancelled
    ward_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"))
    bed_id: Mapped[str | None] = mapped_column(ForeignKey("location.id"), index=True)
    attending_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())

    patient: Mapped[Patient] = relationship(back_populates="encounters")
    organization: Mapped[Organization] = relationship()
    ward: Mapped[Location | None] = relationship(foreign_keys=[ward_id])
    bed: Mapped[Location | None] = relationship(foreign_keys=[bed_id])
    attending: Mapped[User | None] = relationship(foreign_keys=[attending_id])


class CareGrant(Base):
    """Access to one patient outside the usual ward relationship: break-glass or a consultation."""

    __tablename__ = "care_grant"

    id: Mapped[str] = IdColumn()
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patient.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # break_glass | consultation | manual
    reason: Mapped[str] = mapped_column(String(500))
    granted_by_id: Mapped[str | None] = mapped_column(ForeignKey("app_user.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
