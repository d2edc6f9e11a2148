"""The triage models as the AI platform sees them: manifests, inference tasks and local validation.

Two kinds of model version, each a ``.npz`` of arrays beside the ``.json`` that is its source of truth:

* ``department-classifier``: the internal-medicine question classifier inside the department router.
  Its task, ``triage-departments``, routes a chief complaint (free text) to departments with reasons;
  the router's knowledge files (CMeKG, department list) ship with the package and are not versioned
  with the model. Red flags in the complaint send the patient to the emergency department, as in the
  interview (urgency comes from reviewed rules, never from a model).
* one symptom-inquiry model per benchmark (``dxy``, ``mz10`` …): task ``triage-inquiry-<name>`` ranks
  the model's diseases from the symptoms a patient has and has not.

Inference loads the classifier or inquiry model from the registry's directory for the active version.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tianfu.core.model_registry.manifest import (
    ActiveModel,
    AiTask,
    FeatureReference,
    InferenceResult,
    ModelManifest,
    Progress,
    ValidationData,
)
from tianfu.triage import urgency
from tianfu.triage.catalogue import load_model, registry_name
from tianfu.triage.departments import (
    CLASSIFIER_NAME,
    DepartmentRouter,
    QuestionClassifier,
    department,
    load_benchmark_profiles,
    load_cmekg_knowledge,
    load_router_params,
    prepare_text,
)
from tianfu.triage.inquiry import Answer, Case, InquiryModel, read_cases

MODULE = "triage"
MODELS_DIR = Path(__file__).resolve().parent / "models"
INQUIRY_DIR = MODELS_DIR / "inquiry"
DEPARTMENTS_TASK = "triage-departments"
MAX_COMPLAINT_CHARS = 2000
MAX_SYMPTOMS = 64
# The classifier JSON records no training date: the day its files were committed with the module.
_CLASSIFIER_TRAINED_ON = "2026-11-30"
# Levels Ⅰ and Ⅱ, and a red flag, go to the emergency department (as interview.EMERGENCY_LEVEL).
_EMERGENCY_LEVEL = 2
_EMERGENCY_CODE = "emerg"
OTHER_CATEGORY = "(other)"  # symptoms outside a categorical reference count here

_INQUIRY_USE = (
    "Guidance before a visit and decision support at a triage desk: ranks the benchmark's diseases from "
    "reported symptoms. Not a diagnosis and not for clinical use; urgency is decided by rules, never by "
    "this model."
)
_INQUIRY_LICENCE = "none stated by the benchmark's sources: research use only; not for clinical use"
_INQUIRY_LIMITS = (
    "Knows only its benchmark's diseases: a patient with anything else gets the closest of them.",
    "Benchmarks are paediatric-heavy (DXY, MZ-4, MZ-10), synthetic (SD-90) or translated (MDD); real "
    "patients report differently from the benchmark's simulated patients.",
    "Some benchmark 'symptoms' are findings a patient cannot report (e.g. lung shadow on imaging).",
    "Cross-validated on the training files only; the settings were chosen on the same folds (slightly "
    "optimistic); never validated on Chinese hospital patients.",
)
_CLASSIFIER_USE = (
    "A hint, with probabilities, about which clinic a patient's free-text complaint belongs to, inside "
    "the department router of a self-service guidance (导医) channel; a person makes the decision. Not "
    "for clinical use."
)
_CLASSIFIER_LICENCE = (
    "MIT (Toyhom/Chinese-medical-dialogue-data); router knowledge from CMeKG (MIT per PyCMeKG, upstream "
    "says academic use): research use, not for clinical use"
)
_CLASSIFIER_LIMITS = (
    "The classifier knows internal medicine only (11 Toyhom labels); the router's CMeKG knowledge "
    "covers other specialties.",
    "Trained on online consultation questions that mostly name their disease; short kiosk complaints in "
    "lay words, dialect or speech-to-text will route less accurately.",
    "Labels are a website's, not a hospital's structure; retrain on the hospital's own questions.",
    "Says nothing about urgency: red flags come from the reviewed urgency rules.",
)


# ---- manifests ---------------------------------------------------------------------------------------


def shipped_models() -> list[ModelManifest]:
    """The department classifier and every shipped inquiry model, from their JSON files."""
    paths = [MODELS_DIR / f"{CLASSIFIER_NAME}.json"]
    paths += sorted(p for p in INQUIRY_DIR.glob("*.json") if p.with_suffix(".npz").is_file())
    return [read_model_manifest(p) for p in paths]


def read_model_manifest(json_path: Path) -> ModelManifest:
    """The manifest of a department-classifier or inquiry model version (its ``.npz`` sits beside it)."""
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    files = (json_path.with_suffix(".npz"), json_path)
    if "classes" in meta and "ngram_range" in meta:
        return _classifier_manifest(meta, files)
    if "diseases" in meta and "symptoms" in meta:
        return _inquiry_manifest(meta, files)
    raise ValueError(f"{json_path}: neither a department classifier nor an inquiry model")


def _classifier_manifest(meta: Mapping[str, Any], files: tuple[Path, Path]) -> ModelManifest:
    cv = meta.get("cv", {})
    metrics = {
        k: float(cv[k]["mean"]) for k in ("top1", "top3", "macro_recall", "majority_baseline") if k in cv
    }
    if "top1" in metrics:
        metrics["accuracy"] = metrics["top1"]
    training = meta.get("training", {})
    return ModelManifest(
        name=str(meta["name"]),
        version=str(meta["version"]),
        module=MODULE,
        task=DEPARTMENTS_TASK,
        title="Department routing from a chief complaint (internal-medicine question classifier)",
        intended_use=str(meta.get("intended_use") or _CLASSIFIER_USE),
        training_data=(
            f"{training.get('data', 'see the model card')}: {meta.get('n_train', '?')} questions; metrics by "
            f"{cv.get('folds', '?')}-fold cross-validation grouped by {cv.get('grouped_by', 'question')}"
        ),
        data_licence=str(meta.get("data_licence") or _CLASSIFIER_LICENCE),
        metrics=metrics,
        trained_on=str(meta.get("trained") or _CLASSIFIER_TRAINED_ON),
        files=files,
        limits=tuple(meta.get("limits") or _CLASSIFIER_LIMITS),
        reference=_references(meta.get("reference", ())),
        # The self-check probabilities and the grid are small; only the reference lives elsewhere.
        card={k: v for k, v in meta.items() if k != "reference"},
    )


def _inquiry_manifest(meta: Mapping[str, Any], files: tuple[Path, Path]) -> ModelManifest:
    info = meta.get("metadata", {})
    cv = info.get("cross_validation", {})
    metrics = {k: float(cv[k]) for k in ("accuracy", "accuracy_sd", "symptom_recall") if k in cv}
    if "avg_turns" in cv:
        metrics["turns"] = float(cv["avg_turns"])
    name = str(meta["name"])
    licence = _INQUIRY_LICENCE
    if name == "sd90":
        licence += "; SymCat, behind SD-90, is a commercial source"
    return ModelManifest(
        name=registry_name(name),
        version=str(meta["version"]),
        module=MODULE,
        task=inquiry_task_key(name),
        title=f"Symptom inquiry: {info.get('description', name)}",
        intended_use=str(meta.get("intended_use") or _INQUIRY_USE),
        training_data=(
            f"{info.get('training_file', '?')} ({info.get('cases', '?')} cases; the benchmark's test "
            f"split never read); metrics by {cv.get('folds', '?')}-fold cross-validation (seed "
            f"{cv.get('seed', '?')}, at most {cv.get('max_turns', '?')} questions)"
        ),
        data_licence=str(meta.get("data_licence") or licence),
        metrics=metrics,
        trained_on=str(info.get("trained", "")),
        files=files,
        limits=tuple(meta.get("limits") or _INQUIRY_LIMITS),
        reference=_references(meta.get("reference", ())),
        card={k: v for k, v in meta.items() if k != "reference"},
    )


def _references(raw: Any) -> tuple[FeatureReference, ...]:
    return tuple(FeatureReference.from_json(r) for r in raw)


def inquiry_task_key(name: str) -> str:
    return f"triage-inquiry-{name}"


# ---- loading from the registry's directory -----------------------------------------------------------

_T = TypeVar("_T")
_loaded: dict[tuple[str, str, str, str], Any] = {}
_load_lock = threading.Lock()


def _cached(kind: str, active: ActiveModel, load: Callable[[], _T]) -> _T:
    """One loaded object per (directory, name, version): an imported version never shadows the shipped
    one, and the shipped inquiry models, which share a directory and a version number, stay apart."""
    key = (kind, str(active.directory.resolve()), active.manifest.name, active.version)
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = load()
        found: _T = _loaded[key]
        return found


def _weights_and_json(active: ActiveModel) -> tuple[Path, Path]:
    return active.path(active.manifest.files[0].name), active.path(active.manifest.files[-1].name)


def inquiry_path(active: ActiveModel) -> str:
    """How an interview names the active version's files: "" for the shipped model, else their path
    without the suffix (see :func:`tianfu.triage.catalogue.load_model`)."""
    weights, _ = _weights_and_json(active)
    return "" if weights.parent.resolve() == INQUIRY_DIR.resolve() else str(weights.with_suffix(""))


def load_inquiry(active: ActiveModel) -> InquiryModel:
    """The same cached model the interviews use."""
    weights, _ = _weights_and_json(active)
    return load_model(weights.stem, inquiry_path(active))


def load_router(active: ActiveModel) -> DepartmentRouter:
    """The department router over the shipped knowledge, with the active version's classifier."""

    def build() -> DepartmentRouter:
        weights, meta = _weights_and_json(active)
        classifier = QuestionClassifier.from_files(weights, meta)
        knowledge = load_cmekg_knowledge() + load_benchmark_profiles()
        return DepartmentRouter(knowledge, load_router_params(), classifier=classifier)

    return _cached("router", active, build)


def _classifier(active: ActiveModel) -> QuestionClassifier:
    found = load_router(active).classifier()
    if found is None:  # load_router always passes one
        raise ValueError(f"{active.manifest.name} {active.version}: no classifier loaded")
    return found


# ---- input summaries for drift checks ----------------------------------------------------------------


def categorical_values(values: Sequence[str], reference: Sequence[FeatureReference], name: str) -> list[str]:
    """``values`` with those outside the reference's categories as :data:`OTHER_CATEGORY`, when it has one."""
    ref = next((r for r in reference if r.name == name), None)
    if ref is None or OTHER_CATEGORY not in ref.categories:
        return list(values)
    known = set(ref.categories)
    return [v if v in known else OTHER_CATEGORY for v in values]


def complaint_summary(text: str, symptoms: Sequence[str]) -> dict[str, Any]:
    """What drift checks see of a complaint: its length and the symptoms the router found in it."""
    return {
        "text_length": len(prepare_text(text)),
        "symptoms": list(symptoms),
        "symptom_count": len(symptoms),
    }


def inquiry_summary(mentioned: Sequence[str]) -> dict[str, Any]:
    """What drift checks see of an inquiry: the symptoms stated (present or absent) and how many."""
    return {"symptoms": sorted(mentioned), "symptom_count": len(mentioned)}


# ---- department routing ------------------------------------------------------------------------------


class ComplaintRequest(BaseModel):
    """A patient's chief complaint in their own words (Chinese, as typed at a kiosk or by a nurse)."""

    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    complaint: str = Field(
        min_length=1,
        max_length=MAX_COMPLAINT_CHARS,
        description="The chief complaint, free text (主诉).",
        examples=["发烧咳嗽三天"],
    )
    age_years: float | None = Field(
        default=None, ge=0, le=130, description="Age in years (children go to 儿科).", examples=[34]
    )
    sex: Literal["M", "F"] | None = Field(
        default=None, description="M or F: removes clinics that cannot apply.", examples=["F"]
    )
    top: int = Field(default=3, ge=1, le=10, description="How many departments to return.", examples=[3])
    patient_ref: str | None = Field(
        default=None,
        max_length=128,
        description="The caller's own reference for the patient (an EMR number); Tianfu keeps only its hash.",
        examples=["EMR-4711"],
    )


def _department_json(
    code: str, score: float, reasons_zh: Sequence[str], reasons_en: Sequence[str]
) -> dict[str, Any]:
    dept = department(code)
    return {
        "code": dept.code,
        "name_zh": dept.name_zh,
        "name_en": dept.name_en,
        "score": round(float(score), 4),
        "reasons_zh": list(reasons_zh),
        "reasons_en": list(reasons_en),
    }


def infer_departments(active: ActiveModel, request: ComplaintRequest | Mapping[str, Any]) -> InferenceResult:
    """Departments for a chief complaint, with reasons and the symptoms that carried each one."""
    if not isinstance(request, ComplaintRequest):
        request = ComplaintRequest.model_validate(request)
    router = load_router(active)
    text = request.complaint
    symptoms, diseases = router.find_in_text(text)
    suggestions = router.recommend(
        [], text=text, age_years=request.age_years, sex=request.sex, top=request.top
    )
    routed = [_department_json(s.department.code, s.score, s.reasons_zh, s.reasons_en) for s in suggestions]
    # The first reason of a department quotes the (up to three) symptoms that carried it: 症状「…」「…」.
    contributing = {
        s.department.code: [
            sym for sym in symptoms if any(r.startswith("症状") and f"「{sym}」" in r for r in s.reasons_zh)
        ]
        for s in suggestions
    }
    level = urgency.assess(
        urgency.UrgencyInput(
            channel="self_service", text=text, symptoms=tuple(symptoms), age_years=request.age_years
        )
    )
    urgent = level.go_to_emergency_desk or (
        level.suggested_level is not None and int(level.suggested_level) <= _EMERGENCY_LEVEL
    )
    if urgent:  # the emergency department decides what comes next, whatever the symptoms say
        why_zh = "；".join(r.text_zh for r in level.reasons[:2]) or "存在危险信号"
        why_en = "; ".join(r.text_en for r in level.reasons[:2]) or "a red flag"
        routed = [
            _department_json(
                _EMERGENCY_CODE, 1.0, [f"需要急诊处理：{why_zh}"], [f"Needs emergency care: {why_en}"]
            ),
            *routed,
        ][: request.top]
    classifier = _classifier(active)
    top = routed[0]
    return InferenceResult(
        label=str(top["code"]),
        score=float(top["score"]),
        output={
            "departments": routed,
            "urgent": urgent,
            "urgency": {
                "suggested_level": int(level.suggested_level) if level.suggested_level is not None else None,
                "go_to_emergency_desk": level.go_to_emergency_desk,
                "red_flags": list(level.red_flags),
                "advice_zh": level.advice_zh,
                "advice_en": level.advice_en,
            },
            "classifier": [
                {"label": label, "probability": round(p, 4)} for label, p in classifier.predict(text, top=3)
            ],
        },
        explanation={
            "symptoms_found": symptoms,
            "diseases_mentioned": diseases,
            "contributing_symptoms": contributing,
            "red_flags": list(level.red_flags),
            "reasons": {d["code"]: d["reasons_en"] for d in routed},
        },
        input_features=complaint_summary(
            text, categorical_values(symptoms, active.manifest.reference, "symptoms")
        ),
        patient_ref=request.patient_ref,
    )


def validate_departments(active: ActiveModel, data_path: Path, progress: Progress) -> ValidationData:
    """The classifier's probabilities on a JSONL of ``{department, title, ask}`` (as evaluate-departments)."""
    classifier = _classifier(active)
    rows = [
        json.loads(line) for line in Path(data_path).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    if not rows:
        raise ValueError(f"{data_path}: no questions")
    index = {label: i for i, label in enumerate(classifier.classes)}
    unknown = sorted({str(r.get("department")) for r in rows} - set(index))
    if unknown:
        raise ValueError(
            f"{data_path}: departments the classifier does not know: {', '.join(unknown[:10])} "
            f"(it knows {', '.join(classifier.classes)})"
        )
    total = len(rows)
    progress(0, total)
    scores = np.empty((total, len(classifier.classes)))
    for i, row in enumerate(rows):
        scores[i] = classifier.probabilities(f"{row.get('title', '')} {row.get('ask', '')}")
        if (i + 1) % 100 == 0 or i + 1 == total:
            progress(i + 1, total)
    y_true = np.array([index[r["department"]] for r in rows], dtype=np.int64)
    top3 = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    majority = index[classifier.majority_class]
    return ValidationData(
        kind="multiclass",
        classes=tuple(classifier.classes),
        y_true=y_true,
        scores=scores,
        extra={
            "top3": float((top3 == y_true[:, None]).any(axis=1).mean()),
            "majority_baseline": float((y_true == majority).mean()),
        },
    )


# ---- symptom inquiry ---------------------------------------------------------------------------------


class InquiryRequest(BaseModel):
    """The symptoms a patient has and has not, named as in the model's vocabulary."""

    model_config = ConfigDict(strict=True, extra="forbid")

    present: list[str] = Field(
        default_factory=list,
        max_length=MAX_SYMPTOMS,
        description="Symptoms the patient has (names from the model's vocabulary, see its card).",
        examples=[["发烧", "咳嗽"]],
    )
    absent: list[str] = Field(
        default_factory=list,
        max_length=MAX_SYMPTOMS,
        description="Symptoms the patient does not have.",
        examples=[["皮疹"]],
    )
    top: int = Field(default=5, ge=1, le=20, description="How many diseases to return.", examples=[5])
    patient_ref: str | None = Field(
        default=None,
        max_length=128,
        description="The caller's own reference for the patient (an EMR number); Tianfu keeps only its hash.",
        examples=["EMR-4711"],
    )

    @model_validator(mode="after")
    def _consistent(self) -> InquiryRequest:
        if not self.present and not self.absent:
            raise ValueError("give at least one symptom, present or absent")
        both = sorted(set(self.present) & set(self.absent))
        if both:
            raise ValueError(f"symptoms both present and absent: {', '.join(both)}")
        return self


def infer_inquiry(
    name: str, active: ActiveModel, request: InquiryRequest | Mapping[str, Any]
) -> InferenceResult:
    """The model's diseases ranked from the stated symptoms, each with the symptoms that moved it."""
    if not isinstance(request, InquiryRequest):
        request = InquiryRequest.model_validate(request)
    model = load_inquiry(active)
    if model.name != name:
        raise ValueError(f"model {active.manifest.name} {active.version} is {model.name!r}, not {name!r}")
    unknown = [s for s in (*request.present, *request.absent) if s not in model.symptom_index]
    if unknown:
        raise ValueError(
            f"symptoms not in the {model.name} vocabulary: {', '.join(unknown[:10])}; "
            f"known are e.g. {', '.join(model.symptoms[:8])} (the model card lists all)"
        )
    explicit: dict[str, Answer] = {s: True for s in request.present}
    explicit.update({s: False for s in request.absent})
    ranked = model.ranked(explicit, {})[: request.top]
    evidence = {
        disease: [
            {"symptom": s, "reported": "present" if v else "absent", "log_odds": round(w, 3)}
            for s, v, w in model.contributions(disease, explicit, {})[:5]
        ]
        for disease, _ in ranked
    }
    return InferenceResult(
        label=ranked[0][0],
        score=ranked[0][1],
        output={
            "diseases": [{"name": d, "probability": round(p, 4)} for d, p in ranked],
            "model_scope": list(model.diseases),
            "next_question": model.next_question(explicit, {}),
        },
        explanation={
            "method": "naive-Bayes log-odds each stated symptom added for the disease against the others",
            "contributions": evidence,
        },
        input_features=inquiry_summary(list(explicit)),
        patient_ref=request.patient_ref,
    )


def _simulate(model: InquiryModel, case: Case) -> tuple[np.ndarray, int, int, int]:
    """The standard protocol of ``tianfu triage evaluate`` (inquiry.simulate), keeping the posterior:
    (posterior, questions asked, implicit symptoms found, implicit symptoms in the case)."""
    answers: dict[str, Answer] = {}
    found = 0
    while (question := model.next_question(case.explicit, answers)) is not None:
        if question in case.implicit:
            found += 1
            answers[question] = case.implicit[question]
        else:
            answers[question] = None  # the simulated patient is "not sure"
    implicit_total = len([s for s in case.implicit if s not in case.explicit])
    return model.posterior(case.explicit, answers), len(answers), found, implicit_total


def validate_inquiry(name: str, active: ActiveModel, data_path: Path, progress: Progress) -> ValidationData:
    """Posteriors after the simulated interview of every case in a benchmark file (as triage evaluate)."""
    model = load_inquiry(active)
    cases = read_cases(Path(data_path))
    if not cases:
        raise ValueError(f"{data_path}: no cases")
    index = {d: i for i, d in enumerate(model.diseases)}
    unknown = sorted({c.disease for c in cases} - set(index))
    if unknown:
        raise ValueError(f"{data_path}: diseases the {name} model does not know: {', '.join(unknown[:10])}")
    total = len(cases)
    progress(0, total)
    scores = np.empty((total, len(model.diseases)))
    turns = found = implicit = 0
    for i, case in enumerate(cases):
        scores[i], asked, hit, of = _simulate(model, case)
        turns, found, implicit = turns + asked, found + hit, implicit + of
        if (i + 1) % 20 == 0 or i + 1 == total:
            progress(i + 1, total)
    scores /= scores.sum(axis=1, keepdims=True)  # exact normalisation after float rounding
    return ValidationData(
        kind="binary" if len(model.diseases) == 2 else "multiclass",
        classes=tuple(model.diseases),
        y_true=np.array([index[c.disease] for c in cases], dtype=np.int64),
        scores=scores,
        extra={
            "turns": turns / total,
            "symptom_recall": found / implicit if implicit else 0.0,
            "max_turns": float(model.max_turns),
        },
    )


# ---- tasks -------------------------------------------------------------------------------------------


def ai_tasks() -> list[AiTask]:
    """Department routing, and one inquiry task per shipped benchmark model."""
    out = [
        AiTask(
            key=DEPARTMENTS_TASK,
            module=MODULE,
            model_name=CLASSIFIER_NAME,
            title="Department routing from a chief complaint",
            summary=(
                "Free-text chief complaint → departments with reasons and the symptoms that carried them; "
                "red flags go to the emergency department. Guidance only, not a diagnosis."
            ),
            data_format=(
                "A JSONL of {department, title, ask} (as `tianfu triage evaluate-departments --jsonl`)."
            ),
            request_model=ComplaintRequest,
            infer=infer_departments,
            validate=validate_departments,
            example={"complaint": "发烧咳嗽三天", "age_years": 34, "sex": "F"},
        )
    ]
    for path in sorted(INQUIRY_DIR.glob("*.json")):
        if not path.with_suffix(".npz").is_file():
            continue
        meta = json.loads(path.read_text(encoding="utf-8"))
        name = str(meta["name"])
        out.append(
            AiTask(
                key=inquiry_task_key(name),
                module=MODULE,
                model_name=registry_name(name),
                title=f"Symptom inquiry ({name})",
                summary=(
                    f"Symptoms present/absent → the most likely of {len(meta['diseases'])} diseases of the "
                    f"{meta.get('metadata', {}).get('description', name)} benchmark, with the symptoms that "
                    "moved each. Not a diagnosis."
                ),
                data_format=(
                    "A benchmark JSON list of {disease, explicit, implicit} cases (as `tianfu triage "
                    "evaluate --goals`)."
                ),
                request_model=InquiryRequest,
                infer=partial(infer_inquiry, name),
                validate=partial(validate_inquiry, name),
                example={"present": list(meta["symptoms"][:2]), "absent": list(meta["symptoms"][2:3])},
            )
        )
    return out
