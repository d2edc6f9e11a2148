"""Build the department-routing knowledge and train the question classifier shipped in ``tianfu/triage``.

    .venv/bin/python training/triage/train_departments.py \\
        --toyhom /work/shared/data/triage/toyhom-im/train.jsonl \\
        --cmekg /work/shared/data/knowledge/cmekg/cmekg_diseases.json \\
        --benchmarks /work/shared/data/triage \\
        --out src/tianfu/triage

Steps (deterministic: hash-based splits, fixed seeds):

1. **Knowledge.** Every CMeKG disease with symptoms and a department → normalised department codes
   (``knowledge/cmekg_department_map.csv``; 妇产科 split into 妇科/产科 by the disease name), its
   symptoms split and normalised, population flags from 多发群体 → ``knowledge/cmekg_symptom_departments
   .json.gz``. Symptom profiles of the benchmark diseases (share of training cases reporting each symptom)
   → ``knowledge/disease_department_symptoms.json``.
2. **Routing validation.** CMeKG diseases are split by a hash of their name: 10 % validation, 10 %
   development, 80 % knowledge. Router settings are tuned on the development part (knowledge = the 80 %),
   then the validation part is scored with knowledge = everything else (symptom set → the disease's
   department; top-1/top-3). The shipped file holds all diseases.
3. **Question classifier.** Character 1–3-gram TF-IDF of ``title + ask`` + multinomial logistic regression
   on Toyhom's internal-medicine questions; C and the class weighting chosen by 5-fold stratified CV
   (top-1 accuracy); CV top-1/top-3 mean ± sd and the majority baseline reported. The final model is fit on
   all questions, exported to numpy (``models/department-classifier.npz`` + ``.json``) with a self-check:
   numpy serving must reproduce scikit-learn's probabilities on fixed texts to 1e-6, and those expected
   probabilities are stored for the test suite. Free-text routing (router ``text=``) is scored on the
   same held-out folds, with and without the classifier.

Needs scikit-learn (training only). Prints one JSON object with every number and writes it to
``knowledge/department_routing_metrics.json``; the model card ``models/department-classifier.md`` and
``knowledge/departments.README.md`` quote those numbers.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tianfu.triage import departments as dep
from tianfu.triage.departments import (
    DepartmentRouter,
    KnowledgeDisease,
    QuestionClassifier,
    RouterParams,
    normalise_cmekg_label,
    normalise_symptom,
    outpatient_code,
    population_flags,
    prepare_text,
    split_symptoms,
)

SEED = 20240
VERSION = "1.0.0"
BENCHMARKS = ["dxy", "mz4-acl2018", "mz4-1733", "mz10", "sd90", "mdd"]
OBSTETRIC = ("妊娠", "产", "胎", "孕", "分娩", "羊水", "哺乳", "乳汁", "脐")
PROFILE_MIN_SHARE = 0.05
PROFILE_MAX_SYMPTOMS = 40
SELF_CHECK_TEXTS = [
    "高血压该怎么治疗？最近头晕，血压160/100",
    "乙肝小三阳，转氨酶升高，需要抗病毒吗",
    "胃痛，反酸，吃完饭肚子胀",
    "经常头痛失眠，记忆力下降",
    "血糖高，口渴多尿，是糖尿病吗",
    "咳嗽咳痰两周，有点发烧",
    "蛋白尿，腿肿，肌酐偏高",
    "贫血，血小板减少怎么办",
    "关节肿痛，晨僵，类风湿因子阳性",
    "",
    "hello doctor 我的孩子发烧了",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bucket(name: str) -> int:
    """A stable 0–99 bucket of a disease name (the hold-out split)."""
    return int(hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:8], 16) % 100


# --------------------------------------------------------------------------------------------
# 1. Knowledge
# --------------------------------------------------------------------------------------------
def cmekg_codes(item: dict[str, Any]) -> list[str]:
    codes: list[str] = []
    for label in item.get("就诊科室", []):
        mapped = normalise_cmekg_label(label)
        if not mapped:
            raise SystemExit(f"CMeKG label {label!r} is not in cmekg_department_map.csv")
        codes.extend(c for c in mapped if c not in codes)
    if "gyn" in codes and "obst" in codes:
        # 妇产科 is two clinics here: obstetric diseases by name, the rest gynaecological.
        codes.remove("gyn" if any(k in item["name"] for k in OBSTETRIC) else "obst")
    return codes


def build_cmekg(path: Path) -> tuple[list[KnowledgeDisease], dict[str, Any]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: list[KnowledgeDisease] = []
    seen: set[str] = set()
    for item in raw:
        if not item.get("就诊科室"):
            continue
        name = item["name"].strip()
        if name in seen:
            continue
        seen.add(name)
        codes = cmekg_codes(item)
        symptoms: list[str] = []
        for entry in item.get("常见症状", []):
            symptoms.extend(s for s in split_symptoms(entry) if s not in symptoms)
        en = (item.get("英文名称") or [""])[0].strip()
        aliases = tuple(a.strip() for a in item.get("别称", []) if 2 <= len(a.strip()) <= 20)
        flags = population_flags(name, item.get("多发群体", []), codes)
        weights = (1.0,) * len(symptoms)
        out.append(
            KnowledgeDisease(name, tuple(codes), tuple(symptoms), weights, flags, en, "cmekg", aliases)
        )
    stats = {
        "cmekg_records": len(raw),
        "diseases_with_department": len(out),
        "diseases_with_symptoms_and_department": sum(bool(d.symptoms) for d in out),
        "symptom_vocabulary": len({s for d in out for s in d.symptoms}),
        "symptom_links": sum(len(d.symptoms) for d in out),
        "two_departments": sum(len(d.codes) > 1 for d in out),
    }
    return out, stats


def write_cmekg(diseases: list[KnowledgeDisease], path: Path) -> None:
    vocab: dict[str, int] = {}
    rows = []
    for d in diseases:
        idx = [vocab.setdefault(s, len(vocab)) for s in d.symptoms]
        rows.append([d.name, ";".join(d.codes), idx, d.flags, d.name_en, list(d.aliases)])
    doc = {
        "format": 1,
        "source": "CMeKG (Chinese Medical Knowledge Graph) as shipped in PyPI PyCMeKG 0.2.5 (MIT per the "
        "package; upstream says academic use); diseases with 常见症状 and 就诊科室",
        "built_by": "training/triage/train_departments.py",
        "fields": [
            "name",
            "department codes (;)",
            "symptom indices (empty: the disease is there for name look-up only)",
            "population flags (see tianfu.triage.departments.population_flags)",
            "English name",
            "aliases (别称)",
        ],
        "symptoms": list(vocab),
        "diseases": rows,
    }
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # mtime=0 so the same knowledge gives the same bytes.
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def build_profiles(bench_dir: Path, table: dict[str, tuple[str, ...]]) -> dict[str, dict[str, float]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    n_cases: Counter[str] = Counter()
    for name in BENCHMARKS:
        path = bench_dir / name / "train.json"
        if not path.exists():
            log(f"no {path}: skipped")
            continue
        for case in json.loads(path.read_text(encoding="utf-8")):
            if case.get("split", "train") != "train":
                continue  # the published validation split stays unseen
            disease = case["disease"]
            n_cases[disease] += 1
            present = {
                normalise_symptom(s) for part in ("explicit", "implicit") for s, v in case[part].items() if v
            }
            counts[disease].update(present)
    profiles: dict[str, dict[str, float]] = {}
    for disease in sorted(counts):
        if disease not in table:
            raise SystemExit(f"benchmark disease {disease!r} is not in disease_departments.csv")
        shares = sorted(
            ((s, c / n_cases[disease]) for s, c in counts[disease].items()), key=lambda x: (-x[1], x[0])
        )
        kept = [(s, round(v, 3)) for s, v in shares if v >= PROFILE_MIN_SHARE][:PROFILE_MAX_SYMPTOMS]
        profiles[disease] = dict(kept)
    return profiles


# --------------------------------------------------------------------------------------------
# 2. Routing validation
# --------------------------------------------------------------------------------------------
def truth_codes(d: KnowledgeDisease) -> set[str]:
    return {outpatient_code(c) for c in d.codes}


def route_accuracy(router: DepartmentRouter, queries: list[KnowledgeDisease]) -> dict[str, Any]:
    top1 = top3 = 0
    per_dept: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for d in queries:
        ranked = [s.department.code for s in router.recommend(list(d.symptoms), top=3) if s.score > 0]
        truth = truth_codes(d)
        hit1 = bool(ranked[:1]) and ranked[0] in truth
        top1 += hit1
        top3 += bool(truth & set(ranked))
        for c in truth:
            per_dept[c][0] += 1
            per_dept[c][1] += hit1
    n = len(queries)
    majority = Counter(c for d in queries for c in truth_codes(d)).most_common(1)[0]
    return {
        "n": n,
        "top1": round(top1 / n, 4),
        "top3": round(top3 / n, 4),
        "majority_department": majority[0],
        "majority_baseline": round(majority[1] / n, 4),
        "top1_by_department": {
            c: round(h / t, 3) for c, (t, h) in sorted(per_dept.items(), key=lambda x: -x[1][0])[:12]
        },
    }


# Router tuning: coordinate search (two rounds) from a fixed start, so that the result does not depend on
# the RouterParams defaults in the serving code.
TUNE_START: dict[str, Any] = {
    "idf_power": 1.0,
    "dept_specificity_power": 0.0,
    "top_diseases": 30,
    "sharpness": 8.0,
    "fuzzy_weight": 0.6,
    "containment_weight": 0.0,
}
TUNE_AXES: dict[str, tuple[Any, ...]] = {
    "idf_power": (0.5, 1.0, 1.5),
    "dept_specificity_power": (0.0, 0.5, 1.0),
    "top_diseases": (10, 30, 100),
    "sharpness": (2.0, 4.0, 8.0, 16.0),
    "fuzzy_weight": (0.3, 0.6, 1.0),
    "containment_weight": (0.0, 0.2, 0.5),
}


def tune_router(all_cmekg: list[KnowledgeDisease]) -> tuple[RouterParams, dict[str, Any]]:
    cmekg = [d for d in all_cmekg if d.symptoms]
    val = [d for d in cmekg if bucket(d.name) < 10]
    dev = [d for d in cmekg if 10 <= bucket(d.name) < 20]
    base = [d for d in cmekg if bucket(d.name) >= 20]
    seen: dict[tuple[Any, ...], dict[str, float]] = {}

    def score(setting: dict[str, Any]) -> float:
        key = tuple(setting[k] for k in TUNE_AXES)
        if key not in seen:
            r = route_accuracy(DepartmentRouter(base, RouterParams(**setting), use_classifier=False), dev)
            seen[key] = {"top1": r["top1"], "top3": r["top3"]}
        return seen[key]["top1"] + 0.5 * seen[key]["top3"]

    current = dict(TUNE_START)
    for _round in range(2):
        for axis, values in TUNE_AXES.items():
            current[axis] = max(values, key=lambda v: (score({**current, axis: v}), v == current[axis]))
    params = RouterParams(**current)
    log(f"router params: {params}")
    knowledge = [d for d in cmekg if bucket(d.name) >= 10]
    holdout = route_accuracy(DepartmentRouter(knowledge, params, use_classifier=False), val)
    start = route_accuracy(DepartmentRouter(knowledge, RouterParams(**TUNE_START), use_classifier=False), val)
    report = {
        "split": "sha1(name) % 100: <10 validation, 10–19 development (tuning), ≥20 knowledge",
        "n_validation": len(val),
        "n_development": len(dev),
        "n_knowledge_for_validation": len(knowledge),
        "tuning": "coordinate search, 2 rounds, objective top1 + 0.5·top3 on development",
        "tuning_dev": [dict(zip(TUNE_AXES, k, strict=True)) | v for k, v in seen.items()],
        "chosen_params": asdict(params),
        "validation": holdout,
        "validation_with_start_params": {k: start[k] for k in ("top1", "top3")},
    }
    return params, report


def benchmark_routing(bench_dir: Path, cmekg: list[KnowledgeDisease], params: RouterParams) -> dict[str, Any]:
    """Department accuracy on benchmark cases (their symptoms → the disease's department).

    Profiles are built from cases with an even hash bucket and scored on the odd ones, so no case is
    scored by a profile that contains it.
    """
    table = dep.disease_department_table()
    out: dict[str, Any] = {}
    for name in BENCHMARKS:
        path = bench_dir / name / "train.json"
        if not path.exists():
            continue
        cases = [
            c for c in json.loads(path.read_text(encoding="utf-8")) if c.get("split", "train") == "train"
        ]
        fit = [c for c in cases if bucket(str(c["id"])) % 2 == 0]
        test = [c for c in cases if bucket(str(c["id"])) % 2 == 1][:600]
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        n: Counter[str] = Counter()
        for c in fit:
            n[c["disease"]] += 1
            counts[c["disease"]].update(
                normalise_symptom(s) for part in ("explicit", "implicit") for s, v in c[part].items() if v
            )
        profiles = [
            KnowledgeDisease(
                d,
                table[d],
                tuple(s for s, k in cnt.items() if k / n[d] >= PROFILE_MIN_SHARE),
                tuple(k / n[d] for s, k in cnt.items() if k / n[d] >= PROFILE_MIN_SHARE),
                population_flags(d, (), table[d]),
                "",
                "benchmark",
            )
            for d, cnt in counts.items()
        ]
        res = {}
        for label, know in (("cmekg_only", cmekg), ("cmekg_and_profiles", cmekg + profiles)):
            router = DepartmentRouter(know, params, use_classifier=False)
            top1 = top1_explicit = 0
            for c in test:
                truth = {outpatient_code(x) for x in table[c["disease"]]}
                syms = [s for part in ("explicit", "implicit") for s, v in c[part].items() if v]
                ranked = [s.department.code for s in router.recommend(syms, top=1) if s.score > 0]
                top1 += bool(ranked) and ranked[0] in truth
                exp = [s for s, v in c["explicit"].items() if v]
                ranked = [s.department.code for s in router.recommend(exp, top=1) if s.score > 0]
                top1_explicit += bool(ranked) and ranked[0] in truth
            res[label] = {
                "top1_all_symptoms": round(top1 / len(test), 4),
                "top1_explicit_only": round(top1_explicit / len(test), 4),
            }
        out[name] = {"n": len(test), **res}
    return out


# --------------------------------------------------------------------------------------------
# 3. Question classifier
# --------------------------------------------------------------------------------------------
def read_toyhom(path: Path) -> tuple[list[str], list[str], list[str]]:
    texts, labels, titles = [], [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(prepare_text(f"{row['title']} {row['ask']}"))
                labels.append(row["department"])
                titles.append(prepare_text(row["title"]))
    return texts, labels, titles


def make_pipeline(c: float, class_weight: str | None, max_features: int, min_df: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    analyzer="char",
                    ngram_range=(1, 3),
                    lowercase=False,  # prepare_text already lower-cases (and serving does the same)
                    min_df=min_df,
                    max_features=max_features,
                    sublinear_tf=True,
                    dtype=np.float64,
                ),
            ),
            ("lr", LogisticRegression(C=c, class_weight=class_weight, solver="newton-cg", max_iter=1000)),
        ]
    )


def cv_scores(
    texts: list[str], labels: list[str], groups: list[str], cfg: dict[str, Any], folds: int
) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array(labels)
    x = np.array(texts, dtype=object)
    top1, top3, base, macro = [], [], [], []
    # Grouped by title: the ~5 % of questions that repeat a title stay in one fold (no leakage).
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=SEED)
    for tr, te in splitter.split(x, y, groups):
        model = make_pipeline(**cfg).fit(x[tr], y[tr])
        proba = model.predict_proba(x[te])
        classes = model.classes_
        order = np.argsort(-proba, axis=1)
        truth = y[te]
        top1.append(float(np.mean(classes[order[:, 0]] == truth)))
        top3.append(float(np.mean([t in classes[o[:3]] for t, o in zip(truth, order, strict=True)])))
        majority = Counter(y[tr]).most_common(1)[0][0]
        base.append(float(np.mean(truth == majority)))
        recalls = [np.mean(classes[order[truth == k, 0]] == k) for k in classes if np.any(truth == k)]
        macro.append(float(np.mean(recalls)))

    def ms(v: list[float]) -> dict[str, float]:
        return {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v, ddof=1)), 4)}

    return {"top1": ms(top1), "top3": ms(top3), "majority_baseline": ms(base), "macro_recall": ms(macro)}


def export_arrays(model: Any) -> tuple[dict[str, np.ndarray], list[str]]:
    """The fitted pipeline as the plain arrays that numpy serving reads."""
    tfidf, lr = model.named_steps["tfidf"], model.named_steps["lr"]
    vocab = sorted(tfidf.vocabulary_, key=tfidf.vocabulary_.get)
    arrays = {
        "vocabulary": np.array(vocab, dtype=f"<U{max(len(t) for t in vocab)}"),
        "idf": tfidf.idf_.astype(np.float32),
        "coef": lr.coef_.astype(np.float32),
        "intercept": lr.intercept_.astype(np.float32),
    }
    return arrays, [str(c) for c in lr.classes_]


def text_routing_cv(
    texts: list[str],
    labels: list[str],
    titles: list[str],
    cfg: dict[str, Any],
    folds: int,
    knowledge: list[KnowledgeDisease],
    params: RouterParams,
) -> dict[str, Any]:
    """Department accuracy of free-text routing (router ``text=``) on held-out folds.

    Truth: the Toyhom label's department (``department_toyhom_map.csv``). Three variants: the fold's
    classifier alone, the router with that classifier (knowledge + classifier), the router without it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    mapping = dep.toyhom_department_map()
    y = np.array(labels)
    x = np.array(texts, dtype=object)
    hits: dict[str, list[int]] = {
        "classifier_only": [],
        "router_with_classifier": [],
        "router_knowledge_only": [],
    }
    no_clf = DepartmentRouter(knowledge, params, use_classifier=False)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=SEED)
    for tr, te in splitter.split(x, y, titles):
        model = make_pipeline(**cfg).fit(x[tr], y[tr])
        arrays, classes = export_arrays(model)
        meta = {"classes": classes, "ngram_range": [1, 3], "sublinear_tf": True, "majority_class": ""}
        clf = QuestionClassifier.from_arrays(arrays, meta)
        router = DepartmentRouter(knowledge, params, classifier=clf)
        for i in te:
            truth = mapping[y[i]]
            hits["classifier_only"].append(mapping[clf.predict(x[i], top=1)[0][0]] == truth)
            hits["router_with_classifier"].append(
                router.recommend([], text=x[i], top=1)[0].department.code == truth
            )
            hits["router_knowledge_only"].append(
                no_clf.recommend([], text=x[i], top=1)[0].department.code == truth
            )
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items()} | {"n": len(texts)}


def train_classifier(
    toyhom: Path, out: Path, folds: int, knowledge: list[KnowledgeDisease], params: RouterParams
) -> dict[str, Any]:
    import sklearn

    texts, labels, titles = read_toyhom(toyhom)
    log(f"toyhom: {len(texts)} questions, {len(set(labels))} classes")
    counts = Counter(labels)
    fixed = {"max_features": 40000, "min_df": 2}
    grid: list[dict[str, Any]] = [
        {"c": c, "class_weight": cw, **fixed} for cw in (None, "balanced") for c in (4.0, 16.0, 64.0, 256.0)
    ]
    results = []
    for cfg in grid:
        t0 = time.time()
        r = cv_scores(texts, labels, titles, cfg, folds)
        results.append({**cfg, **r})
        log(f"cv {cfg}: top1 {r['top1']} top3 {r['top3']} ({time.time() - t0:.0f}s)")
    best = max(results, key=lambda r: (r["top1"]["mean"], r["top3"]["mean"]))
    cfg = {k: best[k] for k in ("c", "class_weight", "max_features", "min_df")}
    # Pruning check: the shipped vocabulary size against accuracy (same C and weighting).
    pruning = []
    for mf in (5000, 10000, 20000):
        r = cv_scores(texts, labels, titles, {**cfg, "max_features": mf}, folds)
        pruning.append({"max_features": mf, "top1": r["top1"], "top3": r["top3"]})
        log(f"pruning {mf}: {r['top1']} {r['top3']}")
    smaller = [p for p in pruning if p["top1"]["mean"] >= best["top1"]["mean"] - 0.002]
    if smaller:
        cfg["max_features"] = min(p["max_features"] for p in smaller)
    final_cv = cv_scores(texts, labels, titles, cfg, folds)
    log(f"final cv {cfg}: {final_cv}")

    text_routing = text_routing_cv(texts, labels, titles, cfg, folds, knowledge, params)
    log(f"text routing cv: {text_routing}")

    model = make_pipeline(**cfg).fit(np.array(texts, dtype=object), np.array(labels))
    arrays, classes = export_arrays(model)
    meta: dict[str, Any] = {
        "name": dep.CLASSIFIER_NAME,
        "version": VERSION,
        "task": "Toyhom internal-medicine question → sub-department (11 labels)",
        "classes": classes,
        "class_counts": {c: counts[c] for c in classes},
        "majority_class": counts.most_common(1)[0][0],
        "ngram_range": [1, 3],
        "analyzer": "char",
        "sublinear_tf": True,
        "preprocessing": "tianfu.triage.departments.prepare_text(title + ' ' + ask): NFKC, lower case, "
        "spaces collapsed",
        "config": cfg,
        "cv": {"folds": folds, "seed": SEED, "grouped_by": "title", **final_cv},
        "text_routing_cv": text_routing,
        "cv_grid": results,
        "pruning": pruning,
        "n_train": len(texts),
        "training": {
            "data": "Toyhom/Chinese-medical-dialogue-data 内科 (MIT), 6,073-question sample",
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }
    # Self-check: numpy serving against scikit-learn; the expected probabilities are kept for the tests.
    clf = QuestionClassifier.from_arrays(arrays, meta)
    expected = model.predict_proba(np.array([prepare_text(t) for t in SELF_CHECK_TEXTS], dtype=object))
    worst = 0.0
    checks = []
    for text, p_sk in zip(SELF_CHECK_TEXTS, expected, strict=True):
        p_np = clf.probabilities(text)
        worst = max(worst, float(np.max(np.abs(p_np - p_sk))))
        checks.append({"text": text, "probabilities": [round(float(v), 8) for v in p_sk]})
    log(f"numpy vs sklearn max |Δp| = {worst:.2e}")
    if worst > 1e-6:
        raise SystemExit(f"numpy serving differs from scikit-learn by {worst}")
    meta["self_check"] = {"max_abs_diff": worst, "cases": checks}
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(models / f"{dep.CLASSIFIER_NAME}.npz", **arrays)  # type: ignore[arg-type]
    (models / f"{dep.CLASSIFIER_NAME}.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    return meta


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toyhom", type=Path, required=True, help="Toyhom internal-medicine train.jsonl")
    ap.add_argument("--cmekg", type=Path, required=True, help="cmekg_diseases.json")
    ap.add_argument(
        "--benchmarks",
        type=Path,
        help="folder of dxy/ mz10/ sd90/ … (default: the Toyhom file's grandparent)",
    )
    ap.add_argument("--out", type=Path, required=True, help="the tianfu/triage package folder")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--skip-classifier", action="store_true", help="knowledge and routing only")
    args = ap.parse_args(argv)
    bench_dir = args.benchmarks or args.toyhom.parent.parent
    knowledge_dir = args.out / "knowledge"
    report: dict[str, Any] = {}

    cmekg, stats = build_cmekg(args.cmekg)
    write_cmekg(cmekg, knowledge_dir / dep.KNOWLEDGE_FILES["cmekg_knowledge"])
    profiles = build_profiles(bench_dir, dep.disease_department_table())
    (knowledge_dir / dep.KNOWLEDGE_FILES["benchmark_profiles"]).write_text(
        json.dumps(
            {
                "source": "share of training cases reporting each symptom (explicit or implicit, True); "
                f"symptoms with share ≥ {PROFILE_MIN_SHARE}, at most {PROFILE_MAX_SYMPTOMS} per disease; "
                "datasets: " + ", ".join(BENCHMARKS),
                "built_by": "training/triage/train_departments.py",
                "diseases": profiles,
            },
            ensure_ascii=False,
            indent=0,
        )
        + "\n",
        encoding="utf-8",
    )
    report["knowledge"] = {
        **stats,
        "benchmark_profiles": len(profiles),
        "bytes": {
            name: (knowledge_dir / name).stat().st_size
            for name in (dep.KNOWLEDGE_FILES["cmekg_knowledge"], dep.KNOWLEDGE_FILES["benchmark_profiles"])
        },
    }
    log(f"knowledge: {report['knowledge']}")

    t0 = time.time()
    params, routing = tune_router(cmekg)
    report["routing_cmekg_holdout"] = routing
    (knowledge_dir / dep.KNOWLEDGE_FILES["router_params"]).write_text(
        json.dumps(
            {
                "tuned_by": "training/triage/train_departments.py on the CMeKG development split",
                "params": asdict(params),
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    log(f"routing hold-out: {routing['validation']} ({time.time() - t0:.0f}s)")
    report["routing_benchmarks"] = benchmark_routing(bench_dir, cmekg, params)

    if not args.skip_classifier:
        shipped = cmekg + dep.load_benchmark_profiles(
            knowledge_dir / dep.KNOWLEDGE_FILES["benchmark_profiles"]
        )
        meta = train_classifier(args.toyhom, args.out, args.folds, shipped, params)
        report["classifier"] = {
            k: meta[k]
            for k in (
                "config",
                "cv",
                "text_routing_cv",
                "pruning",
                "n_train",
                "class_counts",
                "majority_class",
            )
        }
        report["classifier"]["self_check_max_abs_diff"] = meta["self_check"]["max_abs_diff"]
        report["classifier"]["bytes"] = {
            p.name: p.stat().st_size for p in sorted((args.out / "models").glob(f"{dep.CLASSIFIER_NAME}.*"))
        }
    summary = args.out / "knowledge" / "department_routing_metrics.json"
    if args.skip_classifier and summary.exists():
        # Keep the classifier's numbers from the last full run: its files were not touched.
        previous = json.loads(summary.read_text(encoding="utf-8"))
        if "classifier" in previous:
            report["classifier"] = previous["classifier"]
    summary.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
