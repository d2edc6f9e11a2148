"""The shipped symptom-inquiry models, loaded once, and the choice of model for a benchmark file."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

from tianfu.triage.inquiry import Case, InquiryModel

MODELS_DIR = Path(__file__).parent / "models" / "inquiry"


def registry_name(model: str) -> str:
    """The name the AI platform's registry knows an inquiry model by ("triage-dxy")."""
    return f"triage-{model}"


def model_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.npz") if p.with_suffix(".json").exists())


@cache
def load_model(name: str, path: str = "") -> InquiryModel:
    """A shipped model, or with ``path`` (its files without the suffix) a version the AI platform
    imported and activated."""
    if path:
        return InquiryModel.load(Path(path))
    if name not in model_names():
        raise KeyError(f"no inquiry model {name!r}; shipped: {', '.join(model_names())}")
    return InquiryModel.load(MODELS_DIR / name)


def choose_model(cases: Iterable[Case]) -> InquiryModel:
    """The model whose diseases are exactly the file's and whose symptom vocabulary covers most of it.

    MZ-4 comes in two releases with the same four diseases; their symptom vocabularies tell them apart."""
    diseases: set[str] = set()
    symptoms: set[str] = set()
    for case in cases:
        diseases.add(case.disease)
        symptoms.update(case.explicit)
        symptoms.update(case.implicit)
    best: tuple[float, str] | None = None
    for name in model_names():
        model = load_model(name)
        if not diseases <= set(model.diseases):
            continue
        vocabulary = set(model.symptoms)
        # Coverage of the file's symptoms, then tightness (fewest symptoms the file never uses).
        score = len(symptoms & vocabulary) / max(len(symptoms), 1) - 1e-6 * len(vocabulary - symptoms)
        if best is None or score > best[0]:
            best = (score, name)
    if best is None:
        raise LookupError(
            f"no shipped model knows the diseases {sorted(diseases)[:5]}…; "
            f"pass --model (one of {', '.join(model_names())})"
        )
    return load_model(best[1])
