"""The imaging models as the AI platform sees them: manifests, inference tasks and local validation.

Each shipped task model (``models/<task>.onnx`` + ``models/<task>.json``) is one model version; the
JSON is the source of truth for its manifest. What the JSON does not hold (data licence, limits) comes
from the model cards in ``training/imaging`` and can be overridden by ``data_licence`` / ``limits`` keys
in an imported version's JSON.

Inference loads the model from the registry's directory for the active version (an imported version
lives outside the package), never from :data:`inference.MODELS_DIR`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tianfu.core.model_registry.manifest import (
    ActiveModel,
    AiTask,
    FeatureReference,
    InferenceResult,
    ModelManifest,
    Progress,
    ValidationData,
)
from tianfu.imaging import evaluate
from tianfu.imaging.inference import BATCH, MODELS_DIR, ImagingModel, load_file, resize_area, tasks

MODULE = "imaging"
MAX_IMAGE_BYTES = 32 * 1024 * 1024  # a large CR/DX file; anything bigger is not a single 2-D image
MAX_BASE64_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4
MAX_IMAGE_PIXELS = 50_000_000  # checked from the header, before decoding (decompression bombs)
HEATMAP_MAX_SIDE = 512  # the returned heatmap PNG; the peak is located at full resolution
DATA_FORMAT = (
    "A MedMNIST-layout .npz: test_images/test_labels (N, H, W[, 3]) and (N, 1), or val_* when no test_* "
    "(as `tianfu imaging evaluate --npz` reads)."
)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

_MEDMNIST_LICENCE = (
    "CC BY 4.0 (MedMNIST v2, Yang et al., Sci Data 2023; code Apache-2.0); the data are not intended "
    "for clinical use: not for clinical use"
)
_COMMON_LIMITS = (
    "Inputs are expected as display values (already windowed, MONOCHROME1 inverted), like the training "
    "images.",
    "Small evaluation sets and no external, prospective or Chinese-hospital validation: local validation "
    "and clinical governance are required before any use.",
)


@dataclass(frozen=True)
class _TaskNotes:
    """What the model cards say about a task that its JSON does not record."""

    source: str
    licence: str
    limits: tuple[str, ...]


_NOTES: dict[str, _TaskNotes] = {
    "pneumonia": _TaskNotes(
        source="PneumoniaMNIST (MedMNIST v2; paediatric chest radiographs of Kermany et al., Cell 2018)",
        licence=_MEDMNIST_LICENCE,
        limits=(
            "28×28 paediatric chest radiographs: any image is area-averaged to 28×28, so only large-scale "
            "opacity survives; small nodules, lines and pneumothorax edges do not.",
            "Children only (the source cohort is paediatric): do not apply to adult films.",
            "Pneumonia vs normal only: any other abnormality is outside the label set and may score "
            "either way.",
            *_COMMON_LIMITS,
        ),
    ),
    "breast": _TaskNotes(
        source="BreastMNIST (MedMNIST v2; breast ultrasound of Al-Dhabyani et al., Data in Brief 2020)",
        licence=_MEDMNIST_LICENCE,
        limits=(
            "28×28 ultrasound frames: only large-scale shape and brightness survive the resize; "
            "calcifications and small lesions do not.",
            "Tiny data (546 training images, 22 malignant tune cases): the real sensitivity at the "
            "operating point may differ by ±0.1 or more.",
            "Single source; no BI-RADS, lesion size or Doppler.",
            *_COMMON_LIMITS,
        ),
    ),
    "retina": _TaskNotes(
        source="RetinaMNIST (MedMNIST v2; DeepDRiD fundus photographs, Liu et al., Patterns 2022)",
        licence=_MEDMNIST_LICENCE,
        limits=(
            "28×28 fundus photographs: the lesions that define the grades (microaneurysms, small "
            "haemorrhages, exudates) are sub-pixel; grade 1 is hardly separable from grade 0.",
            "The screening decision is referable DR (grade ≥ 2); the 5-class label is for display, not "
            "for grading.",
            *_COMMON_LIMITS,
        ),
    ),
    "cxr-abnormal": _TaskNotes(
        source="NIH ChestX-ray14 (Wang et al., CVPR 2017), a 1,000-image 64×64 subset of 264 patients",
        licence=(
            "NIH Clinical Center terms: free use with citation of Wang et al. 2017 and acknowledgement "
            "of the NIH Clinical Center; research model, not for clinical use"
        ),
        limits=(
            "64×64 adult frontal chest radiographs: only large-scale opacity survives the resize.",
            "Weak: cross-validated AUC about 0.6, far too low for triage on its own; a baseline to beat.",
            "At its sensitivity-first operating point the specificity is very low: most studies are flagged.",
            "Noisy text-mined NIH labels; several images per patient.",
            *_COMMON_LIMITS,
        ),
    ),
}
SHIPPED_SWITCHED_OFF = frozenset({"cxr-abnormal"})
_UNKNOWN_TASK_NOTES = _TaskNotes(
    source="see the model card",
    licence="see the model card; not for clinical use",
    limits=_COMMON_LIMITS,
)


def task_key(task: str) -> str:
    """The AiTask key (URL segment) of an imaging task, e.g. ``imaging-pneumonia``."""
    return f"imaging-{task}"


# ---- manifests ---------------------------------------------------------------------------------------


def shipped_models() -> list[ModelManifest]:
    """One manifest per shipped task model, from its JSON in ``tianfu/imaging/models``."""
    return [read_model_manifest(MODELS_DIR / f"{task}.json") for task in tasks(MODELS_DIR)]


def read_model_manifest(json_path: Path) -> ModelManifest:
    """The manifest of a model version from its metadata JSON (the ONNX file named in it sits beside it)."""
    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    task = str(meta["task"])
    notes = _NOTES.get(task, _UNKNOWN_TASK_NOTES)
    metrics, measured_on = _metrics(meta)
    return ModelManifest(
        name=str(meta["model_name"]),
        version=str(meta["version"]),
        module=MODULE,
        task=task_key(task),
        title=str(meta["title"]),
        intended_use=str(meta["intended_use"]),
        training_data=f"{notes.source}: {meta['training']['split']}; metrics {measured_on}",
        data_licence=str(meta.get("data_licence") or notes.licence),
        metrics=metrics,
        trained_on=str(meta["created"]),
        files=(json_path.parent / meta["onnx"]["file"], json_path),
        limits=tuple(meta.get("limits") or notes.limits),
        reference=_references(meta.get("reference", ())),
        card=_card(meta),
        # Too weak to reorder anyone's worklist or answer the API until a hospital validates it.
        active_on_install=task not in SHIPPED_SWITCHED_OFF,
    )


def _metrics(meta: Mapping[str, Any]) -> tuple[dict[str, float], str]:
    """Training-time metrics on held-out data: the official val split, else cross-validation (NIH)."""
    recorded = meta["metrics"]
    if "val" in recorded:
        val = recorded["val"]
        keys = ("auc", "accuracy", "sensitivity", "specificity", "auc_positive", "quadratic_kappa", "n")
        return {k: float(val[k]) for k in keys if k in val}, f"on the official val split ({val['n']} images)"
    cv = recorded["cv"]
    metrics = {
        k: float(cv[f"{k}_pooled"])
        for k in ("auc", "accuracy", "sensitivity", "specificity")
        if f"{k}_pooled" in cv
    }
    if "auc_mean" in cv:
        metrics["auc_mean"] = float(cv["auc_mean"])
    return metrics, f"pooled over held-out folds ({cv.get('protocol', 'cross-validation')})"


def _card(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata without bulky arrays (the head weights) and without the reference (on the manifest)."""
    card = {k: v for k, v in meta.items() if k != "reference"}
    if isinstance(card.get("head"), Mapping):
        card["head"] = {k: v for k, v in card["head"].items() if k != "weight"}
    return card


def _references(raw: Any) -> tuple[FeatureReference, ...]:
    return tuple(FeatureReference.from_json(r) for r in raw)


# ---- loading from the registry's directory -----------------------------------------------------------


def load_model(active: ActiveModel) -> ImagingModel:
    """The active version's model, read from the metadata file the registry holds (cached per file)."""
    return load_file(active.path(active.manifest.files[-1].name))


def _model_for(active: ActiveModel, task: str) -> ImagingModel:
    model = load_model(active)
    if model.task != task:
        raise ValueError(
            f"model {active.manifest.name} {active.version} is for task {model.task!r}, not {task!r}"
        )
    return model


# ---- input summaries for drift checks ----------------------------------------------------------------


def input_summary(
    image: npt.ArrayLike, model: ImagingModel, value_range: tuple[float, float] | None = None
) -> dict[str, float]:
    """Mean and standard deviation of the image as the model sees it, before normalisation.

    Computed at the model's input size and channels in [0, 1] display scale, so an image of any size
    compares with the training images (whose references ``training/reference_stats.py`` computes with
    this same function).
    """
    x = model.preprocess([np.asarray(image)], value_range)[0].astype(np.float64)
    mean = np.asarray(model.meta["input"]["mean"], dtype=np.float64).reshape(-1, 1, 1)
    std = np.asarray(model.meta["input"]["std"], dtype=np.float64).reshape(-1, 1, 1)
    display = x * std + mean
    return {"image_mean": round(float(display.mean()), 6), "image_std": round(float(display.std()), 6)}


# ---- requests ----------------------------------------------------------------------------------------


class ImageRequest(BaseModel):
    """One image to read. The image is sent as the bytes of its file, base64-encoded."""

    model_config = ConfigDict(strict=True, extra="forbid")

    image: str = Field(
        min_length=4,
        max_length=MAX_BASE64_CHARS,
        description=(
            "The image file, base64 (standard alphabet): PNG, JPEG, or DICOM Part 10 (the first frame of "
            f"a multi-frame object is read). At most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB decoded and "
            f"{MAX_IMAGE_PIXELS:,} pixels. Grey or RGB display values, as a viewer shows them."
        ),
        examples=["iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAA..."],
    )
    patient_ref: str | None = Field(
        default=None,
        max_length=128,
        description="The caller's own reference for the patient (an EMR number); Tianfu keeps only its hash.",
        examples=["EMR-4711"],
    )

    @field_validator("image")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("image is not valid base64") from exc
        return value

    def image_bytes(self) -> bytes:
        return base64.b64decode(self.image, validate=True)


def decode_image(data: bytes) -> tuple[npt.NDArray[Any], str]:
    """An image file's pixels as display values, and its format (``png``, ``jpeg`` or ``dicom``).

    Raises :class:`ValueError` for anything else, and before decoding for an image over the pixel limit.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"the image file is over {MAX_IMAGE_BYTES} bytes")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _decode_dicom(data), "dicom"
    if data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        return _decode_picture(data), "png" if data.startswith(_PNG_MAGIC) else "jpeg"
    raise ValueError("the image is not a PNG, JPEG or DICOM Part 10 file")


def _decode_picture(data: bytes) -> npt.NDArray[Any]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(f"the image has {width}×{height} pixels, over {MAX_IMAGE_PIXELS:,}")
            if picture.mode in ("1", "P", "LA", "CMYK", "YCbCr", "RGBA", "PA"):
                # Palette, alpha and print colour spaces carry no extra content for the models.
                return np.asarray(picture.convert("L" if picture.mode in ("1", "LA") else "RGB"))
            return np.asarray(picture)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode the image: {exc}") from exc


def _decode_dicom(data: bytes) -> npt.NDArray[Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from tianfu.imaging.dicom.pixels import display_array

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"cannot read the DICOM file: {exc}") from exc
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    if rows * columns > MAX_IMAGE_PIXELS:
        raise ValueError(f"the image has {columns}×{rows} pixels, over {MAX_IMAGE_PIXELS:,}")
    return display_array(dataset)  # PixelDataError is a ValueError


# ---- inference ---------------------------------------------------------------------------------------


def _peak(heatmap: npt.NDArray[np.float32]) -> dict[str, Any] | None:
    """Where the evidence for the finding is strongest, in image pixels and as a fraction of the size."""
    value = float(heatmap.max())
    if value <= 0.0:
        return None  # no evidence for the finding anywhere in the image
    row, column = (int(i) for i in np.unravel_index(int(np.argmax(heatmap)), heatmap.shape))
    height, width = heatmap.shape
    y, x = (row + 0.5) / height, (column + 0.5) / width
    vertical = ("upper", "middle", "lower")[min(int(y * 3), 2)]
    horizontal = ("left", "centre", "right")[min(int(x * 3), 2)]
    return {
        "row": row,
        "column": column,
        "x": round(x, 4),
        "y": round(y, 4),
        "value": round(value, 4),
        # Image left/right as displayed (on a PA chest film image left is the patient's right).
        "region": f"{vertical} {horizontal} of the image",
    }


def _heatmap_png(heatmap: npt.NDArray[np.float32]) -> tuple[str, list[int]]:
    from tianfu.imaging.dicom.pixels import to_png

    height, width = heatmap.shape
    scale = min(1.0, HEATMAP_MAX_SIDE / max(height, width))
    small = heatmap.astype(np.float64)
    if scale < 1.0:
        small = resize_area(small, max(1, round(height * scale)), max(1, round(width * scale)))
    grey = np.rint(np.clip(small, 0.0, 1.0) * 255.0).astype(np.uint8)
    return base64.b64encode(to_png(grey)).decode("ascii"), [int(grey.shape[0]), int(grey.shape[1])]


def infer_image(task: str, active: ActiveModel, request: ImageRequest | Mapping[str, Any]) -> InferenceResult:
    """Read one image with the active model of ``task``: label, probabilities and where the evidence is."""
    if not isinstance(request, ImageRequest):
        request = ImageRequest.model_validate(request)
    model = _model_for(active, task)
    image, source_format = decode_image(request.image_bytes())
    finding = model.predict(image)
    heatmap_png, heatmap_size = _heatmap_png(finding.heatmap)
    return InferenceResult(
        label=finding.label,
        score=finding.score,
        output={
            "probabilities": finding.probabilities,
            "probability": finding.probability,
            "positive": finding.positive,
            "threshold": finding.threshold,
            "screens_for": str(model.meta.get("positive_name", "")),
            "image_size": [int(image.shape[0]), int(image.shape[1])],
            "image_format": source_format,
        },
        explanation={
            "method": (
                "class activation map of the evidence for the screened finding (exact for the model's "
                "linear head on averaged features); 0 = none, 1 = strong"
            ),
            "heatmap_png": heatmap_png,
            "heatmap_size": heatmap_size,
            "peak": _peak(finding.heatmap),
        },
        input_features=input_summary(image, model),
        patient_ref=request.patient_ref,
    )


# ---- validation --------------------------------------------------------------------------------------


def validate_npz(task: str, active: ActiveModel, data_path: Path, progress: Progress) -> ValidationData:
    """The active model's probabilities on a MedMNIST-layout file: ``test_*`` when present, else ``val_*``."""
    model = _model_for(active, task)
    with np.load(data_path) as data:
        files = set(data.files)
    split = next((s for s in ("test", "val") if {f"{s}_images", f"{s}_labels"} <= files), None)
    if split is None:
        raise ValueError(f"{data_path} has neither test_images/test_labels nor val_images/val_labels")
    images, labels = evaluate.load_split(Path(data_path), split)
    n, n_classes = len(images), len(model.classes)
    if n != len(labels):
        raise ValueError(f"{data_path}: {n} images but {len(labels)} labels in split {split!r}")
    if n == 0:
        raise ValueError(f"{data_path}: split {split!r} is empty")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"{data_path}: labels outside 0..{n_classes - 1} for task {task!r}")
    progress(0, n)
    parts = []
    for start in range(0, n, BATCH):
        parts.append(model.predict_proba(images[start : start + BATCH]))
        progress(min(start + BATCH, n), n)
    probabilities = np.concatenate(parts)
    binary = n_classes == 2
    extra: dict[str, float] = {}
    if not binary:  # the screening decision (e.g. referable DR) is not one class: report it here
        measured = evaluate.metrics(labels, probabilities, model.positive_classes, model.threshold)
        for key in ("auc_positive", "sensitivity", "specificity", "threshold", "quadratic_kappa"):
            extra[key] = float(measured[key])
    return ValidationData(
        kind="binary" if binary else "multiclass",
        classes=model.classes,
        y_true=labels.astype(np.int64),
        scores=probabilities.astype(np.float64),
        positive=model.positive_classes[0] if binary else 1,
        threshold=model.threshold if binary else None,
        extra=extra,
    )


# ---- tasks -------------------------------------------------------------------------------------------


def _example_image() -> str:
    from tianfu.imaging.dicom.pixels import to_png

    ramp = np.add.outer(np.arange(28), np.arange(28)).astype(np.uint8) * 4
    return base64.b64encode(to_png(ramp)).decode("ascii")


def ai_tasks() -> list[AiTask]:
    """One inference task per shipped imaging model."""
    example = {"image": _example_image(), "patient_ref": "EMR-4711"}
    out = []
    for task in tasks(MODELS_DIR):
        meta = json.loads((MODELS_DIR / f"{task}.json").read_text(encoding="utf-8"))
        out.append(
            AiTask(
                key=task_key(task),
                module=MODULE,
                model_name=str(meta["model_name"]),
                title=str(meta["title"]),
                summary=(
                    f"One image (PNG, JPEG or DICOM) → {meta['positive_name']} or not, with calibrated "
                    "probabilities and a heatmap of where the evidence lies. Research use, not for "
                    "clinical use."
                ),
                data_format=DATA_FORMAT,
                request_model=ImageRequest,
                infer=partial(infer_image, task),
                validate=partial(validate_npz, task),
                example=example,
            )
        )
    return out
