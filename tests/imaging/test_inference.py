"""Shipped imaging models: loading, training-time parity, any-size input, heatmaps, evaluation.

The fixtures ``fixtures/model_<task>.npz`` are written by ``training/imaging/train.py``: 16 images of the
split the metrics were reported on (MedMNIST ``val``; the NIH tune split for ``cxr-abnormal``) with the
calibrated probabilities the training code computed for them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tianfu.imaging import evaluate as ev
from tianfu.imaging.inference import (
    MODELS_DIR,
    ImagingModel,
    _load_cached,
    resize_area,
    tasks,
    to_unit_range,
)

FIXTURES = Path(__file__).parent / "fixtures"
TASKS = ["pneumonia", "breast", "retina", "cxr-abnormal"]


def fixture(task: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"model_{task}.npz") as data:
        return {k: data[k] for k in data.files}


def nearest_upsample(image: np.ndarray, size: int) -> np.ndarray:
    """What a viewer does to show a small image large: repeat pixels (non-integer factor)."""
    idx = (np.arange(size) * image.shape[0] / size).astype(int)
    return image[idx][:, idx]


def test_all_tasks_are_shipped() -> None:
    assert set(TASKS) <= set(tasks())


@pytest.mark.parametrize("task", TASKS)
def test_load_is_fast_and_cached(task: str) -> None:
    _load_cached.cache_clear()
    start = time.perf_counter()
    model = ImagingModel.load(task)
    assert time.perf_counter() - start < 1.0
    assert ImagingModel.load(task) is model
    assert model.task == task
    assert model.model_version


@pytest.mark.parametrize("task", TASKS)
def test_predictions_match_training(task: str) -> None:
    fx = fixture(task)
    model = ImagingModel.load(task)
    probs = model.predict_proba(fx["val_images"])
    np.testing.assert_allclose(probs, fx["probabilities"], atol=1e-4)
    findings = model.predict_batch(fx["val_images"])
    np.testing.assert_allclose([f.score for f in findings], fx["score"], atol=1e-4)
    for image, f, p in zip(fx["val_images"], findings, fx["probabilities"], strict=True):
        assert f.task == task
        assert f.threshold == model.threshold
        assert list(f.probabilities) == list(model.classes)
        assert sum(f.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert f.positive == (f.score >= f.threshold)
        if model.kind == "binary":
            assert f.probability == f.score
            assert (f.label == model.classes[model.positive_classes[0]]) == f.positive
        else:
            assert f.label == model.classes[int(np.argmax(p))]
            assert f.probability == pytest.approx(float(p.max()), abs=1e-4)
        assert f.heatmap.shape == image.shape[:2]
        assert f.heatmap.dtype == np.float32
        assert float(f.heatmap.min()) >= 0.0
        assert float(f.heatmap.max()) <= 1.0


@pytest.mark.parametrize("task", TASKS)
def test_class_activation_map_is_exact(task: str) -> None:
    """logits = head(mean over space of features): the CAM decomposition the heatmap relies on."""
    model = ImagingModel.load(task)
    logits, features = model.run(model.preprocess(fixture(task)["val_images"]))
    weight = np.asarray(model.meta["head"]["weight"])
    bias = np.asarray(model.meta["head"]["bias"])
    np.testing.assert_allclose(features.mean(axis=(2, 3)) @ weight.T + bias, logits, atol=1e-4)


@pytest.mark.parametrize("task", TASKS)
def test_any_size_and_dtype(task: str) -> None:
    fx = fixture(task)
    model = ImagingModel.load(task)
    image = fx["val_images"][0]
    as_uint16 = image.astype(np.uint16) * 257  # the same display values on a 16-bit scale
    exact = np.repeat(np.repeat(as_uint16, 8, axis=0), 8, axis=1)  # integer factor: area resize undoes it
    assert model.predict(exact).score == pytest.approx(float(fx["score"][0]), abs=1e-4)
    big = nearest_upsample(as_uint16, 512)
    finding = model.predict(big)
    assert finding.heatmap.shape == (512, 512)
    assert float(finding.heatmap.min()) >= 0.0
    assert float(finding.heatmap.max()) <= 1.0
    # Non-integer factor: the round trip blurs a few edge pixels, so nearly (not exactly) the same.
    assert finding.score == pytest.approx(float(fx["score"][0]), abs=0.05)
    as_float = image.astype(np.float64) / 255.0
    assert model.predict(as_float).score == pytest.approx(float(fx["score"][0]), abs=1e-4)


def test_grey_and_colour_inputs_are_converted() -> None:
    grey = fixture("pneumonia")["val_images"][0]
    model = ImagingModel.load("pneumonia")
    rgb = np.stack([grey] * 3, axis=-1)
    assert model.predict(rgb).score == pytest.approx(model.predict(grey).score, abs=1e-6)
    retina = ImagingModel.load("retina")
    colour = fixture("retina")["val_images"][0]
    finding = retina.predict(colour.mean(axis=-1).astype(np.uint8))  # a grey fundus still runs
    assert finding.heatmap.shape == colour.shape[:2]
    rgba = np.concatenate([colour, np.full((*colour.shape[:2], 1), 255, np.uint8)], axis=-1)
    assert retina.predict(rgba).score == pytest.approx(retina.predict(colour).score, abs=1e-6)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 2, 28, 28)), np.zeros((28, 28, 5)), np.full((28, 28), np.nan), np.array(["a"])],
)
def test_bad_images_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises((ValueError, TypeError)):
        ImagingModel.load("pneumonia").predict(bad)


def test_intensity_scaling() -> None:
    np.testing.assert_allclose(to_unit_range(np.array([0, 255], np.uint8)), [0.0, 1.0])
    # 12-bit data in uint16 is scaled by its bit depth, not by 65535.
    np.testing.assert_allclose(to_unit_range(np.array([0, 4095], np.uint16)), [0.0, 1.0])
    np.testing.assert_allclose(to_unit_range(np.array([0, 2048], np.uint16)), [0.0, 2048 / 4095])
    np.testing.assert_allclose(to_unit_range(np.array([0.25, 0.5])), [0.25, 0.5])
    np.testing.assert_allclose(to_unit_range(np.array([-1000.0, 1000.0])), [0.0, 1.0])
    np.testing.assert_allclose(to_unit_range(np.array([0, 2048], np.uint16), (0, 4096)), [0.0, 0.5])
    np.testing.assert_allclose(to_unit_range(np.full((3, 3), 7, np.int32)), np.full((3, 3), 7 / 255))
    np.testing.assert_allclose(to_unit_range(np.full((3, 3), 7.5)), np.zeros((3, 3)))  # flat: no contrast


def test_area_resize() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((56, 84))
    np.testing.assert_allclose(resize_area(image, 56, 84), image)
    small = resize_area(image, 28, 28)
    np.testing.assert_allclose(small[0, 0], image[:2, :3].mean())
    assert small.mean() == pytest.approx(image.mean())
    odd = resize_area(rng.random((1000, 700, 3)), 28, 28)
    assert odd.shape == (28, 28, 3)
    assert odd.min() >= 0.0
    assert odd.max() <= 1.0


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_on_fixture(task: str) -> None:
    fx = fixture(task)
    result = ev.evaluate(task, FIXTURES / f"model_{task}.npz", split="val")
    assert {"task", "n", "auc", "accuracy", "sensitivity", "specificity"} <= set(result)
    assert result["task"] == task
    assert result["n"] == len(fx["val_images"])
    model = ImagingModel.load(task)
    expected = ev.metrics(fx["val_labels"], fx["probabilities"], model.positive_classes, model.threshold)
    for key in ("auc", "accuracy", "sensitivity", "specificity"):
        assert result[key] == pytest.approx(expected[key], abs=1e-9)
    json.dumps(result)


def test_missing_test_split_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "model_pneumonia.npz"
    with pytest.raises(ev.MissingSplitError, match="--split val"):
        ev.evaluate("pneumonia", path)
    assert ev.main(["--task", "pneumonia", "--npz", str(path)]) == 2
    assert "--split val" in capsys.readouterr().err
    assert ev.main(["--task", "pneumonia", "--npz", str(path), "--split", "val"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line)["n"] == 16


def test_metrics_helpers() -> None:
    assert ev.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert ev.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert np.isnan(ev.roc_auc([1, 1], [0.2, 0.3]))
    assert ev.quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3], 4) == pytest.approx(1.0)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    m = ev.metrics([0, 1, 2], probs, positive_classes=(2,), threshold=0.5)
    assert m["accuracy"] == 1.0
    assert m["auc"] == pytest.approx(1.0)
    assert m["sensitivity"] == 1.0
    assert m["specificity"] == 1.0


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    for suffix in (".json", ".onnx"):
        shutil.copy(MODELS_DIR / f"breast{suffix}", tmp_path / f"breast{suffix}")
    with (tmp_path / "breast.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        ImagingModel.load("breast", tmp_path)
    with pytest.raises(KeyError, match="no imaging model"):
        ImagingModel.load("nonexistent", tmp_path)
