"""The imaging models as AI-platform tasks: manifests, inference from a registry directory, validation."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tianfu.core.model_registry.manifest import ActiveModel, AiTask, ModelManifest
from tianfu.imaging import ai
from tianfu.imaging.dicom.pixels import to_png
from tianfu.imaging.inference import MODELS_DIR

FIXTURES = Path(__file__).parents[1] / "ai" / "fixtures"
DICOM = Path(__file__).parent / "fixtures" / "cxr_jpeg_baseline.dcm"
TASKS = ["pneumonia", "breast", "retina", "cxr-abnormal"]
FIXTURE_FILES = {
    "pneumonia": "pneumonia_val40.npz",
    "breast": "breast_val40.npz",
    "retina": "retina_val40.npz",
    "cxr-abnormal": "cxr-abnormal_val20.npz",
}


def manifest_of(task: str) -> ModelManifest:
    return next(m for m in ai.shipped_models() if m.task == f"imaging-{task}")


def active_of(task: str) -> ActiveModel:
    manifest = manifest_of(task)
    return ActiveModel(manifest, manifest.directory)


def task_of(task: str) -> AiTask:
    return next(t for t in ai.ai_tasks() if t.key == f"imaging-{task}")


def fixture_image(task: str, i: int = 0) -> np.ndarray:
    with np.load(FIXTURES / FIXTURE_FILES[task]) as data:
        return np.asarray(data["val_images"][i])


def png_request(image: np.ndarray) -> dict[str, str]:
    return {"image": base64.b64encode(to_png(image)).decode("ascii")}


def test_every_shipped_model_has_a_manifest_and_a_task() -> None:
    manifests = ai.shipped_models()
    assert sorted(m.task for m in manifests) == sorted(f"imaging-{t}" for t in TASKS)
    assert {t.key for t in ai.ai_tasks()} == {m.task for m in manifests}
    for m in manifests:
        assert m.name == f"tianfu-imaging-{m.task.removeprefix('imaging-')}"
        assert m.module == "imaging"
        assert [p.suffix for p in m.files] == [".onnx", ".json"]  # weights first
        assert all(p.is_file() for p in m.files)
        assert m.sha256() == m.sha256()
        assert len(m.sha256()) == 64
        assert {"auc", "accuracy", "sensitivity", "specificity"} <= set(m.metrics)
        assert "not for clinical use" in m.data_licence
        assert m.limits
        assert m.trained_on
        assert m.intended_use
        assert "weight" not in m.card["head"]
        assert "reference" not in m.card
        assert [r.name for r in m.reference] == ["image_mean", "image_std"]
        for r in m.reference:
            assert len(r.edges) == len(r.fractions) + 1
            assert sum(r.fractions) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("task", TASKS)
def test_infer_a_png_gives_label_heatmap_and_input_summary(task: str) -> None:
    spec = task_of(task)
    active = active_of(task)
    request = spec.request_model.model_validate(png_request(fixture_image(task)))
    result = spec.infer(active, request)
    model = ai.load_model(active)
    assert result.label in model.classes
    assert result.score is not None
    assert 0.0 <= result.score <= 1.0
    assert sum(result.output["probabilities"].values()) == pytest.approx(1.0)
    heatmap = base64.b64decode(result.explanation["heatmap_png"])
    assert heatmap.startswith(b"\x89PNG")
    peak = result.explanation["peak"]
    assert peak is None or (0 <= peak["x"] <= 1 and "of the image" in peak["region"])
    assert set(result.input_features) == {r.name for r in active.manifest.reference}


def test_input_summary_is_the_display_scale_image_at_model_size() -> None:
    image = fixture_image("pneumonia", 3)  # 28×28 uint8: the model sees it unresized
    summary = ai.input_summary(image, ai.load_model(active_of("pneumonia")))
    assert summary["image_mean"] == pytest.approx(image.mean() / 255.0, abs=1e-5)
    assert summary["image_std"] == pytest.approx(image.std() / 255.0, abs=1e-5)


def test_infer_reads_jpeg_and_dicom() -> None:
    from PIL import Image

    spec, active = task_of("cxr-abnormal"), active_of("cxr-abnormal")
    buffer = io.BytesIO()
    Image.fromarray(fixture_image("cxr-abnormal")).save(buffer, format="JPEG")
    jpeg = spec.infer(active, {"image": base64.b64encode(buffer.getvalue()).decode()})
    assert jpeg.output["image_format"] == "jpeg"
    dicom = spec.infer(active, {"image": base64.b64encode(DICOM.read_bytes()).decode()})
    assert dicom.output["image_format"] == "dicom"
    assert dicom.output["image_size"] == [1024, 1024]
    assert max(dicom.explanation["heatmap_size"]) <= ai.HEATMAP_MAX_SIDE


@pytest.mark.parametrize("task", TASKS)
def test_validate_on_the_val_split(task: str) -> None:
    calls: list[tuple[int, int]] = []
    data = task_of(task).validate(
        active_of(task), FIXTURES / FIXTURE_FILES[task], lambda d, n: calls.append((d, n))
    )
    n = len(data.y_true)
    assert data.scores.shape == (n, len(data.classes))
    assert np.allclose(data.scores.sum(axis=1), 1.0)
    assert calls[0] == (0, n)
    assert calls[-1] == (n, n)
    if task == "retina":
        assert data.kind == "multiclass"
        assert data.threshold is None
        assert {"auc_positive", "quadratic_kappa"} <= set(data.extra)
    else:
        assert data.kind == "binary"
        assert data.threshold is not None
        assert data.classes[data.positive] == manifest_of(task).card["positive_name"]


def test_validate_prefers_test_split_and_refuses_a_file_without_one(tmp_path: Path) -> None:
    with np.load(FIXTURES / FIXTURE_FILES["breast"]) as data:
        images, labels = data["val_images"], data["val_labels"]
    both = tmp_path / "both.npz"
    np.savez(both, val_images=images, val_labels=labels, test_images=images[:5], test_labels=labels[:5])
    assert len(task_of("breast").validate(active_of("breast"), both, lambda d, n: None).y_true) == 5
    train_only = tmp_path / "train.npz"
    np.savez(train_only, train_images=images, train_labels=labels)
    with pytest.raises(ValueError, match="neither test_images"):
        task_of("breast").validate(active_of("breast"), train_only, lambda d, n: None)


def test_an_imported_version_loads_from_its_own_directory(tmp_path: Path) -> None:
    for name in ("pneumonia.onnx", "pneumonia.json"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    imported = ai.read_model_manifest(tmp_path / "pneumonia.json")
    shipped = manifest_of("pneumonia")
    assert imported.directory == tmp_path
    assert imported.sha256() == shipped.sha256()
    assert imported.name == shipped.name
    assert imported.reference == shipped.reference
    active = ActiveModel(imported, tmp_path)
    assert ai.load_model(active) is not ai.load_model(active_of("pneumonia"))
    result = task_of("pneumonia").infer(active, png_request(fixture_image("pneumonia")))
    assert result.label in ("normal", "pneumonia")


def test_a_tampered_onnx_file_is_refused(tmp_path: Path) -> None:
    for name in ("breast.onnx", "breast.json"):
        shutil.copy(MODELS_DIR / name, tmp_path / name)
    (tmp_path / "breast.onnx").write_bytes((MODELS_DIR / "breast.onnx").read_bytes() + b"\0")
    active = ActiveModel(ai.read_model_manifest(tmp_path / "breast.json"), tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        ai.load_model(active)


def test_bad_input_is_refused_clearly() -> None:
    spec, active = task_of("pneumonia"), active_of("pneumonia")
    with pytest.raises(ValidationError, match="base64"):
        spec.request_model.model_validate({"image": "not base64!"})
    with pytest.raises(ValidationError):
        spec.request_model.model_validate({"image": png_request(fixture_image("pneumonia"))["image"], "x": 1})
    with pytest.raises(ValueError, match="not a PNG, JPEG or DICOM"):
        spec.infer(active, {"image": base64.b64encode(b"hello, this is text").decode()})
    with pytest.raises(ValueError, match="cannot decode"):
        spec.infer(active, {"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()})
