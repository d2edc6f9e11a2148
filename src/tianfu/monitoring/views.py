"""Monitoring's API (/api/v1/monitoring), FHIR vital-sign Observations (/fhir/R4) and pages (/monitoring)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request, status
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fhir.resources.R4B.observation import Observation
from pydantic import Field
from sqlalchemy import func, select

from tianfu.core import i18n
from tianfu.core.audit.service import OUTCOME_MINOR_FAILURE
from tianfu.core.deadletter import service as deadletters
from tianfu.core.errors import Forbidden, Invalid, NotFound
from tianfu.core.fhir.router import FHIR_ERRORS, FhirResponse, register_search, searchset
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import IsoDateTime, RequestModel, ResponseModel
from tianfu.core.i18n import _
from tianfu.core.patients.models import Location, Patient
from tianfu.core.patients.service import require_access
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal
from tianfu.monitoring import devices as device_registry
from tianfu.monitoring import service
from tianfu.monitoring.ingest.codes import PARAMETERS
from tianfu.monitoring.ingest.fhir import ObservationError, read_submission
from tianfu.monitoring.live import LiveWards
from tianfu.monitoring.scores import news2_from_mapping
from tianfu.monitoring.settings import get_monitoring_settings
from tianfu.monitoring.tables import MonitoringDevice, VitalSample
from tianfu.web.rendering import redirect, render

api = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"], responses=PROBLEM_RESPONSES)
fhir = APIRouter(
    prefix="/fhir/R4", tags=["FHIR R4"], default_response_class=FhirResponse, responses=FHIR_ERRORS
)
pages = APIRouter(prefix="/monitoring", include_in_schema=False)

Clinician = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Charting = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
DeviceManager = Annotated[Principal, Depends(require(Permission.DEVICE_MANAGE))]
Id = Annotated[str, Path(max_length=64)]


def live(kernel: KernelDep) -> LiveWards:
    wards: LiveWards = kernel.extensions.setdefault("monitoring.live", LiveWards())
    return wards


def partitions() -> int:
    return get_monitoring_settings().partitions


# --- scores ------------------------------------------------------------------------------------------


class News2In(RequestModel):
    respiratory_rate: float | None = Field(None, allow_inf_nan=False)
    spo2: float | None = Field(None, allow_inf_nan=False)
    spo2_scale: Literal[1, 2] = 1
    on_oxygen: bool | None = None
    systolic_bp: float | None = Field(None, allow_inf_nan=False)
    pulse: float | None = Field(None, allow_inf_nan=False)
    consciousness: Literal["A", "C", "V", "P", "U"] | None = None
    temperature: float | None = Field(None, allow_inf_nan=False)


class News2Out(ResponseModel):
    total: int
    band: str
    subscores: dict[str, int | None]
    partial: bool
    missing: list[str]
    frequency: str
    response: str
    response_zh: str
    red_score: bool
    spo2_scale: int


@api.post("/news2", summary="NEWS2 of one observation set (RCP 2017 chart)")
def score_news2(_: Clinician, body: News2In) -> News2Out:
    try:
        result = news2_from_mapping(body.model_dump(exclude_none=True))
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    return News2Out(**result.to_json())


# --- devices -----------------------------------------------------------------------------------------


class DeviceOut(ResponseModel):
    id: str
    identifier: str
    kind: str
    label: str
    manufacturer: str
    model: str
    bed_id: str | None
    active: bool
    last_seen_at: datetime | None
    last_source: str


class DeviceIn(RequestModel):
    identifier: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9:._-]+$")
    kind: Literal["monitor", "wearable", "gateway"] = "monitor"
    label: str = Field("", max_length=100)
    manufacturer: str = Field("", max_length=100)
    model: str = Field("", max_length=100)
    bed_id: str | None = Field(None, max_length=36)


class DeviceChange(RequestModel):
    bed_id: str | None = Field(None, max_length=36)
    label: str | None = Field(None, max_length=100)
    active: bool | None = None


@api.get("/devices", summary="Registered devices (with those not yet placed at a bed)")
def list_devices(session: DbDep, principal: DeviceManager) -> list[DeviceOut]:
    return [
        DeviceOut.model_validate(d)
        for d in device_registry.devices(session, organization_id=principal.organization_id)
        if d.kind != "manual"
    ]


@api.post("/devices", status_code=status.HTTP_201_CREATED, summary="Register a device")
def register_device(kernel: KernelDep, session: DbDep, principal: DeviceManager, body: DeviceIn) -> DeviceOut:
    device = device_registry.register(
        session,
        kernel.audit,
        actor=principal.actor,
        identifier=body.identifier,
        kind=body.kind,
        label=body.label,
        manufacturer=body.manufacturer,
        model=body.model,
        organization_id=principal.organization_id,
    )
    if body.bed_id:
        device_registry.assign(
            session,
            kernel.audit,
            actor=principal.actor,
            device=device,
            bed_id=body.bed_id,
            organization_id=principal.organization_id,
        )
    session.commit()
    return DeviceOut.model_validate(device)


@api.patch("/devices/{device_id}", summary="Place a device at a bed, rename it, or take it out of use")
def change_device(
    kernel: KernelDep, session: DbDep, principal: DeviceManager, device_id: Id, body: DeviceChange
) -> DeviceOut:
    device = session.get(MonitoringDevice, device_id)
    if device is None or (device.organization_id not in (None, principal.organization_id)):
        raise NotFound(f"no device {device_id}")
    fields = body.model_dump(exclude_unset=True)
    if "bed_id" in fields:
        device_registry.assign(
            session,
            kernel.audit,
            actor=principal.actor,
            device=device,
            bed_id=body.bed_id,
            organization_id=principal.organization_id,
        )
    if body.label is not None:
        device.label = body.label
    if body.active is not None:
        device.active = body.active
    session.commit()
    return DeviceOut.model_validate(device)


# --- a ward's live view --------------------------------------------------------------------------------


@api.get("/wards/{ward_id}/live", summary="The latest state of every bed of a ward")
def ward_live(kernel: KernelDep, session: DbDep, principal: Clinician, ward_id: Id) -> list[dict[str, Any]]:
    service.ward_beds(session, kernel.audit, principal, ward_id)
    session.commit()
    return live(kernel).ward(ward_id)


@api.get(
    "/wards/{ward_id}/stream",
    summary="Server-Sent Events: each change of a ward's beds",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def ward_stream(kernel: KernelDep, session: DbDep, principal: Clinician, ward_id: Id) -> StreamingResponse:
    service.ward_beds(session, kernel.audit, principal, ward_id)  # checks and audits who watches the ward
    session.commit()
    return StreamingResponse(
        live(kernel).stream(ward_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- a patient's vital signs and alarms ---------------------------------------------------------------


class SampleOut(ResponseModel):
    observed_at: datetime
    resolution: str
    heart_rate: float | None
    pulse_rate: float | None
    spo2: float | None
    respiratory_rate: float | None
    systolic_bp: float | None
    diastolic_bp: float | None
    mean_bp: float | None
    temperature: float | None
    news2: int | None
    news2_partial: bool
    sepsis_risk: float | None
    flags: dict[str, Any]


@api.get("/patients/{patient_id}/vitals", summary="Stored vital signs (per minute, or hourly means)")
def patient_vitals(
    kernel: KernelDep,
    session: DbDep,
    principal: Clinician,
    patient_id: Id,
    hours: Annotated[int, Query(ge=1, le=24 * 400)] = 24,
    resolution: Annotated[str, Query(pattern="^(minute|hour)$")] = "minute",
) -> list[SampleOut]:
    rows = service.patient_samples(
        session, kernel.audit, principal, patient_id, hours=hours, resolution=resolution
    )
    session.commit()
    return [SampleOut.model_validate(r) for r in rows]


class AlarmEventOut(ResponseModel):
    event: str
    at: datetime
    user_id: str | None
    detail: dict[str, Any]


class AlarmOut(ResponseModel):
    id: str
    condition: str
    kind: str
    priority: str
    state: str
    value: float | None
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by_id: str | None
    cleared_at: datetime | None
    escalation_level: int
    history: list[AlarmEventOut]


@api.get("/patients/{patient_id}/alarms", summary="Alarm history, newest first, with every event")
def patient_alarms(
    kernel: KernelDep,
    session: DbDep,
    principal: Clinician,
    patient_id: Id,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlarmOut]:
    rows = service.patient_alarms(session, kernel.audit, principal, patient_id, limit=limit)
    session.commit()
    return [
        AlarmOut(
            **{name: getattr(e, name) for name in AlarmOut.model_fields if name != "history"},
            history=[AlarmEventOut.model_validate(x) for x in events],
        )
        for e, events in rows
    ]


class AlarmCommandIn(RequestModel):
    seconds: int = Field(120, ge=10, le=180, description="Audio pause (IEC 60601-1-8: time-limited)")


@api.post(
    "/alarms/{alarm_id}/acknowledge", status_code=status.HTTP_202_ACCEPTED, summary="Acknowledge an alarm"
)
def acknowledge(kernel: KernelDep, session: DbDep, principal: Charting, alarm_id: Id) -> dict[str, str]:
    episode = service.alarm_command(
        session, kernel.audit, principal, alarm_id, action="acknowledge", partitions=partitions()
    )
    session.commit()
    return {"id": episode.id, "status": "accepted"}


@api.post("/alarms/{alarm_id}/pause", status_code=status.HTTP_202_ACCEPTED, summary="Pause an alarm's audio")
def pause(
    kernel: KernelDep, session: DbDep, principal: Charting, alarm_id: Id, body: AlarmCommandIn
) -> dict[str, str]:
    episode = service.alarm_command(
        session,
        kernel.audit,
        principal,
        alarm_id,
        action="pause",
        seconds=body.seconds,
        partitions=partitions(),
    )
    session.commit()
    return {"id": episode.id, "status": "accepted"}


class ChartIn(RequestModel):
    kind: Literal["consciousness", "oxygen"]
    value: str = Field(max_length=10, description="A C V P U, or air / oxygen")
    observed_at: IsoDateTime | None = None


@api.post(
    "/patients/{patient_id}/observations",
    status_code=status.HTTP_201_CREATED,
    summary="Chart consciousness (ACVPU) or air/oxygen for NEWS2",
)
def chart(
    kernel: KernelDep, session: DbDep, principal: Charting, patient_id: Id, body: ChartIn
) -> dict[str, str]:
    row = service.chart_observation(
        session,
        kernel.audit,
        principal,
        patient_id,
        kind=body.kind,
        value=body.value,
        observed_at=body.observed_at,
        partitions=partitions(),
    )
    session.commit()
    return {"id": row.id}


class ProfileIn(RequestModel):
    population: Literal["adult", "paediatric"] | None = None
    spo2_scale: Literal[1, 2] | None = None
    limits: dict[str, float | None] | None = Field(None, max_length=40)


@api.put("/patients/{patient_id}/profile", summary="Monitoring orders: population, SpO2 scale, alarm limits")
def profile(
    kernel: KernelDep, session: DbDep, principal: Charting, patient_id: Id, body: ProfileIn
) -> dict[str, Any]:
    row = service.set_profile(
        session,
        kernel.audit,
        principal,
        patient_id,
        population=body.population,
        spo2_scale=body.spo2_scale,
        limits=body.limits,
        partitions=partitions(),
    )
    session.commit()
    return {"population": row.population, "spo2_scale": row.spo2_scale, "limits": row.limits}


# --- FHIR: vital-sign Observations in and out ----------------------------------------------------------

_RESOURCE = {
    "description": "A FHIR resource or Bundle",
    "content": {"application/fhir+json": {"schema": {"type": "object"}}},
}


def _submit(kernel: Any, session: Any, principal: Principal, data: dict[str, Any]) -> list[str]:
    try:
        reports = read_submission(data)
    except ObservationError as exc:
        deadletters.store(
            session,
            source="fhir",
            reason=str(exc),
            payload=str(data)[:100_000],
            meta={"user": principal.username},
        )
        kernel.audit.record(
            session,
            actor=principal.actor,
            action="monitoring.fhir_observation",
            action_type="C",
            outcome=OUTCOME_MINOR_FAILURE,
            outcome_desc=str(exc),
            resource_type="Observation",
            purpose=principal.purpose,
        )
        session.commit()
        raise Invalid(str(exc)) from exc
    ids = []
    for item in reports:
        _, decision = require_access(
            session, kernel.audit, principal, item.patient_id, action="monitoring.fhir_observation"
        )
        service.publish_patient_report(session, item.patient_id, item.report, partitions=partitions())
        kernel.audit.record(
            session,
            actor=principal.actor,
            action="monitoring.fhir_observation",
            action_type="C",
            resource_type="Observation",
            patient_ids=[item.patient_id],
            purpose=decision.purpose,
            detail={"observations": len(item.observation_ids)},
        )
        ids += item.observation_ids
    session.commit()
    return ids


@fhir.post(
    "/Observation",
    status_code=status.HTTP_201_CREATED,
    responses={201: _RESOURCE},
    summary="Record a vital-sign Observation",
)
def post_observation(
    kernel: KernelDep, session: DbDep, principal: Charting, body: dict[str, Any]
) -> FhirResponse:
    ids = _submit(kernel, session, principal, body)
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": f"accepted {len(ids)} observation(s)",
            }
        ],
    }
    return FhirResponse(outcome, status_code=201)


@fhir.post("", responses={200: _RESOURCE}, summary="A batch or transaction Bundle of vital-sign Observations")
def post_bundle(kernel: KernelDep, session: DbDep, principal: Charting, body: dict[str, Any]) -> FhirResponse:
    if body.get("resourceType") != "Bundle":
        raise Invalid("post a Bundle of type batch or transaction here")
    ids = _submit(kernel, session, principal, body)
    kind = "transaction-response" if body.get("type") == "transaction" else "batch-response"
    return FhirResponse(
        {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"response": {"status": "201 Created", "location": f"Observation/{i}"}} for i in ids],
        }
    )


register_search("Observation", ["patient", "category", "code"])


def observation_resources(sample: VitalSample) -> list[dict[str, Any]]:
    """A stored sample as FHIR vital-sign Observations, one per parameter (validated, R4B models)."""
    resources = []
    for key, parameter in PARAMETERS.items():
        value = getattr(sample, key, None)
        if value is None:
            continue
        resource = {
            "resourceType": "Observation",
            "id": f"{sample.id}-{key.replace('_', '-')}",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": parameter.loinc, "display": parameter.label_en}
                ],
                "text": parameter.label_zh,
            },
            "subject": {"reference": f"Patient/{sample.patient_id}"},
            "effectiveDateTime": sample.observed_at.astimezone(UTC).isoformat(),
            "valueQuantity": {
                "value": round(value, 2),
                "unit": parameter.ucum,
                "system": "http://unitsofmeasure.org",
                "code": parameter.ucum,
            },
        }
        if sample.device_id:
            resource["device"] = {"display": sample.device_id}
        resources.append(
            Observation.model_validate(resource).model_dump(mode="json", by_alias=True, exclude_none=True)
        )
    return resources


@fhir.get("/Observation", responses={200: _RESOURCE}, summary="Search vital-sign Observations of a patient")
def search_observations(
    request: Request,
    kernel: KernelDep,
    session: DbDep,
    principal: Clinician,
    patient: Annotated[str, Query(max_length=50)],
    category: Annotated[str, Query(max_length=40)] = "vital-signs",
    code: Annotated[str | None, Query(max_length=40)] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=500)] = 100,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)] = 0,
) -> FhirResponse:
    patient_id = patient.removeprefix("Patient/")
    if category != "vital-signs":
        raise Invalid("only the vital-signs category is served here")
    rows = service.patient_samples(
        session, kernel.audit, principal, patient_id, hours=24 * 7, resolution="minute"
    )
    session.commit()
    resources = [r for sample in reversed(rows) for r in observation_resources(sample)]
    if code:
        wanted = code.split("|")[-1]
        resources = [r for r in resources if r["code"]["coding"][0]["code"] == wanted]
    return searchset(
        request, "Observation", resources[offset : offset + count], len(resources), count, offset
    )


# --- pages ---------------------------------------------------------------------------------------------


@pages.get("")
def monitoring_home(
    request: Request, kernel: KernelDep, session: DbDep, principal: Clinician
) -> HTMLResponse:
    wards = [w for w in session.scalars(select(Location).where(Location.id.in_(principal.ward_ids))).all()]
    summary = []
    for ward in wards:
        beds = live(kernel).ward(ward.id)
        alarms = [a for b in beds for a in b.get("alarms", [])]
        summary.append(
            {
                "ward": ward,
                "beds": len(beds),
                "high": sum(a["priority"] == "high" for a in alarms),
                "medium": sum(a["priority"] == "medium" for a in alarms),
            }
        )
    return render(request, "monitoring/home.html", {"summary": summary})


@pages.get("/wards/{ward_id}")
def central_station(
    request: Request, kernel: KernelDep, session: DbDep, principal: Clinician, ward_id: Id
) -> HTMLResponse:
    ward, rows = service.ward_beds(session, kernel.audit, principal, ward_id)
    session.commit()
    return render(
        request,
        "monitoring/ward.html",
        {"ward": ward, "rows": rows, "states": {s["bed_id"]: s for s in live(kernel).ward(ward_id)}},
    )


# The sepsis model's signals (PhysioNet 2019 names), for people: (Chinese, English).
SIGNAL_LABELS = {
    "HR": ("心率", "Heart rate"),
    "O2Sat": ("血氧饱和度", "SpO₂"),
    "Temp": ("体温", "Temperature"),
    "SBP": ("收缩压", "Systolic BP"),
    "MAP": ("平均动脉压", "Mean BP"),
    "DBP": ("舒张压", "Diastolic BP"),
    "Resp": ("呼吸频率", "Respiration rate"),
    "ShockIndex": ("休克指数", "Shock index"),
    "PulsePressure": ("脉压", "Pulse pressure"),
    "NEWS2_partial": ("NEWS2（部分）", "NEWS2 (partial)"),
    "qSOFA_partial": ("qSOFA（部分）", "qSOFA (partial)"),
    "SIRS_partial": ("SIRS（部分）", "SIRS (partial)"),
    "Age": ("年龄", "Age"),
    "Gender": ("性别", "Sex"),
    "ICULOS": ("本次住院时长", "Hours on the unit"),
    "HospAdmTime": ("入本病区前住院时长", "Time in hospital before this unit"),
    "Unit1": ("内科 ICU", "Medical ICU"),
    "Unit2": ("外科 ICU", "Surgical ICU"),
    "FiO2": ("吸氧浓度", "FiO₂"),
    "SaO2": ("动脉血氧饱和度", "SaO₂"),
    "pH": ("pH", "pH"),
    "PaCO2": ("动脉二氧化碳分压", "PaCO₂"),
    "BaseExcess": ("碱剩余", "Base excess"),
    "HCO3": ("碳酸氢根", "Bicarbonate"),
    "Lactate": ("乳酸", "Lactate"),
    "WBC": ("白细胞", "White cells"),
    "Platelets": ("血小板", "Platelets"),
    "Hgb": ("血红蛋白", "Haemoglobin"),
    "Hct": ("红细胞压积", "Haematocrit"),
    "Creatinine": ("肌酐", "Creatinine"),
    "BUN": ("尿素氮", "Urea nitrogen"),
    "BUN_Creatinine": ("尿素氮/肌酐", "Urea/creatinine ratio"),
    "Glucose": ("血糖", "Glucose"),
    "Potassium": ("钾", "Potassium"),
    "Chloride": ("氯", "Chloride"),
    "Calcium": ("钙", "Calcium"),
    "Magnesium": ("镁", "Magnesium"),
    "Phosphate": ("磷", "Phosphate"),
    "AST": ("谷草转氨酶", "AST"),
    "Alkalinephos": ("碱性磷酸酶", "Alkaline phosphatase"),
    "Bilirubin_total": ("总胆红素", "Total bilirubin"),
    "Bilirubin_direct": ("直接胆红素", "Direct bilirubin"),
    "TroponinI": ("肌钙蛋白 I", "Troponin I"),
    "Fibrinogen": ("纤维蛋白原", "Fibrinogen"),
    "PTT": ("部分凝血活酶时间", "PTT"),
    "labs_total": ("化验次数", "Lab tests so far"),
    "n_labs_now": ("本小时化验数", "Lab tests this hour"),
    "n_vitals_now": ("本小时测量数", "Vital signs this hour"),
}


@pages.get("/patients/{patient_id}")
def patient_page(
    request: Request, kernel: KernelDep, session: DbDep, principal: Clinician, patient_id: Id
) -> HTMLResponse:
    samples = service.patient_samples(session, kernel.audit, principal, patient_id, hours=24, resolution=None)
    alarms = service.patient_alarms(session, kernel.audit, principal, patient_id, limit=50)
    patient = session.get(Patient, patient_id)
    session.commit()
    state = next(
        (s for s in live(kernel).beds.values() if (s.get("patient") or {}).get("id") == patient_id), None
    )
    chart = {
        "times": [s.observed_at.isoformat() for s in samples],
        "series": {
            k: [getattr(s, k) for s in samples]
            for k in (
                "heart_rate",
                "spo2",
                "respiratory_rate",
                "systolic_bp",
                "diastolic_bp",
                "temperature",
                "news2",
            )
        },
    }
    return render(
        request,
        "monitoring/patient.html",
        {
            "patient": patient,
            "state": state,
            "chart": chart,
            "alarms": alarms,
            "parameters": PARAMETERS,
            "sepsis_signals": [
                SIGNAL_LABELS.get(c["signal"], (c["signal"], c["signal"]))[
                    0 if i18n.current_language() == "zh_CN" else 1
                ]
                for c in ((state or {}).get("sepsis") or {}).get("top", [])
            ],
        },
    )


@pages.post("/patients/{patient_id}/chart")
def chart_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Charting,
    patient_id: Id,
    kind: Annotated[str, Form(max_length=20)],
    value: Annotated[str, Form(max_length=10)],
) -> Response:
    try:
        service.chart_observation(
            session,
            kernel.audit,
            principal,
            patient_id,
            kind=kind,
            value=value,
            observed_at=None,
            partitions=partitions(),
        )
    except (Invalid, Forbidden) as exc:
        session.rollback()
        return redirect(f"/monitoring/patients/{patient_id}", f"⚠ {exc.detail}")
    session.commit()
    return redirect(f"/monitoring/patients/{patient_id}", _("Saved."))


@pages.post("/alarms/{alarm_id}/acknowledge")
def acknowledge_form(
    request: Request, kernel: KernelDep, session: DbDep, principal: Charting, alarm_id: Id
) -> Response:
    service.alarm_command(
        session, kernel.audit, principal, alarm_id, action="acknowledge", partitions=partitions()
    )
    session.commit()
    return Response(status_code=204)


@pages.get("/devices")
def devices_page(request: Request, session: DbDep, principal: DeviceManager) -> HTMLResponse:
    rows = [
        d
        for d in device_registry.devices(session, organization_id=principal.organization_id)
        if d.kind != "manual"
    ]
    beds = session.scalars(
        select(Location)
        .where(Location.kind == "bed", Location.organization_id == principal.organization_id)
        .order_by(Location.code)
    ).all()
    unassociated = (
        session.scalar(select(func.count()).select_from(VitalSample).where(VitalSample.patient_id.is_(None)))
        or 0
    )
    return render(
        request,
        "monitoring/devices.html",
        {"devices": rows, "beds": beds, "bed_names": {b.id: b for b in beds}, "unassociated": unassociated},
    )


@pages.post("/devices/{device_id}")
def device_form(
    kernel: KernelDep,
    session: DbDep,
    principal: DeviceManager,
    device_id: Id,
    bed_id: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    device = session.get(MonitoringDevice, device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    try:
        device_registry.assign(
            session,
            kernel.audit,
            actor=principal.actor,
            device=device,
            bed_id=bed_id or None,
            organization_id=principal.organization_id,
        )
    except Exception as exc:  # conflict or unknown bed: show why
        session.rollback()
        return redirect("/monitoring/devices", f"⚠ {getattr(exc, 'detail', exc)}")
    session.commit()
    return redirect("/monitoring/devices", _("Saved."))
