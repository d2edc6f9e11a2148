"""The triage models as AI-platform tasks: manifests, inference from a registry directory, validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tianfu.core.model_registry.manifest import ActiveModel, AiTask, ModelManifest
from tianfu.triage import ai

FIXTURES = Path(__file__).parents[1] / "ai" / "fixtures"
BENCHMARKS = ["dxy", "mdd", "mz10", "mz4-1733", "mz4-acl2018", "sd90"]
INQUIRY_MODELS = [f"triage-{b}" for b in BENCHMARKS]


def manifest_of(name: str) -> ModelManifest:
    """By registry name; an inquiry model also by its benchmark name ("dxy")."""
    return next(m for m in ai.shipped_models() if m.name in (name, f"triage-{name}"))


def active_of(name: str) -> ActiveModel:
    manifest = manifest_of(name)
    return ActiveModel(manifest, manifest.directory)


def task_of(key: str) -> AiTask:
    return next(t for t in ai.ai_tasks() if t.key == key)


def test_every_shipped_model_has_a_manifest_and_a_task() -> None:
    manifests = ai.shipped_models()
    assert sorted(m.name for m in manifests) == sorted(["department-classifier", *INQUIRY_MODELS])
    assert {t.key for t in ai.ai_tasks()} == {m.task for m in manifests}
    for m in manifests:
        assert m.module == "triage"
        assert [p.suffix for p in m.files] == [".npz", ".json"]  # weights first
        assert all(p.is_file() for p in m.files)
        assert m.sha256() == m.sha256()
        assert "accuracy" in m.metrics
        assert "not for clinical use" in m.data_licence
        assert m.trained_on.startswith("20")
        assert m.limits
        assert "reference" not in m.card
        names = {r.name for r in m.reference}
        assert {"symptoms", "symptom_count"} <= names
        for r in m.reference:
            assert sum(r.fractions) == pytest.approx(1.0, abs=1e-4)
    classifier = manifest_of("department-classifier")
    assert classifier.task == "triage-departments"
    assert {"top1", "top3"} <= set(classifier.metrics)
    assert manifest_of("dxy").task == "triage-inquiry-dxy"
    assert "turns" in manifest_of("dxy").metrics


def test_a_chinese_complaint_is_routed_with_reasons_and_symptoms() -> None:
    active = active_of("department-classifier")
    spec = task_of("triage-departments")
    result = spec.infer(
        active, spec.request_model.model_validate({"complaint": "发烧咳嗽三天", "age_years": 34})
    )
    assert result.label == "resp"
    assert result.score is not None
    assert 0.0 < result.score <= 1.0
    assert result.output["departments"][0]["reasons_zh"]
    assert result.output["urgent"] is False
    assert set(result.explanation["symptoms_found"]) == {"发热", "咳嗽"}
    assert set(result.explanation["contributing_symptoms"]["resp"]) == {"发热", "咳嗽"}
    assert result.input_features["symptom_count"] == 2
    assert set(result.input_features) == {r.name for r in active.manifest.reference}


def test_a_red_flag_goes_to_the_emergency_department() -> None:
    result = task_of("triage-departments").infer(
        active_of("department-classifier"), {"complaint": "胸痛大汗，喘不上气"}
    )
    assert result.label == "emerg"
    assert result.output["urgent"] is True


def test_symptoms_outside_the_reference_count_as_other() -> None:
    reference = manifest_of("department-classifier").reference
    assert ai.categorical_values(["咳嗽", "no such symptom"], reference, "symptoms") == [
        "咳嗽",
        ai.OTHER_CATEGORY,
    ]


def test_inquiry_ranks_diseases_with_contributing_symptoms() -> None:
    spec = task_of("triage-inquiry-dxy")
    result = spec.infer(active_of("dxy"), {"present": ["发烧", "咳嗽"], "absent": ["皮疹"], "top": 3})
    diseases = result.output["diseases"]
    assert len(diseases) == 3
    assert result.label == diseases[0]["name"]
    assert [d["probability"] for d in diseases] == sorted((d["probability"] for d in diseases), reverse=True)
    evidence = result.explanation["contributions"][result.label]
    assert {e["symptom"] for e in evidence} == {"发烧", "咳嗽", "皮疹"}
    assert result.input_features == {"symptoms": ["发烧", "咳嗽", "皮疹"], "symptom_count": 3}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_inquiry_task_answers_its_example(name: str) -> None:
    spec = task_of(f"triage-inquiry-{name}")
    result = spec.infer(active_of(name), spec.request_model.model_validate(spec.example))
    assert result.label in result.output["model_scope"]


def test_validate_inquiry_on_a_benchmark_file() -> None:
    calls: list[tuple[int, int]] = []
    data = task_of("triage-inquiry-dxy").validate(
        active_of("dxy"), FIXTURES / "dxy_30.json", lambda d, n: calls.append((d, n))
    )
    assert data.kind == "multiclass"
    assert data.scores.shape == (30, 5)
    assert data.y_true.shape == (30,)
    assert np.allclose(data.scores.sum(axis=1), 1.0)
    assert calls[0] == (0, 30)
    assert calls[-1] == (30, 30)
    assert data.extra["turns"] > 0
    assert float((data.scores.argmax(axis=1) == data.y_true).mean()) > 0.5  # in-sample cases


def test_validate_departments_on_a_question_file() -> None:
    calls: list[tuple[int, int]] = []
    data = task_of("triage-departments").validate(
        active_of("department-classifier"), FIXTURES / "toyhom_33.jsonl", lambda d, n: calls.append((d, n))
    )
    assert data.scores.shape == (33, 11)
    assert np.allclose(data.scores.sum(axis=1), 1.0)
    assert calls[-1] == (33, 33)
    assert 0.0 <= data.extra["top3"] <= 1.0


def test_validate_refuses_labels_the_model_does_not_know(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"department": "骨科", "title": "腰痛", "ask": "腰痛三天"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="骨科"):
        task_of("triage-departments").validate(active_of("department-classifier"), bad, lambda d, n: None)


def test_imported_versions_load_from_their_own_directory(tmp_path: Path) -> None:
    for manifest in (manifest_of("dxy"), manifest_of("department-classifier")):
        target = tmp_path / manifest.name
        target.mkdir()
        for path in manifest.files:
            shutil.copy(path, target / path.name)
        imported = ai.read_model_manifest(target / manifest.files[-1].name)
        assert imported.directory == target
        assert imported.sha256() == manifest.sha256()
        assert imported.task == manifest.task
    dxy_dir = tmp_path / "triage-dxy"
    dxy = ActiveModel(ai.read_model_manifest(dxy_dir / "dxy.json"), dxy_dir)
    assert ai.load_inquiry(dxy) is not ai.load_inquiry(active_of("dxy"))
    assert task_of("triage-inquiry-dxy").infer(dxy, {"present": ["稀便"]}).label
    router = ActiveModel(
        ai.read_model_manifest(tmp_path / "department-classifier" / "department-classifier.json"),
        tmp_path / "department-classifier",
    )
    assert task_of("triage-departments").infer(router, {"complaint": "拉肚子两天"}).label


def test_bad_input_is_refused_clearly() -> None:
    complaint = task_of("triage-departments").request_model
    with pytest.raises(ValidationError):
        complaint.model_validate({"complaint": ""})
    with pytest.raises(ValidationError):
        complaint.model_validate({"complaint": "咳" * (ai.MAX_COMPLAINT_CHARS + 1)})
    with pytest.raises(ValidationError):
        complaint.model_validate({"complaint": "咳嗽", "sex": "X"})
    inquiry = task_of("triage-inquiry-dxy")
    with pytest.raises(ValidationError, match="at least one symptom"):
        inquiry.request_model.model_validate({})
    with pytest.raises(ValidationError, match="both present and absent"):
        inquiry.request_model.model_validate({"present": ["咳嗽"], "absent": ["咳嗽"]})
    with pytest.raises(ValidationError):
        inquiry.request_model.model_validate({"present": ["咳嗽"] * (ai.MAX_SYMPTOMS + 1)})
    with pytest.raises(ValueError, match="not in the dxy vocabulary"):
        inquiry.infer(active_of("dxy"), {"present": ["头发变绿"]})
