"""Triage's API (/api/v1/triage) and pages (/triage): the patient's interview and the nurse's desk."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import Field

from tianfu.core.errors import Conflict, Invalid
from tianfu.core.http.deps import DbDep, KernelDep, require
from tianfu.core.http.problems import PROBLEM_RESPONSES
from tianfu.core.http.schemas import RequestModel, ResponseModel
from tianfu.core.security.permissions import Permission, Role
from tianfu.core.security.principal import Principal
from tianfu.triage import interview as engine
from tianfu.triage import service, urgency
from tianfu.triage.departments import departments
from tianfu.triage.tables import TriageSession
from tianfu.web.rendering import redirect, render

api = APIRouter(prefix="/api/v1/triage", tags=["triage"], responses=PROBLEM_RESPONSES)
pages = APIRouter(prefix="/triage", include_in_schema=False)

Triaging = Annotated[Principal, Depends(require(Permission.TRIAGE))]
Clinician = Annotated[Principal, Depends(require(Permission.CLINICAL_READ))]
Nurse = Annotated[Principal, Depends(require(Permission.CLINICAL_WRITE))]
Id = Annotated[str, Path(max_length=64)]
AnswerWord = Literal["yes", "no", "unsure"]
ANSWERS: dict[str, bool | None] = {"yes": True, "no": False, "unsure": None}


class VitalsIn(RequestModel):
    heart_rate: float | None = Field(None, ge=0, le=400, allow_inf_nan=False)
    systolic_bp: float | None = Field(None, ge=0, le=400, allow_inf_nan=False)
    spo2: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    temperature: float | None = Field(None, ge=20, le=46, allow_inf_nan=False)
    respiratory_rate: float | None = Field(None, ge=0, le=120, allow_inf_nan=False)
    gcs: int | None = Field(None, ge=3, le=15)
    consciousness: Literal["A", "C", "V", "P", "U"] | None = None
    glucose_mmol_l: float | None = Field(None, ge=0, le=60, allow_inf_nan=False)


class StartIn(RequestModel):
    text: str = Field("", max_length=2000, description="The complaint in the patient's own words")
    patient_id: str | None = Field(None, max_length=36)
    visitor_label: str = Field("", max_length=100, description="A walk-in without a record (nurse desk)")
    language: Literal["zh", "en"] = "zh"
    age_years: float | None = Field(None, ge=0, le=130, allow_inf_nan=False)
    sex: Literal["male", "female"] | None = None
    pain_score: int | None = Field(None, ge=0, le=10)
    vitals: VitalsIn | None = None
    model: str | None = Field(
        None, max_length=40, description="A shipped inquiry model; default by language and age"
    )


class AnswerIn(RequestModel):
    symptom: str = Field(min_length=1, max_length=100)
    answer: AnswerWord


class TextIn(RequestModel):
    text: str = Field(min_length=1, max_length=2000)


class DecisionIn(RequestModel):
    level: int = Field(ge=1, le=4)
    department_code: str = Field(min_length=1, max_length=40)
    reason: str = Field("", max_length=500)


class NurseVitalsIn(RequestModel):
    vitals: VitalsIn
    pain_score: int | None = Field(None, ge=0, le=10)


class QuestionOut(ResponseModel):
    symptom: str
    text: str
    answers: list[AnswerWord]


class SessionOut(ResponseModel):
    id: str
    status: str
    channel: str
    patient_id: str | None
    visitor_label: str
    model: str
    question: QuestionOut | None
    known: list[dict[str, Any]]
    result: dict[str, Any] | None
    level: int | None
    department_code: str
    created_at: datetime


def session_out(row: TriageSession) -> SessionOut:
    state = engine.Interview.from_json(row.state)
    question = (
        QuestionOut(
            symptom=state.pending,
            text=engine.question_text(state.pending, state.language),
            answers=["yes", "no", "unsure"],
        )
        if state.pending
        else None
    )
    return SessionOut(
        id=row.id,
        status=row.status,
        channel=row.channel,
        patient_id=row.patient_id,
        visitor_label=row.visitor_label,
        model=state.model,
        question=question,
        known=[{"symptom": s, "value": v, "from": source} for s, v, source in engine.symptoms_known(state)],
        result=row.result,
        level=row.level,
        department_code=row.department_code,
        created_at=row.created_at,
    )


@api.post(
    "/sessions", status_code=201, summary="Start a triage interview (patient self-service or nurse desk)"
)
def start_session(kernel: KernelDep, session: DbDep, principal: Triaging, body: StartIn) -> SessionOut:
    row = service.start(
        session,
        kernel.audit,
        principal,
        text=body.text,
        patient_id=body.patient_id,
        visitor_label=body.visitor_label,
        language=body.language,
        age_years=body.age_years,
        sex=body.sex,
        pain_score=body.pain_score,
        vitals=body.vitals.model_dump(exclude_none=True) if body.vitals else None,
        model=body.model,
    )
    session.commit()
    return session_out(row)


@api.get("/sessions/{session_id}", summary="A triage interview: the pending question, or the result")
def read_session(kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id) -> SessionOut:
    row = service.get(session, kernel.audit, principal, session_id)
    session.commit()
    return session_out(row)


@api.post("/sessions/{session_id}/answers", summary="Answer a question: yes, no or not sure")
def answer_question(
    kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id, body: AnswerIn
) -> SessionOut:
    row = service.answer(session, kernel.audit, principal, session_id, body.symptom, ANSWERS[body.answer])
    session.commit()
    return session_out(row)


@api.post("/sessions/{session_id}/text", summary="Add free text at any point of the interview")
def add_text(
    kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id, body: TextIn
) -> SessionOut:
    row = service.add_text(session, kernel.audit, principal, session_id, body.text)
    session.commit()
    return session_out(row)


@api.post("/sessions/{session_id}/finish", summary="Stop the questions and compute the result now")
def finish_session(kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id) -> SessionOut:
    row = service.finish(session, kernel.audit, principal, session_id)
    session.commit()
    return session_out(row)


@api.get("/sessions/{session_id}/result", summary="The result: conditions, departments, urgency")
def read_result(kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id) -> dict[str, Any]:
    row = service.get(session, kernel.audit, principal, session_id)
    session.commit()
    if row.result is None:
        raise Conflict("the interview is not finished")
    return row.result | {"status": row.status, "level": row.level, "department_code": row.department_code}


@api.get("/queue", summary="The nurse's queue: open sessions, most urgent first")
def read_queue(kernel: KernelDep, session: DbDep, principal: Clinician) -> list[SessionOut]:
    rows = service.queue(session, kernel.audit, principal)
    session.commit()
    return [session_out(r) for r in rows]


@api.post("/sessions/{session_id}/decision", summary="The nurse confirms or overrides level and department")
def decide(
    kernel: KernelDep, session: DbDep, principal: Nurse, session_id: Id, body: DecisionIn
) -> SessionOut:
    row = service.decide(
        session,
        kernel.audit,
        principal,
        session_id,
        level=body.level,
        department_code=body.department_code,
        reason=body.reason,
    )
    session.commit()
    return session_out(row)


@api.post("/sessions/{session_id}/vitals", summary="New vital signs: re-triage (a new assessment)")
def record_vitals(
    kernel: KernelDep, session: DbDep, principal: Nurse, session_id: Id, body: NurseVitalsIn
) -> SessionOut:
    row = service.record_vitals(
        session,
        kernel.audit,
        principal,
        session_id,
        vitals=body.vitals.model_dump(exclude_none=True),
        pain_score=body.pain_score,
    )
    session.commit()
    return session_out(row)


@api.post("/sessions/{session_id}/send", summary="Send the patient to the department")
def send(kernel: KernelDep, session: DbDep, principal: Nurse, session_id: Id) -> SessionOut:
    row = service.send(session, kernel.audit, principal, session_id)
    session.commit()
    return session_out(row)


class DepartmentOut(ResponseModel):
    code: str
    name_zh: str
    name_en: str
    group: str


@api.get("/departments", summary="The hospital's department list that triage routes to")
def list_departments(_: Triaging) -> list[DepartmentOut]:
    return [
        DepartmentOut(code=d.code, name_zh=d.name_zh, name_en=d.name_en, group=d.group) for d in departments()
    ]


class UrgencyIn(RequestModel):
    text: str = Field("", max_length=2000)
    vitals: VitalsIn | None = None
    pain_score: int | None = Field(None, ge=0, le=10)
    age_years: float | None = Field(None, ge=0, le=130, allow_inf_nan=False)


@api.post("/urgency", summary="Four-level emergency triage (预检分级) from vital signs, complaint and pain")
def assess_urgency(_: Clinician, body: UrgencyIn) -> dict[str, Any]:
    result = urgency.assess(
        urgency.UrgencyInput(
            channel="nurse",
            text=body.text,
            vitals=urgency.VitalSigns(**body.vitals.model_dump(exclude_none=True)) if body.vitals else None,
            pain_score=body.pain_score,
            age_years=body.age_years,
        )
    )
    return engine.urgency_json(result)


# --- pages -------------------------------------------------------------------------------------------


def _number(raw: str, name: str) -> float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise Invalid(f"{name} must be a number") from exc


def _form_vitals(**values: str) -> dict[str, Any]:
    parsed = {key: _number(raw, key) for key, raw in values.items()}
    try:
        return VitalsIn(**parsed).model_dump(exclude_none=True)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


@pages.get("")
def triage_home(request: Request, kernel: KernelDep, session: DbDep, principal: Triaging) -> HTMLResponse:
    if principal.role == Role.PATIENT:
        return render(request, "triage/start.html", {})
    rows = service.queue(session, kernel.audit, principal)
    session.commit()
    return render(
        request, "triage/desk.html", {"rows": rows, "departments": {d.code: d for d in departments()}}
    )


@pages.get("/queue")
def queue_fragment(request: Request, kernel: KernelDep, session: DbDep, principal: Clinician) -> HTMLResponse:
    rows = service.queue(session, kernel.audit, principal)
    session.commit()
    return render(
        request, "triage/_queue.html", {"rows": rows, "departments": {d.code: d for d in departments()}}
    )


@pages.get("/new")
def new_page(request: Request, principal: Triaging) -> HTMLResponse:
    return render(request, "triage/start.html", {})


@pages.post("/start")
def start_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Triaging,
    text: Annotated[str, Form(max_length=2000)] = "",
    visitor_label: Annotated[str, Form(max_length=100)] = "",
    age_years: Annotated[str, Form(max_length=10)] = "",
    language: Annotated[Literal["zh", "en"], Form()] = "zh",
) -> Response:
    row = service.start(
        session,
        kernel.audit,
        principal,
        text=text,
        visitor_label=visitor_label,
        language=language,
        age_years=_number(age_years, "age"),
    )
    session.commit()
    return redirect(f"/triage/s/{row.id}")


@pages.get("/s/{session_id}")
def session_page(
    request: Request, kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id
) -> HTMLResponse:
    row = service.get(session, kernel.audit, principal, session_id)
    history = service.assessments(session, row)
    session.commit()
    out = session_out(row)
    template = "triage/session.html" if principal.role == Role.PATIENT else "triage/nurse_session.html"
    return render(
        request,
        template,
        {
            "s": out,
            "row": row,
            "history": history,
            "departments": departments(),
            "by_code": {d.code: d for d in departments()},
        },
    )


@pages.post("/s/{session_id}/answer")
def answer_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Triaging,
    session_id: Id,
    symptom: Annotated[str, Form(max_length=100)],
    answer: Annotated[AnswerWord, Form()],
) -> Response:
    service.answer(session, kernel.audit, principal, session_id, symptom, ANSWERS[answer])
    session.commit()
    return redirect(f"/triage/s/{session_id}")


@pages.post("/s/{session_id}/text")
def text_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Triaging,
    session_id: Id,
    text: Annotated[str, Form(min_length=1, max_length=2000)],
) -> Response:
    service.add_text(session, kernel.audit, principal, session_id, text)
    session.commit()
    return redirect(f"/triage/s/{session_id}")


@pages.post("/s/{session_id}/finish")
def finish_form(kernel: KernelDep, session: DbDep, principal: Triaging, session_id: Id) -> Response:
    service.finish(session, kernel.audit, principal, session_id)
    session.commit()
    return redirect(f"/triage/s/{session_id}")


@pages.post("/s/{session_id}/decision")
def decision_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Nurse,
    session_id: Id,
    level: Annotated[int, Form(ge=1, le=4)],
    department_code: Annotated[str, Form(max_length=40)],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    service.decide(
        session,
        kernel.audit,
        principal,
        session_id,
        level=level,
        department_code=department_code,
        reason=reason,
    )
    session.commit()
    return redirect(f"/triage/s/{session_id}")


@pages.post("/s/{session_id}/vitals")
def vitals_form(
    kernel: KernelDep,
    session: DbDep,
    principal: Nurse,
    session_id: Id,
    heart_rate: Annotated[str, Form(max_length=10)] = "",
    systolic_bp: Annotated[str, Form(max_length=10)] = "",
    spo2: Annotated[str, Form(max_length=10)] = "",
    temperature: Annotated[str, Form(max_length=10)] = "",
    respiratory_rate: Annotated[str, Form(max_length=10)] = "",
    pain_score: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    vitals = _form_vitals(
        heart_rate=heart_rate,
        systolic_bp=systolic_bp,
        spo2=spo2,
        temperature=temperature,
        respiratory_rate=respiratory_rate,
    )
    service.record_vitals(
        session, kernel.audit, principal, session_id, vitals=vitals, pain_score=_pain(pain_score)
    )
    session.commit()
    return redirect(f"/triage/s/{session_id}")


def _pain(raw: str) -> int | None:
    value = _number(raw, "pain score")
    if value is not None and not (0 <= value <= 10 and value == int(value)):
        raise Invalid("pain score is a whole number from 0 to 10")
    return None if value is None else int(value)


@pages.post("/s/{session_id}/send")
def send_form(kernel: KernelDep, session: DbDep, principal: Nurse, session_id: Id) -> Response:
    service.send(session, kernel.audit, principal, session_id)
    session.commit()
    return redirect("/triage")
