"""Adaptive symptom inquiry: a disease model, the next question, and when to stop.

The model is a naive-Bayes model of how patients with each disease report symptoms, learned by counting
from a benchmark's cases. It describes both stages of an inquiry:

* what a patient says first (``explicit``): per symptom, not mentioned / yes / no / not sure;
* what the patient answers when asked about a symptom not mentioned first: yes / no / not sure.

Every symptom, mentioned or not, carries evidence: a child with diarrhoea whose parent does not mention
fever is, a little, less likely to have a febrile illness. The next question is the one with the largest
expected reduction of entropy over diseases (information gain); the inquiry stops when the most likely
disease reaches the model's confidence threshold (tuned by cross-validation to trade accuracy for fewer
questions), when no question is worth asking, or at the turn cap.

Pure code on numpy arrays; a model file is an ``.npz`` of arrays beside a ``.json`` of its metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Explicit (first report) states, and answer states.
NOT_MENTIONED, REPORTED_YES, REPORTED_NO, REPORTED_UNSURE = 0, 1, 2, 3
ANSWER_YES, ANSWER_NO, ANSWER_UNSURE = 0, 1, 2

Answer = bool | None  # True yes, False no, None not sure


def _explicit_state(value: Answer) -> int:
    return REPORTED_YES if value is True else REPORTED_NO if value is False else REPORTED_UNSURE


def _answer_state(value: Answer) -> int:
    return ANSWER_YES if value is True else ANSWER_NO if value is False else ANSWER_UNSURE


@dataclass(frozen=True)
class Case:
    """One benchmark case: the disease, the first report and what questions would reveal."""

    disease: str
    explicit: Mapping[str, Answer]
    implicit: Mapping[str, Answer]

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Case:
        return cls(disease=raw["disease"], explicit=dict(raw["explicit"]), implicit=dict(raw["implicit"]))


def read_cases(path: Path) -> list[Case]:
    """Cases in the benchmark schema: a JSON list of ``{disease, explicit, implicit, ...}``."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of cases")
    return [Case.from_json(item) for item in raw]


@dataclass
class InquiryModel:
    name: str
    version: str
    language: str
    diseases: list[str]
    symptoms: list[str]
    log_prior: np.ndarray  # (D,)
    log_explicit: np.ndarray  # (D, S, 4): log P(first-report state | disease)
    log_answer: np.ndarray  # (D, S, 3): log P(answer | disease, symptom not mentioned first)
    stop_confidence: float = 0.9
    # Stop when no single question is expected to raise the chance of a correct top diagnosis by this much.
    min_accuracy_gain: float = 0.0
    max_turns: int = 20
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.symptom_index = {name: i for i, name in enumerate(self.symptoms)}
        self.answer_probs = np.exp(self.log_answer)
        self._answer_entropy = -(self.answer_probs * self.log_answer).sum(
            axis=2
        )  # (D, S): H(answer | disease)
        # Evidence of an empty first report, so a posterior only adds what differs from it.
        self._base = self.log_prior + self.log_explicit[:, :, NOT_MENTIONED].sum(axis=1)

    # ---- learning -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        cases: Sequence[Case],
        *,
        name: str,
        version: str = "1",
        language: str = "zh",
        alpha: float = 0.5,
        symptoms: Sequence[str] | None = None,
        diseases: Sequence[str] | None = None,
    ) -> InquiryModel:
        disease_list = sorted(diseases or {c.disease for c in cases})
        symptom_list = sorted(symptoms or {s for c in cases for s in (*c.explicit, *c.implicit)})
        d_index = {d: i for i, d in enumerate(disease_list)}
        s_index = {s: i for i, s in enumerate(symptom_list)}
        n_d, n_s = len(disease_list), len(symptom_list)
        explicit_counts = np.zeros((n_d, n_s, 4))
        answer_counts = np.zeros((n_d, n_s, 3))
        disease_counts = np.zeros(n_d)
        for case in cases:
            d = d_index[case.disease]
            disease_counts[d] += 1
            states = np.full(n_s, NOT_MENTIONED)
            for s, value in case.explicit.items():
                if s in s_index:
                    states[s_index[s]] = _explicit_state(value)
            explicit_counts[d, np.arange(n_s), states] += 1
            answers = np.full(n_s, ANSWER_UNSURE)
            for s, value in case.implicit.items():
                if s in s_index:
                    answers[s_index[s]] = _answer_state(value)
            unasked = states == NOT_MENTIONED
            answer_counts[d, np.arange(n_s)[unasked], answers[unasked]] += 1
        log_prior = np.log((disease_counts + 1) / (disease_counts.sum() + n_d))
        log_explicit = np.log(
            (explicit_counts + alpha) / (explicit_counts.sum(axis=2, keepdims=True) + 4 * alpha)
        )
        log_answer = np.log((answer_counts + alpha) / (answer_counts.sum(axis=2, keepdims=True) + 3 * alpha))
        return cls(
            name=name,
            version=version,
            language=language,
            diseases=disease_list,
            symptoms=symptom_list,
            log_prior=log_prior,
            log_explicit=log_explicit,
            log_answer=log_answer,
            metadata={"alpha": alpha, "cases": len(cases)},
        )

    # ---- inference ------------------------------------------------------------------------------
    def log_posterior(self, explicit: Mapping[str, Answer], answers: Mapping[str, Answer]) -> np.ndarray:
        """Normalised log P(disease | first report, answers); unknown symptom names are ignored."""
        logp = self._base.copy()
        for s, value in explicit.items():
            i = self.symptom_index.get(s)
            if i is not None:
                logp += (
                    self.log_explicit[:, i, _explicit_state(value)] - self.log_explicit[:, i, NOT_MENTIONED]
                )
        for s, value in answers.items():
            i = self.symptom_index.get(s)
            if i is not None and s not in explicit:
                logp += self.log_answer[:, i, _answer_state(value)]
        normalised: np.ndarray = logp - _logsumexp(logp)
        return normalised

    def posterior(self, explicit: Mapping[str, Answer], answers: Mapping[str, Answer]) -> np.ndarray:
        probabilities: np.ndarray = np.exp(self.log_posterior(explicit, answers))
        return probabilities

    def information_gains(self, posterior: np.ndarray, excluded: Iterable[str]) -> np.ndarray:
        """Expected entropy reduction over diseases of asking each symptom (-inf where excluded).

        Computed as the mutual information of disease and answer, H(answer) - H(answer | disease),
        which needs one matrix product instead of a posterior per possible answer."""
        p_answer = np.einsum("d,dsa->sa", posterior, self.answer_probs)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy_answer = -np.where(p_answer > 0, p_answer * np.log(p_answer), 0.0).sum(axis=1)
        gains: np.ndarray = entropy_answer - posterior @ self._answer_entropy
        for s in excluded:
            i = self.symptom_index.get(s)
            if i is not None:
                gains[i] = -np.inf
        return gains

    def accuracy_gains(self, posterior: np.ndarray, excluded: Iterable[str]) -> np.ndarray:
        """Expected rise of P(top diagnosis is right) from asking each symptom (-inf where excluded)."""
        joint = posterior[:, None, None] * self.answer_probs  # (D, S, 3)
        gains: np.ndarray = joint.max(axis=0).sum(axis=1) - float(posterior.max())
        for s in excluded:
            i = self.symptom_index.get(s)
            if i is not None:
                gains[i] = -np.inf
        return gains

    def next_question(
        self,
        explicit: Mapping[str, Answer],
        answers: Mapping[str, Answer],
        *,
        stop_confidence: float | None = None,
        max_turns: int | None = None,
        min_accuracy_gain: float | None = None,
        min_gain: float = 1e-4,
    ) -> str | None:
        """The symptom to ask about next, or None when the inquiry should stop."""
        turns = len(answers)
        if turns >= (self.max_turns if max_turns is None else max_turns):
            return None
        posterior = self.posterior(explicit, answers)
        if posterior.max() >= (self.stop_confidence if stop_confidence is None else stop_confidence):
            return None
        asked = [*explicit, *answers]
        floor = self.min_accuracy_gain if min_accuracy_gain is None else min_accuracy_gain
        if floor > 0 and float(self.accuracy_gains(posterior, asked).max()) < floor:
            return None
        gains = self.information_gains(posterior, asked)
        best = int(np.argmax(gains))
        if not np.isfinite(gains[best]) or gains[best] < min_gain:
            return None
        return self.symptoms[best]

    def ranked(
        self, explicit: Mapping[str, Answer], answers: Mapping[str, Answer]
    ) -> list[tuple[str, float]]:
        """The differential: every disease with its probability, most likely first."""
        posterior = self.posterior(explicit, answers)
        order = np.argsort(-posterior, kind="stable")
        return [(self.diseases[i], float(posterior[i])) for i in order]

    def contributions(
        self, disease: str, explicit: Mapping[str, Answer], answers: Mapping[str, Answer]
    ) -> list[tuple[str, Answer, float]]:
        """How much each reported symptom moved the odds of ``disease`` against the others (log-odds)."""
        d = self.diseases.index(disease)
        posterior = self.posterior(explicit, answers)
        others = np.ones(len(self.diseases), dtype=bool)
        others[d] = False
        weights = posterior[others] / max(float(posterior[others].sum()), 1e-12)
        result: list[tuple[str, Answer, float]] = []
        for source, is_explicit in ((explicit, True), (answers, False)):
            for s, value in source.items():
                i = self.symptom_index.get(s)
                if i is None or (not is_explicit and s in explicit):
                    continue
                if is_explicit:
                    column = (
                        self.log_explicit[:, i, _explicit_state(value)]
                        - self.log_explicit[:, i, NOT_MENTIONED]
                    )
                else:
                    column = self.log_answer[:, i, _answer_state(value)]
                result.append((s, value, float(column[d] - np.dot(weights, column[others]))))
        result.sort(key=lambda item: -abs(item[2]))
        return result

    # ---- files ----------------------------------------------------------------------------------
    def save(self, stem: Path) -> None:
        stem = Path(stem)
        np.savez_compressed(
            stem.with_suffix(".npz"),
            log_prior=self.log_prior.astype(np.float32),
            log_explicit=self.log_explicit.astype(np.float32),
            log_answer=self.log_answer.astype(np.float32),
        )
        meta = {
            "name": self.name,
            "version": self.version,
            "language": self.language,
            "diseases": self.diseases,
            "symptoms": self.symptoms,
            "stop_confidence": self.stop_confidence,
            "min_accuracy_gain": self.min_accuracy_gain,
            "max_turns": self.max_turns,
            "metadata": self.metadata,
        }
        stem.with_suffix(".json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )

    @classmethod
    def load(cls, stem: Path) -> InquiryModel:
        stem = Path(stem)
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        with np.load(stem.with_suffix(".npz")) as arrays:
            log_prior = arrays["log_prior"].astype(np.float64)
            log_explicit = arrays["log_explicit"].astype(np.float64)
            log_answer = arrays["log_answer"].astype(np.float64)
        n_d, n_s = len(meta["diseases"]), len(meta["symptoms"])
        if (
            log_explicit.shape != (n_d, n_s, 4)
            or log_answer.shape != (n_d, n_s, 3)
            or log_prior.shape != (n_d,)
        ):
            raise ValueError(f"{stem}: arrays do not match the model's {n_d} diseases and {n_s} symptoms")
        return cls(
            name=meta["name"],
            version=meta["version"],
            language=meta["language"],
            diseases=meta["diseases"],
            symptoms=meta["symptoms"],
            log_prior=log_prior,
            log_explicit=log_explicit,
            log_answer=log_answer,
            stop_confidence=float(meta["stop_confidence"]),
            min_accuracy_gain=float(meta.get("min_accuracy_gain", 0.0)),
            max_turns=int(meta["max_turns"]),
            metadata=meta.get("metadata", {}),
        )


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + float(np.log(np.exp(values - top).sum()))


@dataclass(frozen=True)
class SimulatedDialogue:
    predicted: str
    correct: bool
    turns: int
    implicit_found: int
    implicit_total: int


def simulate(
    model: InquiryModel,
    case: Case,
    *,
    max_turns: int | None = None,
    stop_confidence: float | None = None,
    min_accuracy_gain: float | None = None,
) -> SimulatedDialogue:
    """The standard protocol: the agent starts from ``explicit``; the simulated patient answers from
    ``implicit`` and "not sure" for anything else."""
    answers: dict[str, Answer] = {}
    found = 0
    while True:
        question = model.next_question(
            case.explicit,
            answers,
            stop_confidence=stop_confidence,
            max_turns=max_turns,
            min_accuracy_gain=min_accuracy_gain,
        )
        if question is None:
            break
        if question in case.implicit:
            found += 1
            answers[question] = case.implicit[question]
        else:
            answers[question] = None
    predicted = model.ranked(case.explicit, answers)[0][0]
    return SimulatedDialogue(
        predicted=predicted,
        correct=predicted == case.disease,
        turns=len(answers),
        implicit_found=found,
        implicit_total=len([s for s in case.implicit if s not in case.explicit]),
    )


def evaluate(
    model: InquiryModel,
    cases: Sequence[Case],
    *,
    max_turns: int | None = None,
    stop_confidence: float | None = None,
    min_accuracy_gain: float | None = None,
) -> dict[str, Any]:
    """Accuracy, implicit-symptom recall and turns over ``cases`` under the standard protocol."""
    dialogues = [
        simulate(
            model,
            c,
            max_turns=max_turns,
            stop_confidence=stop_confidence,
            min_accuracy_gain=min_accuracy_gain,
        )
        for c in cases
    ]
    n = len(dialogues)
    implicit_total = sum(d.implicit_total for d in dialogues)
    return {
        "n": n,
        "accuracy": round(sum(d.correct for d in dialogues) / n, 4) if n else 0.0,
        "symptom_recall": round(sum(d.implicit_found for d in dialogues) / implicit_total, 4)
        if implicit_total
        else 0.0,
        "avg_turns": round(sum(d.turns for d in dialogues) / n, 2) if n else 0.0,
        "max_turns": model.max_turns if max_turns is None else max_turns,
    }
