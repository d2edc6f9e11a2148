"""Intelligent guidance and triage (智能导医分诊), plugged into the kernel."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu.core.i18n import N_
from tianfu.core.kernel import Kernel
from tianfu.core.patients.models import Patient
from tianfu.core.plugins import CasePacketSection, PatientPanel, TianfuModule
from tianfu.core.security.permissions import Permission
from tianfu.core.security.principal import Principal
from tianfu.triage import ai, cli, views


def seed_demo(kernel: Kernel) -> None:
    from tianfu.triage.demo import seed

    seed(kernel)


def patient_panel(session: Session, principal: Principal, patient: Patient) -> PatientPanel | None:
    """The patient's recent triage visits on the patient page (the page has checked access and audits)."""
    if not principal.can(Permission.CLINICAL_READ):
        return None
    from tianfu.triage.departments import departments
    from tianfu.triage.tables import TriageSession

    visits = session.scalars(
        select(TriageSession)
        .where(TriageSession.patient_id == patient.id)
        .order_by(TriageSession.created_at.desc())
        .limit(5)
    ).all()
    names = {d.code: d for d in departments()}
    return PatientPanel(N_("Triage"), "triage/_panel.html", {"visits": visits, "departments": names})


def case_packet(session: Session, patient_id: str, since: datetime) -> CasePacketSection | None:
    """The patient's latest triage result, however old: the level and department decided at the desk."""
    from tianfu.triage.tables import TriageSession

    row = session.scalar(
        select(TriageSession)
        .where(TriageSession.patient_id == patient_id, TriageSession.result.is_not(None))
        .order_by(TriageSession.created_at.desc())
        .limit(1)
    )
    if row is None:
        return None
    result = row.result or {}
    item = {
        "kind": "triage",
        "status": row.status,
        "level": row.level,
        "department_code": row.department_code,
        "channel": row.channel,
        "symptoms_present": list(result.get("symptoms_present", []))[:20],
        # The model's ranking is a suggestion, shown as such (TC-08).
        "ai_conditions": [
            {"name": c.get("name"), "probability": c.get("probability")}
            for c in list(result.get("conditions", []))[:3]
        ],
        "triaged_at": (row.completed_at or row.created_at).isoformat(),
    }
    return CasePacketSection("triage", N_("Triage"), [item])


MODULE = TianfuModule(
    key="triage",
    shipped_models=ai.shipped_models,
    read_model_manifest=ai.read_model_manifest,
    ai_tasks=ai.ai_tasks,
    home_path="/triage",
    api_router=views.api,
    page_router=views.pages,
    templates_dir=Path(__file__).parent / "templates",
    static_dir=Path(__file__).parent / "static",
    model_modules=("tianfu.triage.tables",),
    cli=cli.app,
    cli_name="triage",
    bench=cli.bench,
    seed_demo=seed_demo,
    patient_panels=(patient_panel,),
    case_packet=case_packet,
)
