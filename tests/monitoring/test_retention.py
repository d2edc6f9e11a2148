"""Retention: old per-minute rows become hourly means, old hourly rows go, recent data stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.conftest import Demo
from tianfu.cli import app
from tianfu.core.settings import Settings
from tianfu.monitoring.retention import apply
from tianfu.monitoring.settings import MonitoringSettings
from tianfu.monitoring.tables import MonitoringDevice, VitalSample

POLICY = MonitoringSettings(minute_retention_days=7, hourly_retention_days=30)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _device(db: Session, demo: Demo) -> MonitoringDevice:
    device = MonitoringDevice(identifier="RET-1", label="retention", bed_id=demo.bed("CARD1-01").id)
    db.add(device)
    db.flush()
    return device


def _rows(db: Session, device: MonitoringDevice) -> list[VitalSample]:
    return list(
        db.scalars(
            select(VitalSample)
            .where(VitalSample.device_id == device.id)
            .order_by(VitalSample.resolution, VitalSample.observed_at)
        )
    )


def test_old_minutes_fold_into_hourly_means_and_recent_minutes_stay(db: Session, demo: Demo) -> None:
    device = _device(db, demo)
    patient = demo.patient("李建国").id
    old_hour = NOW - timedelta(days=8, minutes=30)
    old_hour = old_hour.replace(minute=0)
    for minute, heart_rate in enumerate((60, 70, 80)):
        db.add(
            VitalSample(
                resolution="minute",
                observed_at=old_hour + timedelta(minutes=minute),
                device_id=device.id,
                patient_id=patient,
                heart_rate=heart_rate,
                spo2=None,
                news2=minute,
                source="hl7",
            )
        )
    db.add(
        VitalSample(
            resolution="minute",
            observed_at=NOW - timedelta(days=1),
            device_id=device.id,
            patient_id=patient,
            heart_rate=90,
        )
    )
    db.add(
        VitalSample(
            resolution="hour",
            observed_at=NOW - timedelta(days=40),
            device_id=device.id,
            patient_id=patient,
            heart_rate=75,
        )
    )
    db.commit()

    result = apply(db, POLICY, NOW)

    assert (result.minute_rows_folded, result.hour_rows_written, result.hour_rows_deleted) == (3, 1, 1)
    rows = _rows(db, device)
    assert [(r.resolution, r.heart_rate) for r in rows] == [("hour", 70.0), ("minute", 90.0)]
    hourly = rows[0]
    assert hourly.observed_at == old_hour
    assert hourly.patient_id == patient
    assert hourly.news2 == 2  # the worst score of the hour
    assert hourly.spo2 is None
    assert hourly.flags["downsampled_from"] == 3
    db.commit()


def test_an_hour_the_pipeline_already_summarised_keeps_its_row(db: Session, demo: Demo) -> None:
    device = _device(db, demo)
    hour = (NOW - timedelta(days=10)).replace(minute=0)
    db.add(VitalSample(resolution="hour", observed_at=hour, device_id=device.id, heart_rate=66))
    db.add(
        VitalSample(
            resolution="minute", observed_at=hour + timedelta(minutes=5), device_id=device.id, heart_rate=99
        )
    )
    db.commit()

    result = apply(db, POLICY, NOW)

    assert result.minute_rows_folded == 1
    assert [(r.resolution, r.heart_rate) for r in _rows(db, device)] == [("hour", 66.0)]
    db.commit()


def test_unassociated_data_stays_marked_after_downsampling(db: Session, demo: Demo) -> None:
    device = _device(db, demo)
    db.add(
        VitalSample(
            resolution="minute",
            observed_at=NOW - timedelta(days=9),
            device_id=device.id,
            patient_id=None,
            heart_rate=80,
            flags={"unassociated": True},
        )
    )
    db.commit()
    apply(db, POLICY, NOW)
    (row,) = _rows(db, device)
    assert row.flags["unassociated"] is True
    assert row.resolution == "hour"
    db.commit()


def test_cli_applies_the_policy(settings: Settings) -> None:
    result = CliRunner().invoke(
        app,
        ["monitor", "retention"],
        env={
            "TIANFU_DATABASE_URL": settings.database_url,
            "TIANFU_DEMO": "1",
            "TIANFU_VAR_DIR": str(settings.var_dir),
        },
    )
    assert result.exit_code == 0, result.output
    assert '"minute_rows_folded"' in result.stdout
