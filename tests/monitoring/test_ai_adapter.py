"""The sepsis model as an AI-platform task: manifest, inference from a registry directory, validation."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tianfu.core.model_registry.manifest import ActiveModel, AiTask
from tianfu.monitoring import ai
from tianfu.monitoring.sepsis import COLUMNS, LABEL, SepsisModel, extract_features, parse_psv

FIXTURES = Path(__file__).parents[1] / "ai" / "fixtures" / "sepsis"


def shipped_active() -> ActiveModel:
    manifest = ai.shipped_models()[0]
    return ActiveModel(manifest, manifest.directory)


def task() -> AiTask:
    (only,) = ai.ai_tasks()
    return only


def stay_rows(name: str, hours: int) -> list[dict[str, float]]:
    """The first ``hours`` rows of a fixture stay as a request would send them (no label, no NaN)."""
    stay = parse_psv(FIXTURES / f"{name}.psv")[:hours]
    return [
        {c: float(v) for c, v in zip(COLUMNS, row, strict=True) if c != LABEL and not np.isnan(v)}
        for row in stay
    ]


def test_the_shipped_manifest() -> None:
    (manifest,) = ai.shipped_models()
    assert manifest.name == "sepsis"
    assert manifest.version == "1.0.0"
    assert manifest.task == "monitoring-sepsis" == task().key
    assert [p.name for p in manifest.files] == ["sepsis_v1.npz", "sepsis_v1.json"]
    assert all(p.is_file() for p in manifest.files)
    assert manifest.sha256() == manifest.sha256()
    assert manifest.metrics["auc"] == pytest.approx(0.828, abs=1e-3)
    assert "not for clinical use" in manifest.data_licence
    assert manifest.trained_on == "2026-11-27"
    assert manifest.limits
    assert "folds" not in manifest.card["metrics"]["cross_validation"]
    assert [r.name for r in manifest.reference] == list(ai.SUMMARY_COLUMNS)
    for r in manifest.reference:
        assert len(r.edges) == len(r.fractions) + 1
        assert sum(r.fractions) == pytest.approx(1.0, abs=1e-4)


def test_infer_on_hourly_rows_matches_the_model_and_explains_it() -> None:
    rows = stay_rows("p000009", 12)
    result = task().infer(shipped_active(), task().request_model.model_validate({"rows": rows}))
    model = SepsisModel.load()
    stay = parse_psv(FIXTURES / "p000009.psv")[:12]
    expected = float(model.predict_proba(extract_features(stay))[-1])
    assert result.score == pytest.approx(expected)
    assert result.output["hours"] == 12
    assert len(result.output["hourly_probabilities"]) == 12
    assert result.label in ("above threshold", "below threshold")
    top = result.explanation["top"]
    assert len(top) == ai.TOP_CONTRIBUTIONS
    assert abs(top[0]["contribution"]) >= abs(top[-1]["contribution"])
    assert set(result.input_features) == set(ai.SUMMARY_COLUMNS)
    assert result.input_features["HR"] is not None


def test_the_example_request_is_valid() -> None:
    result = task().infer(shipped_active(), task().request_model.model_validate(task().example))
    assert result.output["hours"] == 2


def test_validate_a_directory_and_a_tar_of_stays(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    data = task().validate(shipped_active(), FIXTURES, lambda d, n: calls.append((d, n)))
    hours = sum(len(parse_psv(p)) for p in FIXTURES.glob("*.psv"))
    assert data.kind == "binary"
    assert data.scores.shape == (hours, 2)
    assert np.allclose(data.scores.sum(axis=1), 1.0)
    assert set(np.unique(data.y_true)) == {0, 1}
    assert calls[0] == (0, 4)
    assert calls[-1] == (4, 4)
    assert data.extra["n_septic_stays"] == 2
    archive = tmp_path / "stays.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURES, arcname="stays")
    again = task().validate(shipped_active(), archive, lambda d, n: None)
    assert again.scores.shape == data.scores.shape


def test_an_imported_version_loads_from_its_own_directory(tmp_path: Path) -> None:
    (shipped,) = ai.shipped_models()
    for path in shipped.files:
        shutil.copy(path, tmp_path / path.name)
    imported = ai.read_model_manifest(tmp_path / "sepsis_v1.json")
    assert imported.directory == tmp_path
    assert imported.sha256() == shipped.sha256()
    active = ActiveModel(imported, tmp_path)
    assert ai.load_model(active) is not ai.load_model(shipped_active())
    assert task().infer(active, {"rows": stay_rows("p000001", 3)}).output["hours"] == 3


def test_bad_input_is_refused_clearly() -> None:
    request = task().request_model
    with pytest.raises(ValidationError, match="at most 336"):
        request.model_validate({"rows": [{"HR": 80.0}] * (ai.MAX_ROWS + 1)})
    with pytest.raises(ValidationError):
        request.model_validate({"rows": []})
    with pytest.raises(ValidationError):
        request.model_validate({"rows": [{"HeartRate": 80.0}]})  # not a PhysioNet column
    with pytest.raises(ValidationError):
        request.model_validate({"rows": [{"HR": "80"}]})  # strict: numbers only
    with pytest.raises(ValidationError):
        request.model_validate({"rows": [{"SepsisLabel": 1.0}]})  # the label is not an input
    with pytest.raises(ValueError, match=r"no \.psv stays"):
        task().validate(shipped_active(), Path(__file__).parent, lambda d, n: None)
