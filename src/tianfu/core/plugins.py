"""How the clinical capabilities plug into the kernel.

A capability is a package that exposes a :class:`TianfuModule` under the ``tianfu.modules`` entry-point
group. The kernel mounts its routers and templates, registers its CLI group, imports its tables for
migrations, and runs its bus consumers (in ``tianfu serve``, or in ``tianfu worker`` processes).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tianfu.core.i18n import N_

if TYPE_CHECKING:
    from fastapi import APIRouter

    from tianfu.core.bus import Event
    from tianfu.core.kernel import Kernel
    from tianfu.core.model_registry.manifest import AiTask, ModelManifest


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable bus subscription a module runs; ``make_handler`` receives the running kernel."""

    subject_filter: str
    durable: str
    make_handler: Callable[[Kernel], Callable[[Event], Awaitable[None]]]
    max_deliver: int = 5


@dataclass(frozen=True)
class PatientPanel:
    """A module's section on the patient page: a template (in the module's templates) and its context."""

    title: str  # English msgid
    template: str
    context: dict[str, Any]


@dataclass(frozen=True)
class CasePacketSection:
    """A module's part of a consultation's case packet: small, JSON-able, read from its own tables.

    ``items`` are plain dicts of str, int, float, bool, None or ISO-8601 text; ``links`` point at the
    module's own pages or API for the full record (images, the whole trend).
    """

    module: str  # the contributing module's key
    title: str  # English msgid; the page translates it
    items: list[dict[str, Any]]
    links: list[dict[str, str]] = field(default_factory=list)  # {"label": msgid, "href": path}

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "title": self.title, "items": self.items, "links": self.links}


@dataclass(frozen=True)
class TianfuModule:
    key: str  # monitoring, triage, imaging, consult, ai
    home_path: str  # where its first page lives
    review_path: str = ""  # where auditors, who read no charts, review its records instead
    api_router: APIRouter | None = None
    page_router: APIRouter | None = None
    fhir_router: APIRouter | None = None
    extra_routers: Sequence[APIRouter] = ()  # more API routers with their own prefixes (DICOMweb)
    # Routers built once every module is loaded (the AI platform's route per other module's task).
    late_routers: Callable[[], Sequence[APIRouter]] | None = None
    templates_dir: Path | None = None
    static_dir: Path | None = None  # served at /static/<key>/
    model_modules: Sequence[str] = ()  # dotted modules defining its tables
    cli: Any = None  # a typer.Typer, registered as ``tianfu <cli_name or key>``
    cli_name: str = ""
    bench: Any = None  # a function registered as ``tianfu bench <key>``
    consumers: Sequence[ConsumerSpec] = field(default_factory=tuple)
    # Extra startup for listeners (MLLP, DICOM ...): async callables taking the kernel, returning a stopper.
    services: Sequence[Callable[[Kernel], Awaitable[Callable[[], Awaitable[None]]]]] = field(
        default_factory=tuple
    )
    # Adds the module's part of the demo hospital (devices, recordings ...) after the kernel's demo seed.
    seed_demo: Callable[[Kernel], None] | None = None
    # Sections the module adds to a patient's page: called with (session, principal, patient); returns a
    # PatientPanel, or None when it has nothing to show for that patient.
    patient_panels: Sequence[Callable[..., PatientPanel | None]] = field(default_factory=tuple)
    # A patient's latest measured vital signs, for other modules (triage reads them at the desk): called
    # with (session, patient_id, max_age_s); returns {"heart_rate": …, "observed_at": …} or None.
    latest_vitals: Callable[..., dict[str, Any] | None] | None = None
    # Its part of a remote consultation's case packet (会诊病历资料): called with (session, patient_id,
    # since); returns a CasePacketSection, or None when it knows nothing about the patient. The caller
    # has checked access and audits the read.
    case_packet: Callable[..., CasePacketSection | None] | None = None
    # Path prefixes whose routes take large bodies and enforce their own limit (DICOM uploads).
    own_body_limit_paths: Sequence[str] = ()
    # Path prefixes allowed a larger body than TIANFU_MAX_BODY_BYTES, still enforced by the kernel
    # (labelled datasets for local validation): (prefix, max bytes).
    larger_body_limits: Sequence[tuple[str, int]] = ()
    # The model versions it ships, each built from the model's metadata file (its card's one source).
    shipped_models: Callable[[], Sequence[ModelManifest]] | None = None
    # Reads an imported model version's metadata file (``tianfu ai register``) into a manifest.
    read_model_manifest: Callable[[Path], ModelManifest] | None = None
    # Inference tasks it offers other systems (/api/v1/ai/infer/<key>) and local validation.
    ai_tasks: Callable[[], Sequence[AiTask]] | None = None

    def import_models(self) -> None:
        for name in self.model_modules:
            importlib.import_module(name)


@dataclass(frozen=True)
class Capability:
    """One of the five systems of the plan, shown on the home page whether installed yet or not."""

    key: str
    title: str  # English msgid; the page translates it
    summary: str
    icon: str


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "monitoring",
        N_("Vital-sign monitoring"),
        N_("Central station, early warning scores and alarms"),
        "heart",
    ),
    Capability(
        "triage", N_("Guidance and triage"), N_("Symptom interview, department and urgency"), "compass"
    ),
    Capability(
        "imaging", N_("Medical image recognition"), N_("DICOM studies, AI findings and worklist"), "scan"
    ),
    Capability("consult", N_("Remote consultation"), N_("Expert opinions between institutions"), "video"),
    Capability(
        "ai", N_("AI diagnosis platform"), N_("Model registry, local validation and field monitoring"), "chip"
    ),
)


def latest_vitals(session: Any, patient_id: str, max_age_s: int) -> dict[str, Any] | None:
    """The newest vital signs any installed module measured for the patient within ``max_age_s``."""
    found = [
        vitals
        for module in installed_modules()
        if module.latest_vitals is not None
        and (vitals := module.latest_vitals(session, patient_id, max_age_s)) is not None
    ]
    return max(found, key=lambda v: v["observed_at"], default=None)


def case_packet(session: Any, patient_id: str, since: datetime) -> list[CasePacketSection]:
    """Every installed module's section of a patient's case packet, in module order.

    Modules installed later contribute through their own hook; the consultation module never changes.
    """
    return [
        section
        for module in installed_modules()
        if module.case_packet is not None
        and (section := module.case_packet(session, patient_id, since)) is not None
    ]


@lru_cache
def installed_modules() -> tuple[TianfuModule, ...]:
    found = []
    for ep in sorted(entry_points(group="tianfu.modules"), key=lambda e: e.name):
        module = ep.load()
        if not isinstance(module, TianfuModule):
            raise TypeError(f"entry point {ep.name} must be a TianfuModule, got {type(module).__name__}")
        found.append(module)
    return tuple(found)
