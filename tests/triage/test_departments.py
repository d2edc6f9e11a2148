"""Department routing: the department list, CMeKG normalisation, the router and the question classifier.

Everything here reads only the files shipped in ``tianfu/triage`` (no shared data, no scikit-learn).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tianfu.triage import departments as dep
from tianfu.triage.departments import (
    PAEDIATRIC_AGE_LIMIT,
    DepartmentRouter,
    KnowledgeDisease,
    QuestionClassifier,
    RouterParams,
    departments,
    evaluate_departments,
    normalise_cmekg_label,
    normalise_symptom,
)

KNOWLEDGE = resources.files("tianfu.triage").joinpath("knowledge")
MODELS = resources.files("tianfu.triage").joinpath("models")


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(KNOWLEDGE.joinpath(name).read_text(encoding="utf-8"))))


@pytest.fixture(scope="module")
def router() -> DepartmentRouter:
    return DepartmentRouter.load()


def codes(suggestions: list[dep.DepartmentSuggestion]) -> list[str]:
    return [s.department.code for s in suggestions]


# ---- the department list ------------------------------------------------------------------------------
def test_department_list_is_one_clean_table() -> None:
    depts = departments()
    assert 35 <= len(depts) <= 50
    all_codes = [d.code for d in depts]
    assert len(set(all_codes)) == len(all_codes)
    for d in depts:
        assert d.code.isascii(), d.code
        assert d.code.isidentifier(), d.code
        assert all((d.name_zh, d.name_en, d.group)), d
    names = {d.name_zh for d in depts}
    assert {"急诊科", "儿科", "发热门诊", "呼吸与危重症医学科"} <= names
    closed = [d for d in depts if not d.outpatient]
    assert closed, "the list shows how a clinic without outpatients hands over"
    for d in closed:
        assert d.refer_to is not None
        assert dep.department(d.refer_to).outpatient
    assert dep.outpatient_code("icu") == "emerg"
    assert dep.outpatient_code("resp") == "resp"


def test_every_map_points_at_listed_departments() -> None:
    known = {d.code for d in departments()}
    cmekg = _rows("cmekg_department_map.csv")
    # 205 raw labels (combinations included) + the 2 halves of 专业生育/受孕辅助单位 (173 after splitting).
    assert len(cmekg) == 207
    assert len({r["label"] for r in cmekg}) == len(cmekg)
    for table in (cmekg, _rows("disease_departments.csv")):
        for r in table:
            assert r["basis"].strip(), r
            for c in r["codes"].split(";"):
                assert c in known, r
    for r in _rows("department_toyhom_map.csv"):
        assert r["code"] in known, r
    assert len(_rows("department_toyhom_map.csv")) == 11


def test_shipped_knowledge_uses_listed_departments_and_is_small() -> None:
    known = {d.code for d in departments()}
    path = KNOWLEDGE.joinpath(dep.KNOWLEDGE_FILES["cmekg_knowledge"])
    raw = path.read_bytes()
    assert len(raw) <= 1_500_000
    doc = json.loads(gzip.decompress(raw))
    assert sum(bool(row[2]) for row in doc["diseases"]) > 5000  # diseases with symptoms
    for _name, cs, _sym, _flags, _en, _aliases in doc["diseases"]:
        assert all(c in known for c in cs.split(";")), cs
    sizes = sum(len(MODELS.joinpath(f"{dep.CLASSIFIER_NAME}.{ext}").read_bytes()) for ext in ("npz", "json"))
    assert sizes < 3_000_000


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("呼吸内科", ["resp"]),
        ("呼吸科", ["resp"]),
        ("内科", ["gim"]),
        ("心血管内科", ["cardio"]),
        ("新生儿科", ["neonat"]),
        ("骨科；肿瘤科", ["ortho", "onco"]),
        ("肿瘤科；骨科", ["onco", "ortho"]),
        ("妇产科", ["gyn", "obst"]),
        (" 急诊室 ", ["emerg"]),
        ("眼科；呼吸内科", ["ophth", "resp"]),  # an unseen combination is split
        ("火星科", []),
    ],
)
def test_normalise_cmekg_label(label: str, expected: list[str]) -> None:
    assert normalise_cmekg_label(label) == expected


def test_benchmark_diseases_children_go_to_paediatrics() -> None:
    rows = _rows("disease_departments.csv")
    assert sum(r["datasets"] != "common" for r in rows) == 115  # every disease of the six benchmarks
    table = dep.disease_department_table()
    for name, cs in table.items():
        if name.startswith(("小儿", "新生儿")):
            assert cs == ("peds",), name
    assert table["肺炎"] == ("resp",)
    assert table["Coronary heart disease"] == ("cardio",)
    assert table["Erectile dysfunction"] == ("androl",)


def test_symptom_names_are_normalised() -> None:
    assert normalise_symptom(" 发烧 ") == "发热"
    assert normalise_symptom("淋巴结增大等") == "淋巴结增大"
    assert normalise_symptom("Cough") == "cough"
    assert dep.split_symptoms("恶心、呕吐") == ["恶心", "呕吐"]


# ---- router ----------------------------------------------------------------------------------------------
def test_router_loads_fast() -> None:
    dep._load_router.cache_clear()
    t0 = time.perf_counter()
    DepartmentRouter.load()
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, elapsed  # about 0.3 s on a laptop; generous for slow CI machines
    assert DepartmentRouter.load() is DepartmentRouter.load()


def test_router_uses_the_tuned_settings(router: DepartmentRouter) -> None:
    tuned = json.loads(KNOWLEDGE.joinpath(dep.KNOWLEDGE_FILES["router_params"]).read_text(encoding="utf-8"))
    assert router.params == dep.load_router_params()
    assert router.params.top_diseases == tuned["params"]["top_diseases"]


def test_respiratory_symptoms(router: DepartmentRouter) -> None:
    out = router.recommend(["咳嗽", "咳痰", "发热", "胸痛"], age_years=45)
    assert out[0].department.code == "resp"
    assert 0 < out[0].score <= 1
    assert sum(s.score for s in out) <= 1 + 1e-9
    assert any("「咳嗽」" in r for r in out[0].reasons_zh)
    assert any("'咳嗽'" in r for r in out[0].reasons_en)


def test_skin_eye_and_bone_symptoms(router: DepartmentRouter) -> None:
    assert router.recommend(["皮疹", "瘙痒", "丘疹"], age_years=30)[0].department.code == "derm"
    assert router.recommend(["视力下降", "眼痛", "畏光"], age_years=30)[0].department.code == "ophth"
    assert router.recommend(["关节肿胀", "骨折", "活动受限"], age_years=30)[0].department.code == "ortho"


def test_child_goes_to_paediatrics(router: DepartmentRouter) -> None:
    out = router.recommend(["咳嗽", "发热", "流鼻涕"], age_years=4)
    assert out[0].department.code == "peds"
    assert any("儿童" in r for r in out[0].reasons_zh)
    assert "resp" not in codes(out)


def test_adult_is_not_sent_to_paediatrics(router: DepartmentRouter) -> None:
    out = router.recommend(["稀便", "蛋花样便", "呕吐"], age_years=PAEDIATRIC_AGE_LIMIT + 20)
    assert not {"peds", "pedsurg"} & set(codes(out))


def test_conditions_name_the_department(router: DepartmentRouter) -> None:
    out = router.recommend([], conditions=[("肺炎", 0.9), ("上呼吸道感染", 0.1)])
    assert out[0].department.code == "resp"
    assert "可能疾病「肺炎」通常就诊于呼吸与危重症医学科（概率 90%）" in out[0].reasons_zh
    out = router.recommend([], conditions=[("Coronary heart disease", 0.8)])
    assert out[0].department.code == "cardio"
    # CMeKG by English name, when the curated table does not have it.
    assert router.condition_codes("Hypertension of renal parenchyma") == ("cardio",)
    assert router.condition_codes("小儿某种未知病") == ("peds",)
    assert router.condition_codes("unheard-of disease") == ()


def test_confident_conditions_dominate_symptoms(router: DepartmentRouter) -> None:
    symptoms = ["皮疹", "瘙痒", "丘疹"]
    assert router.recommend(symptoms)[0].department.code == "derm"
    out = router.recommend(symptoms, conditions=[("小儿手足口病", 0.95)], age_years=3)
    assert out[0].department.code == "peds"
    weak = router.recommend(symptoms, conditions=[("Coronary heart disease", 0.05)])
    assert weak[0].department.code == "derm"


def test_children_with_surgical_problem_go_to_paediatric_surgery(router: DepartmentRouter) -> None:
    out = router.recommend([], conditions=[("急性阑尾炎", 0.9)], age_years=8)
    assert out[0].department.code in {"pedsurg", "emerg"}
    assert "pedsurg" in codes(out)


def test_sex_removes_clinics_that_cannot_apply(router: DepartmentRouter) -> None:
    symptoms = ["下腹痛", "阴道流血", "月经不调"]
    female = codes(router.recommend(symptoms, sex="F", age_years=30))
    assert {"gyn", "obst"} <= set(female)  # bleeding with pain: gynaecology, or pregnancy-related
    male = router.recommend(symptoms, sex="男", age_years=30)
    assert not {"gyn", "obst"} & set(codes(male))


def test_english_symptoms_use_benchmark_profiles(router: DepartmentRouter) -> None:
    out = router.recommend(["Diminished vision", "Pain in eye", "Spots or clouds in vision"])
    assert out[0].department.code == "ophth"


def test_free_text_without_symptoms(router: DepartmentRouter) -> None:
    out = router.recommend([], text="最近老是胃痛，反酸烧心，吃完饭肚子胀")
    assert out[0].department.code == "gastro"
    out = router.recommend([], text="体检发现乙肝小三阳，转氨酶有点高，要吃抗病毒药吗")
    assert out[0].department.code == "infect"
    assert any("分类" in r for r in out[0].reasons_zh)
    assert any("「乙肝」" in r for r in out[0].reasons_zh)
    # Not internal medicine: the knowledge keeps the specialist, the classifier does not override it.
    assert router.recommend([], text="眼睛又红又痛，看东西模糊，还怕光")[0].department.code == "ophth"
    assert router.recommend([], text="月经不调，白带多，下腹痛", sex="F")[0].department.code == "gyn"
    assert router.recommend([], text="孩子咳嗽发烧两天了", age_years=3)[0].department.code == "peds"


def test_child_lower_abdominal_pain_is_not_gynaecology(router: DepartmentRouter) -> None:
    out = codes(router.recommend([], text="右下腹疼了一天，按压更痛，有点发烧", age_years=9))
    assert out[0] in {"peds", "pedsurg"}
    assert "pedsurg" in out
    assert "gyn" not in out


def test_unclear_text_starts_at_general_medicine(router: DepartmentRouter) -> None:
    out = router.recommend([], text="你好医生")
    assert out[0].department.code == "gim"
    assert any("全科" in r for r in out[0].reasons_zh)


def test_free_text_ignores_ordinary_words(router: DepartmentRouter) -> None:
    symptoms, diseases = router.find_in_text("工作压力大，感觉不适，最近头痛、恶心，有高血压")
    assert "工作" not in symptoms
    assert "感觉" not in symptoms
    assert {"恶心"} <= set(symptoms)
    assert "高血压" in diseases


def test_common_conditions_are_curated(router: DepartmentRouter) -> None:
    assert router.condition_codes("癫痫") == ("neuro",)
    assert router.condition_codes("感冒") == ("resp", "gim")
    assert router.condition_codes("慢性胃炎") == ("gastro",)  # CMeKG
    assert router.condition_codes("伤风") == ("ent",)  # CMeKG alias (别称) of 急性鼻炎


def test_text_routing_without_classifier_falls_back() -> None:
    diseases = [
        KnowledgeDisease("肺炎", ("resp",), ("咳嗽", "发热"), (1.0, 1.0)),
        KnowledgeDisease("湿疹", ("derm",), ("瘙痒症", "皮疹"), (1.0, 1.0)),
    ]
    router = DepartmentRouter(diseases, RouterParams(text_symptom_min_diseases=1), use_classifier=False)
    assert router.recommend([], text="孩子身上起皮疹，很痒")[0].department.code == "derm"
    empty = router.recommend([], text="你好")
    assert (empty[0].department.code, empty[0].score) == ("gim", 0.0)


def test_nothing_known_falls_back_to_general_or_paediatrics(router: DepartmentRouter) -> None:
    out = router.recommend(["zzzz-unknown"])
    assert (out[0].department.code, out[0].score) == ("gim", 0.0)
    assert router.recommend([], age_years=3)[0].department.code == "peds"


def test_top_limits_the_list(router: DepartmentRouter) -> None:
    assert len(router.recommend(["头痛", "恶心"], top=5)) == 5
    assert router.recommend(["头痛"], top=0) == []


# ---- question classifier --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier() -> QuestionClassifier:
    return QuestionClassifier.load()


def test_numpy_serving_reproduces_training_probabilities(classifier: QuestionClassifier) -> None:
    # Expected probabilities were computed by scikit-learn at training time (training script self-check).
    cases = classifier.metadata["self_check"]["cases"]
    assert len(cases) >= 5
    for case in cases:
        np.testing.assert_allclose(classifier.probabilities(case["text"]), case["probabilities"], atol=1e-5)


def test_classifier_predictions(classifier: QuestionClassifier) -> None:
    assert len(classifier.classes) == 11
    top = classifier.predict("高血压吃什么药好，血压150/95", top=3)
    assert len(top) == 3
    assert top[0][0] == "心血管科"
    assert top[0][1] >= top[1][1] >= top[2][1]
    assert abs(sum(p for _, p in classifier.predict("随便问问", top=11)) - 1.0) < 1e-6


def test_evaluate_departments(tmp_path: Path, classifier: QuestionClassifier) -> None:
    rows = [
        {"department": "心血管科", "title": "高血压怎么治疗", "ask": "血压160/100，头晕"},
        {"department": "肝病科", "title": "乙肝大三阳", "ask": "乙肝大三阳要抗病毒治疗吗"},
        {"department": "内分泌科", "title": "血糖高", "ask": "空腹血糖8.5，是糖尿病吗"},
        {"department": "肝病科", "title": "肝硬化腹水", "ask": "肝硬化腹水怎么办"},
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    result = evaluate_departments(path)
    assert result["n"] == 4
    assert result["top1"] >= 0.75
    assert result["top3"] >= result["top1"]
    assert result["majority_baseline"] == 0.5  # 肝病科 is the training majority class
