"""The sepsis early-warning model as the AI platform sees it: manifest, inference task and validation.

The shipped version is ``models/sepsis_v1.npz`` + ``models/sepsis_v1.json``; the JSON is the source of
truth for its manifest, and the model card (``training/sepsis/MODEL_CARD.md``) for its limits. The
registry name is ``sepsis`` (the file name without its ``_v<n>`` suffix), stable across versions.

Inference loads the model from the registry's directory for the active version, never from the package.
"""

from __future__ import annotations

import json
import re
import tarfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from tianfu.core.model_registry.manifest import (
    ActiveModel,
    AiTask,
    FeatureReference,
    InferenceResult,
    ModelManifest,
    Progress,
    ValidationData,
)
from tianfu.monitoring.evaluate import UtilityTable
from tianfu.monitoring.sepsis import (
    COLUMNS,
    LABEL,
    LABEL_INDEX,
    VITALS,
    SepsisModel,
    extract_features,
    iter_stays,
    locf,
    parse_rows,
)

MODULE = "monitoring"
TASK = "monitoring-sepsis"
MODEL_NAME = "sepsis"
MODELS_DIR = Path(__file__).resolve().parent / "models"
SHIPPED = ("sepsis_v1",)
MAX_ROWS = 336  # two weeks of hourly rows: the PhysioNet 2019 Challenge's longest stays
TOP_CONTRIBUTIONS = 5
# Summaries recorded for drift checks: the latest (carried-forward) value of these columns.
SUMMARY_COLUMNS = ("HR", "Temp", "Resp", "MAP", "O2Sat", "Age")
DATA_FORMAT = (
    "A directory of PhysioNet 2019 .psv stays, or a .tar/.tar.gz of them, with SepsisLabel on every hour "
    "(as `tianfu monitoring sepsis evaluate` reads)."
)
CLASSES = ("no sepsis label", "sepsis label")

_LICENCE_NOTE = "research and decision support only; not for clinical use"
_LIMITS = (
    "One hospital (PhysioNet 2019 hospital A), ICU only, US adults: expect a large drop elsewhere; "
    "re-validate, recalibrate and re-choose the threshold locally before any use.",
    "Some strong features are care-process signals (lab ordering counts, time since measurement, ICU "
    "length of stay) that encode hospital A's practice and may not transfer.",
    "The label is the Challenge's retrospective Sepsis-3 onset (from 6 h before); it is noisy and stays 1 "
    "after onset, so hourly AUROC also rewards recognising established sepsis.",
    "No consciousness/GCS, medications, fluids or cultures in the data.",
    "Probabilities are calibrated on hospital A's prevalence (2.2 % of hours); elsewhere they are a "
    "ranking, not a risk, until recalibrated. On a ward (monitor data, few labs) it is a different "
    "population and feature mix: shown beside NEWS2, it raises no alarm.",
)

# What each column is, for the request's documentation (PhysioNet/CinC 2019 units).
_COLUMN_DOCS: dict[str, str] = {
    "HR": "heart rate, beats/min",
    "O2Sat": "pulse oximetry, %",
    "Temp": "temperature, °C",
    "SBP": "systolic blood pressure, mm Hg",
    "MAP": "mean arterial pressure, mm Hg",
    "DBP": "diastolic blood pressure, mm Hg",
    "Resp": "respiration rate, breaths/min",
    "EtCO2": "end-tidal carbon dioxide, mm Hg (not used by v1)",
    "BaseExcess": "excess bicarbonate, mmol/L",
    "HCO3": "bicarbonate, mmol/L",
    "FiO2": "fraction of inspired oxygen, 0-1",
    "pH": "arterial pH",
    "PaCO2": "partial pressure of CO2 in arterial blood, mm Hg",
    "SaO2": "arterial oxygen saturation, %",
    "AST": "aspartate transaminase, IU/L",
    "BUN": "blood urea nitrogen, mg/dL",
    "Alkalinephos": "alkaline phosphatase, IU/L",
    "Calcium": "calcium, mg/dL",
    "Chloride": "chloride, mmol/L",
    "Creatinine": "creatinine, mg/dL",
    "Bilirubin_direct": "direct bilirubin, mg/dL",
    "Glucose": "serum glucose, mg/dL",
    "Lactate": "lactic acid, mg/dL",
    "Magnesium": "magnesium, mmol/dL",
    "Phosphate": "phosphate, mg/dL",
    "Potassium": "potassium, mmol/L",
    "Bilirubin_total": "total bilirubin, mg/dL",
    "TroponinI": "troponin I, ng/mL",
    "Hct": "haematocrit, %",
    "Hgb": "haemoglobin, g/dL",
    "PTT": "partial thromboplastin time, seconds",
    "WBC": "leukocyte count, 10³/µL",
    "Fibrinogen": "fibrinogen, mg/dL",
    "Platelets": "platelets, 10³/µL",
    "Age": "age, years",
    "Gender": "0 female, 1 male",
    "Unit1": "1 if in a medical ICU",
    "Unit2": "1 if in a surgical ICU",
    "HospAdmTime": "hours between hospital admission and ICU admission (≤ 0)",
    "ICULOS": "hours since ICU admission",
}
_ROW_EXAMPLE: dict[str, Any] = {
    "HR": 112.0,
    "O2Sat": 93.0,
    "Temp": 38.6,
    "MAP": 64.0,
    "Resp": 26.0,
    "Age": 71.0,
    "ICULOS": 5.0,
}


# ---- manifests ---------------------------------------------------------------------------------------


def shipped_models() -> list[ModelManifest]:
    return [read_model_manifest(MODELS_DIR / f"{stem}.json") for stem in SHIPPED]


def stable_name(json_name: str) -> str:
    """The registry name: the file's model name without its version suffix (``sepsis_v1`` → ``sepsis``)."""
    return re.sub(r"_v\d+$", "", json_name)


def read_model_manifest(json_path: Path) -> ModelManifest:
    """The manifest of a sepsis model version from its JSON (the ``.npz`` named in it sits beside it)."""
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    data = meta["data"]
    cv = meta["metrics"]["cross_validation"]
    metrics = {
        "auc": float(cv["mean"]["model_auroc"]),
        "auc_sd": float(cv["std"]["model_auroc"]),
        "utility": float(cv["mean"]["model_utility"]),
        "alarm_rate": float(cv["mean"]["model_alarm_rate"]),
        "auc_pooled": float(cv["pooled_oof"]["model_auroc"]),
        "news2_auc": float(cv["mean"]["news2_auroc"]),
    }
    weights = json_path.parent / str(meta["model"].get("artefact") or json_path.with_suffix(".npz").name)
    return ModelManifest(
        name=stable_name(str(meta["name"])),
        version=str(meta["version"]),
        module=MODULE,
        task=TASK,
        title="Sepsis early warning: hourly risk of the PhysioNet 2019 sepsis label (ICU)",
        intended_use=str(meta["intended_use"]),
        training_data=(
            f"{data['source']}: {data['n_stays']} ICU stays, {data['n_hours']} hours, "
            f"{data['n_septic_stays']} septic stays; metrics by {meta['training'].get('folds', 5)}-fold "
            "cross-validation split by stay, stratified by sepsis"
        ),
        data_licence=str(meta.get("data_licence") or f"{data['licence']}; {_LICENCE_NOTE}"),
        metrics=metrics,
        trained_on=str(meta["training_date"]),
        files=(weights, json_path),
        limits=tuple(meta.get("limits") or _LIMITS),
        reference=tuple(FeatureReference.from_json(r) for r in meta.get("reference", ())),
        # The 182 feature names are long but are the model's contract: keep them, drop the per-fold rows.
        card=_card(meta),
    )


def _card(meta: Mapping[str, Any]) -> dict[str, Any]:
    card = {k: v for k, v in meta.items() if k != "reference"}
    metrics = dict(card.get("metrics", {}))
    if isinstance(metrics.get("cross_validation"), Mapping):
        metrics["cross_validation"] = {k: v for k, v in metrics["cross_validation"].items() if k != "folds"}
        card["metrics"] = metrics
    return card


# ---- loading from the registry's directory -----------------------------------------------------------

_loaded: dict[tuple[str, str, str], SepsisModel] = {}
_load_lock = threading.Lock()


def load_model(active: ActiveModel) -> SepsisModel:
    """The active version's model from its own directory, cached by (directory, name, version)."""
    key = (str(active.directory.resolve()), active.manifest.name, active.version)
    with _load_lock:
        model = _loaded.get(key)
        if model is None:
            files = active.manifest.files
            model = _loaded[key] = SepsisModel.from_files(
                active.path(files[0].name), active.path(files[-1].name)
            )
        return model


# ---- input summaries for drift checks ----------------------------------------------------------------

_SUMMARY_INDEX = [COLUMNS.index(c) for c in SUMMARY_COLUMNS]


def latest_values(stay: np.ndarray) -> dict[str, float | None]:
    """The latest measured value of each summary column (carried forward; None if never measured)."""
    if stay.shape[0] == 0:
        return {c: None for c in SUMMARY_COLUMNS}
    last = locf(stay[:, _SUMMARY_INDEX])[-1]
    return {
        c: None if np.isnan(v) else round(float(v), 4) for c, v in zip(SUMMARY_COLUMNS, last, strict=True)
    }


# ---- requests ----------------------------------------------------------------------------------------

_ROW_FIELDS: dict[str, Any] = {
    name: (float | None, Field(default=None, allow_inf_nan=False, description=_COLUMN_DOCS.get(name, name)))
    for name in COLUMNS
    if name != LABEL
}
HourlyRow = create_model(  # one field per PhysioNet 2019 column, documented
    "HourlyRow",
    __config__=ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [_ROW_EXAMPLE]}),
    __doc__="One hour of a stay: any PhysioNet 2019 columns; a missing or null value was not measured.",
    **_ROW_FIELDS,
)


class SepsisRequest(BaseModel):
    """A stay so far, one row per hour in time order; the risk is that of the last hour."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="after")
    def _some_vital_sign(self) -> SepsisRequest:
        # Without a single vital sign the model would answer from age and admission time alone.
        if not any(getattr(row, name, None) is not None for row in self.rows for name in VITALS):
            raise ValueError(f"no vital sign in any row: send at least one of {', '.join(VITALS)}")
        return self

    rows: list[HourlyRow] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description=(
            f"Hourly rows from the start of the stay (at most {MAX_ROWS}); the features of the last hour use "
            "all the rows before it (trends over 6 h, values carried forward)."
        ),
        examples=[[_ROW_EXAMPLE]],
    )
    patient_ref: str | None = Field(
        default=None,
        max_length=128,
        description="The caller's own reference for the patient (an EMR number); Tianfu keeps only its hash.",
        examples=["EMR-4711"],
    )


# ---- inference ---------------------------------------------------------------------------------------


def infer(active: ActiveModel, request: SepsisRequest | Mapping[str, Any]) -> InferenceResult:
    """Risk at the last hour, the hourly risk so far, and the signals that moved the last hour's risk."""
    if not isinstance(request, SepsisRequest):
        request = SepsisRequest.model_validate(request)
    model = load_model(active)
    stay = parse_rows([row.model_dump(exclude_none=True) for row in request.rows])
    features = extract_features(stay)
    hourly = model.predict_proba(features)
    probability = float(hourly[-1])
    flagged = model.alarm(probability)
    explained = model.explain(features[-1], top_k=TOP_CONTRIBUTIONS)
    return InferenceResult(
        label="above threshold" if flagged else "below threshold",
        score=probability,
        output={
            "probability": probability,
            "threshold": model.operating_threshold,
            "flagged": flagged,
            "hours": int(stay.shape[0]),
            "hourly_probabilities": [round(float(p), 5) for p in hourly],
        },
        explanation={
            "method": "Saabas path attribution of the tree ensemble in log-odds, summed per measured signal",
            "bias": round(explained.bias, 5),
            "log_odds": round(explained.log_odds, 5),
            "top": [
                {
                    "signal": c.name,
                    "value": None if np.isnan(c.value) else round(c.value, 4),
                    "contribution": round(c.contribution, 5),
                }
                for c in explained.top
            ],
        },
        input_features=latest_values(stay),
        patient_ref=request.patient_ref,
    )


# ---- validation --------------------------------------------------------------------------------------


def _count_stays(path: Path) -> int:
    """How many stays :func:`iter_stays` will yield (a tar is read through once more, headers only)."""
    if path.is_dir():
        return len(list(path.glob("*.psv")))
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{path} is neither a directory nor a tar archive of .psv files")
    with tarfile.open(path, mode="r|*") as archive:
        return sum(
            1
            for member in archive
            if member.isfile()
            and member.name.endswith(".psv")
            and not member.name.rsplit("/", 1)[-1].startswith(".")
        )


def validate(active: ActiveModel, data_path: Path, progress: Progress) -> ValidationData:
    """Hourly probabilities over every stay under ``data_path`` against SepsisLabel (as sepsis evaluate)."""
    model = load_model(active)
    path = Path(data_path)
    total = _count_stays(path)
    if total == 0:
        raise ValueError(f"no .psv stays found in {path}")
    progress(0, total)
    labels: list[np.ndarray] = []
    probabilities: list[np.ndarray] = []
    for done, (name, stay) in enumerate(iter_stays(path), start=1):
        label = stay[:, LABEL_INDEX]
        if np.isnan(label).any():
            raise ValueError(f"stay {name} has hours without {LABEL}")
        labels.append(label)
        probabilities.append(model.predict_proba(extract_features(stay)))
        if done % 50 == 0 or done == total:
            progress(done, total)
    y_true = np.concatenate(labels).astype(np.int64)
    p = np.concatenate(probabilities)
    stays = np.repeat(np.arange(len(labels), dtype=np.int64), [len(lab) for lab in labels])
    table = UtilityTable.from_labels(labels)
    septic = sum(bool(np.any(lab == 1)) for lab in labels)
    extra = {"n_stays": float(len(labels)), "n_septic_stays": float(septic)}
    if table.best != table.inaction:  # the utility is undefined without a septic stay
        extra["utility"] = table.score(p >= model.operating_threshold)
    return ValidationData(
        kind="binary",
        classes=CLASSES,
        y_true=y_true,
        scores=np.stack((1.0 - p, p), axis=1),
        positive=1,
        threshold=model.operating_threshold,
        groups=stays,  # an ICU stay's hours are correlated: the bootstrap draws whole stays
        extra=extra,
    )


# ---- tasks -------------------------------------------------------------------------------------------


def ai_tasks() -> list[AiTask]:
    return [
        AiTask(
            key=TASK,
            module=MODULE,
            model_name=MODEL_NAME,
            title="Sepsis early warning",
            summary=(
                "Hourly rows of vital signs and labs → the risk of the sepsis label at the last hour, "
                "flagged above the operating threshold, with the signals that moved it. Research use."
            ),
            data_format=DATA_FORMAT,
            request_model=SepsisRequest,
            infer=infer,
            validate=validate,
            example={"rows": [_ROW_EXAMPLE, {**_ROW_EXAMPLE, "HR": 118.0, "ICULOS": 6.0}]},
        )
    ]
