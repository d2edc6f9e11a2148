"""What a module tells the AI platform about its models: manifests, inference tasks, validation data.

A module describes each model version it can run with a :class:`ModelManifest` built from the
model's own metadata file in the repo (the one source of truth its model card is rendered from).
It offers each model to other systems and to local validation through an :class:`AiTask`. The AI
platform (``tianfu.ai``) only ever talks to modules through these types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel


def sha256_of(paths: Sequence[Path]) -> str:
    """One hash over a model's files, in the given order (weights first, metadata after)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FeatureReference:
    """The training-data distribution of one input summary, for drift checks.

    ``edges`` are histogram bin edges (len k+1) and ``fractions`` the training share per bin (len k);
    values outside the edges count in the first or last bin. For a categorical input, ``categories``
    and ``fractions`` give the share of each category instead.
    """

    name: str
    fractions: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FeatureReference:
        """One entry of a model metadata file's ``reference`` list (training/reference_stats.py)."""
        return cls(
            name=str(raw["name"]),
            fractions=tuple(float(f) for f in raw["fractions"]),
            edges=tuple(float(e) for e in raw.get("edges", ())),
            categories=tuple(str(c) for c in raw.get("categories", ())),
        )


@dataclass(frozen=True)
class ModelManifest:
    name: str  # stable across versions, e.g. "tianfu-imaging-pneumonia"
    version: str
    module: str  # the module that runs it
    task: str  # the AiTask key that serves it, e.g. "imaging-pneumonia"
    title: str
    intended_use: str
    training_data: str  # source, size, how it was split
    data_licence: str
    metrics: Mapping[str, float]  # measured at training time, on validation data
    trained_on: str  # ISO date
    files: tuple[Path, ...]  # weights and metadata; hashed in this order
    limits: tuple[str, ...] = ()
    reference: tuple[FeatureReference, ...] = ()  # training distribution of the recorded input_features
    card: Mapping[str, Any] = field(default_factory=dict)  # the whole metadata file, rendered as the card
    # False for a model too weak to run until a hospital has validated it locally and switched it on.
    active_on_install: bool = True

    @property
    def directory(self) -> Path:
        return self.files[0].parent

    def sha256(self) -> str:
        return sha256_of(self.files)


@dataclass(frozen=True)
class ActiveModel:
    """A registered model version as a module loads it: its manifest and where its files are."""

    manifest: ModelManifest
    directory: Path

    @property
    def version(self) -> str:
        return self.manifest.version

    def path(self, filename: str) -> Path:
        return self.directory / filename


TaskKind = Literal["binary", "multiclass"]


@dataclass(frozen=True)
class ValidationData:
    """A model's predictions on a labelled dataset, ready for metrics.

    ``y_true`` holds class indices (N,). ``scores`` holds class probabilities (N, K) for K classes
    (binary tasks included: K = 2). ``positive`` is the index of the class a binary task screens
    for. ``threshold`` is the model's operating point on the positive probability, if it has one.
    """

    kind: TaskKind
    classes: tuple[str, ...]
    y_true: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    positive: int = 1
    threshold: float | None = None
    extra: Mapping[str, float] = field(default_factory=dict)  # task-specific numbers (turns per interview)
    # Cases that belong together (the hours of one ICU stay): the bootstrap resamples whole groups.
    groups: npt.NDArray[np.int64] | None = None


Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class InferenceResult:
    """What an inference call returns: always with its explanation and the model's stated limits."""

    label: str
    score: float | None
    output: dict[str, Any]
    explanation: dict[str, Any]  # heatmap, contributing symptoms or signals
    input_features: dict[str, Any]  # summaries recorded for drift checks
    patient_ref: str | None = None


@dataclass(frozen=True)
class AiTask:
    """One inference task a module offers: the API body it takes and how to validate it locally."""

    key: str  # URL segment, e.g. "imaging-pneumonia"
    module: str
    model_name: str
    title: str  # English msgid
    summary: str
    data_format: str  # what `tianfu ai validate --data` takes for this task
    request_model: type[BaseModel]
    infer: Callable[[ActiveModel, Any], InferenceResult]
    validate: Callable[[ActiveModel, Path, Progress], ValidationData]
    example: Mapping[str, Any] = field(default_factory=dict)  # a request body for the API docs


def manifest_to_json(manifest: ModelManifest) -> dict[str, Any]:
    """The manifest as stored in the registry table (paths relative to the model's directory)."""
    return {
        "name": manifest.name,
        "version": manifest.version,
        "module": manifest.module,
        "task": manifest.task,
        "title": manifest.title,
        "intended_use": manifest.intended_use,
        "training_data": manifest.training_data,
        "data_licence": manifest.data_licence,
        "metrics": dict(manifest.metrics),
        "trained_on": manifest.trained_on,
        "files": [p.name for p in manifest.files],
        "limits": list(manifest.limits),
        "reference": [
            {
                "name": r.name,
                "fractions": list(r.fractions),
                "edges": list(r.edges),
                "categories": list(r.categories),
            }
            for r in manifest.reference
        ],
        "card": dict(manifest.card),
        "active_on_install": manifest.active_on_install,
    }


def manifest_from_json(data: Mapping[str, Any], directory: Path) -> ModelManifest:
    return ModelManifest(
        name=data["name"],
        version=data["version"],
        module=data["module"],
        task=data["task"],
        title=data["title"],
        intended_use=data["intended_use"],
        training_data=data["training_data"],
        data_licence=data["data_licence"],
        metrics={k: float(v) for k, v in data["metrics"].items()},
        trained_on=data["trained_on"],
        files=tuple(directory / name for name in data["files"]),
        limits=tuple(data.get("limits", ())),
        reference=tuple(FeatureReference.from_json(r) for r in data.get("reference", ())),
        card=data.get("card", {}),
        active_on_install=bool(data.get("active_on_install", True)),
    )
