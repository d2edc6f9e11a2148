"""FHIR R4 vital-sign Observations in: a single Observation or a batch/transaction Bundle of them.

Each Observation is validated with ``fhir.resources`` and against the vital-signs profile rules that
matter here: status final/amended/preliminary, category vital-signs, a LOINC code Tianfu knows, a
subject ``Patient/{id}``, an effective time with a zone, and a ``valueQuantity`` (or, for consciousness
and oxygen, the codes below). Blood-pressure panels (85354-9) are read through their components.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from tianfu.monitoring.ingest.codes import LOINC_TO_PARAMETER
from tianfu.monitoring.ingest.report import DeviceReport, Measurement

LOINC = "http://loinc.org"
VITAL_SIGNS_CATEGORY = "vital-signs"
BP_PANEL = "85354-9"
CONSCIOUSNESS = "67775-7"  # Level of responsiveness (ACVPU), as a nurse charts it
INHALED_OXYGEN = "3151-8"  # Inhaled oxygen flow rate: above 0 means on oxygen
ACVPU_ANSWERS = {
    "alert": "A",
    "confusion": "C",
    "voice": "V",
    "pain": "P",
    "unresponsive": "U",
    "a": "A",
    "c": "C",
    "v": "V",
    "p": "P",
    "u": "U",
}


class ObservationError(ValueError):
    def __init__(self, index: int, text: str) -> None:
        super().__init__(f"entry {index}: {text}" if index >= 0 else text)
        self.index = index


@dataclass
class PatientReport:
    """Observations about one patient, as a report the monitoring pipeline can take."""

    patient_id: str
    report: DeviceReport
    observation_ids: list[str] = field(default_factory=list)


def _loinc_codes(resource: Observation) -> list[str]:
    return [c.code for c in (resource.code.coding or []) if c.system == LOINC and c.code]


def _zoned(moment: datetime | None, index: int) -> datetime:
    if moment is None:
        raise ObservationError(index, "effectiveDateTime is required")
    if moment.tzinfo is None:
        raise ObservationError(index, "effectiveDateTime needs a time zone")
    return moment.astimezone(UTC)


def read_observation(data: dict[str, Any], index: int = -1) -> tuple[str, list[Measurement], dict[str, Any]]:
    """(patient id, measurements, charted values such as consciousness) of one vital-sign Observation."""
    try:
        resource = Observation.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ObservationError(
            index, f"not a valid Observation: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from exc
    if resource.status not in {"final", "amended", "corrected", "preliminary"}:
        raise ObservationError(index, f"status {resource.status!r} cannot be used")
    categories = {c.code for cat in (resource.category or []) for c in (cat.coding or [])}
    if VITAL_SIGNS_CATEGORY not in categories:
        raise ObservationError(index, "category must include vital-signs")
    reference = resource.subject.reference if resource.subject else None
    if not reference or not reference.startswith("Patient/"):
        raise ObservationError(index, "subject must be Patient/{id}")
    patient_id = reference.split("/", 1)[1]
    when = _zoned(resource.effectiveDateTime, index)
    codes = _loinc_codes(resource)
    measurements: list[Measurement] = []
    charted: dict[str, Any] = {}
    if CONSCIOUSNESS in codes:
        answer = ""
        if resource.valueCodeableConcept is not None:
            answer = (resource.valueCodeableConcept.text or "") or next(
                (c.code or "" for c in resource.valueCodeableConcept.coding or []), ""
            )
        elif resource.valueString:
            answer = resource.valueString
        level = ACVPU_ANSWERS.get(answer.strip().lower())
        if level is None:
            raise ObservationError(index, "consciousness must be one of A, C, V, P, U")
        charted["consciousness"] = [level, when.isoformat()]
        return patient_id, measurements, charted
    if INHALED_OXYGEN in codes:
        if resource.valueQuantity is None or resource.valueQuantity.value is None:
            raise ObservationError(index, "oxygen flow needs valueQuantity")
        charted["on_oxygen"] = [float(resource.valueQuantity.value) > 0, when.isoformat()]
        return patient_id, measurements, charted
    if BP_PANEL in codes:
        for component in resource.component or []:
            parameter = next(
                (
                    LOINC_TO_PARAMETER.get(c.code or "")
                    for c in component.code.coding or []
                    if c.system == LOINC
                ),
                None,
            )
            if (
                parameter
                and component.valueQuantity is not None
                and component.valueQuantity.value is not None
            ):
                measurements.append(
                    Measurement(parameter, float(component.valueQuantity.value), when, f"LOINC:{BP_PANEL}")
                )
        if not measurements:
            raise ObservationError(index, "blood-pressure panel without systolic or diastolic component")
        return patient_id, measurements, charted
    parameter = next((LOINC_TO_PARAMETER[c] for c in codes if c in LOINC_TO_PARAMETER), None)
    if parameter is None:
        raise ObservationError(index, f"no known vital-sign LOINC code among {codes or 'none'}")
    if resource.valueQuantity is None or resource.valueQuantity.value is None:
        raise ObservationError(index, "valueQuantity is required (use dataAbsentReason only with a value)")
    value = float(resource.valueQuantity.value)
    unit = (resource.valueQuantity.code or resource.valueQuantity.unit or "").strip()
    if parameter == "temperature" and unit in {"[degF]", "degF", "°F"}:
        value = (value - 32.0) * 5.0 / 9.0
    measurements.append(Measurement(parameter, value, when, f"LOINC:{codes[0]}"))
    return patient_id, measurements, charted


def read_submission(data: dict[str, Any], *, received_at: datetime | None = None) -> list[PatientReport]:
    """One Observation, or every Observation of a batch/transaction Bundle, grouped by patient."""
    now = received_at or datetime.now(UTC)
    kind = data.get("resourceType")
    if kind == "Observation":
        entries = [data]
    elif kind == "Bundle":
        if data.get("type") not in {"batch", "transaction"}:
            raise ObservationError(-1, "only batch or transaction Bundles are accepted")
        entries = [e.get("resource") or {} for e in data.get("entry") or []]
        if not entries:
            raise ObservationError(-1, "the Bundle has no entries")
        if len(entries) > 500:
            raise ObservationError(-1, "at most 500 entries per Bundle")
        for position, entry in enumerate(entries):
            if entry.get("resourceType") != "Observation":
                raise ObservationError(position, "only Observation entries are accepted")
    else:
        raise ObservationError(-1, "post an Observation or a Bundle of Observations")
    by_patient: dict[str, PatientReport] = {}
    for position, entry in enumerate(entries):
        patient_id, measurements, charted = read_observation(entry, position if kind == "Bundle" else -1)
        target = by_patient.get(patient_id)
        if target is None:
            target = PatientReport(
                patient_id,
                DeviceReport(
                    device_id=f"fhir:{patient_id}",
                    source="fhir",
                    message_id=str(uuid.uuid4()),
                    received_at=now,
                ),
            )
            by_patient[patient_id] = target
        target.report.measurements.extend(measurements)
        target.report.charted.update(charted)
        target.observation_ids.append(str(uuid.uuid4()))
    return list(by_patient.values())
