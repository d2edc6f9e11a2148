"""One device's report as it travels on the bus: measurements with their times, whatever the protocol."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

REPORT_SUBJECT = "tianfu.monitoring.report"  # .p<partition>


def partition_of(device_id: str, partitions: int) -> int:
    return zlib.crc32(device_id.encode()) % partitions


def report_subject(device_id: str, partitions: int) -> str:
    return f"{REPORT_SUBJECT}.p{partition_of(device_id, partitions)}"


class Measurement(NamedTuple):  # a tuple: thousands are made a second, and tuples are made fastest
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
            "received_at": iso(self.received_at),
            "measurements": [[m.parameter, m.value, iso(m.observed_at), m.code] for m in self.measurements],
            "unmapped": [[u.code, u.value, u.unit] for u in self.unmapped],
            "patient_mrn": self.patient_mrn,
            "location": self.location,
            "charted": self.charted,
        }

    def bus_event(self, partitions: int) -> tuple[str, dict[str, Any], str]:
        """Subject, data and event id of this report on the bus. The event id is the sender's message id: a
        monitor that resends a message after a lost ACK produces the same event, which JetStream stores
        once and the pipeline skips."""
        subject = report_subject(self.device_id, partitions)
        return subject, self.to_data(), f"{self.device_id}/{self.message_id}"

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DeviceReport:
        times: dict[str, datetime] = {}  # a report's values usually share one time
        measurements = []
        for parameter, value, text, code in data["measurements"]:
            at = times.get(text)
            if at is None:
                at = times[text] = datetime.fromisoformat(text)
            measurements.append(Measurement(parameter, float(value), at, code))
        return cls(
            device_id=data["device_id"],
            source=data["source"],
            message_id=data["message_id"],
            received_at=datetime.fromisoformat(data["received_at"]),
            measurements=measurements,
            unmapped=[Unmapped(c, v, u) for c, v, u in data["unmapped"]],
            patient_mrn=data.get("patient_mrn", ""),
            location=data.get("location", ""),
            charted=data.get("charted", {}),
        )


_ISO: dict[datetime, str] = {}


def iso(moment: datetime) -> str:
    """``moment.isoformat()``, remembered: a report's values share a time, a ward's reports the second
    (equal moments in other zones share the first one's text: the same instant)."""
    text = _ISO.get(moment)
    if text is None:
        if len(_ISO) > 8192:
            _ISO.clear()
        text = _ISO[moment] = moment.isoformat()
    return text
