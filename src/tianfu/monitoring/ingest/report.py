"""One device's report as it travels on the bus: measurements with their times, whatever the protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Measurement:
    parameter: str  # canonical key from codes.PARAMETERS
    value: float
    observed_at: datetime
    code: str = ""  # as received, e.g. "MDC:147842" or "LOINC:8867-4"


@dataclass(frozen=True)
class Unmapped:
    """A code Tianfu does not know yet: kept and shown, so that a mapping can be added."""

    code: str
    value: str
    unit: str


@dataclass
class DeviceReport:
    device_id: str  # EUI-64, serial number or MQTT client id
    source: str  # hl7-mllp | mqtt | fhir | replay
    message_id: str  # the sender's id (MSH-10, MQTT payload id): consumers drop repeats
    received_at: datetime
    measurements: list[Measurement] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    patient_mrn: str = ""  # what the device says about the patient (PID-3), checked against the bed's patient
    location: str = ""  # what the device says about its place (PV1-3), informational
    # Nursing observations can arrive with the report (FHIR, charting): consciousness (ACVPU), oxygen.
    charted: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "source": self.source,
            "message_id": self.message_id,
            "received_at": self.received_at.isoformat(),
            "measurements": [
                [m.parameter, m.value, m.observed_at.isoformat(), m.code] for m in self.measurements
            ],
            "unmapped": [[u.code, u.value, u.unit] for u in self.unmapped],
            "patient_mrn": self.patient_mrn,
            "location": self.location,
            "charted": self.charted,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DeviceReport:
        return cls(
            device_id=data["device_id"],
            source=data["source"],
            message_id=data["message_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            measurements=[
                Measurement(p, float(v), datetime.fromisoformat(t), c) for p, v, t, c in data["measurements"]
            ],
            unmapped=[Unmapped(c, v, u) for c, v, u in data["unmapped"]],
            patient_mrn=data.get("patient_mrn", ""),
            location=data.get("location", ""),
            charted=data.get("charted", {}),
        )
