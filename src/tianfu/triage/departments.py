"""Department routing (科室推荐): which clinic a patient should register at, with the reasons.

Three kinds of evidence, all from files shipped in ``tianfu/triage/knowledge`` and ``tianfu/triage/models``
(nothing is read from the network or from outside the package at run time):

* **conditions** from the inquiry model, ``(disease name, probability)``: a curated benchmark-disease →
  department table (``disease_departments.csv``), falling back to CMeKG's 就诊科室 by disease name;
* **symptoms**: a compact CMeKG disease → symptoms → department knowledge file plus symptom profiles of
  the benchmark diseases. Symptoms are weighted like TF-IDF (a symptom that few diseases share, and that
  points to few departments, says more), each disease is scored by cosine similarity with the
  symptom set, and the best-matching diseases vote for their departments;
* **free text** (optional, when no symptoms are given): symptom and disease names found in the text, and
  the Toyhom internal-medicine question classifier (:class:`QuestionClassifier`), which only splits the
  internal-medicine share among its 11 sub-departments.

CMeKG's 173 raw department labels are normalised to one hospital department list (``departments.csv``)
through ``cmekg_department_map.csv``. A hospital replaces ``departments.csv`` (and re-points the two maps)
with its own list; the codes are the only contract.

Patient facts steer the result: children (age < :data:`PAEDIATRIC_AGE_LIMIT`) go to 儿科 for non-surgical
problems and to 小儿外科 for general-surgical ones; adults are not sent to paediatric clinics; sex
removes clinics that cannot apply (妇科/产科 for men, 男科 for women). Clinics without an outpatient
service (重症医学科, 新生儿科) hand their share to the clinic named in ``refer_to``.

Serving needs numpy and the standard library only; ``training/triage/train_departments.py`` builds the
knowledge files and the classifier and measures both.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# In China 儿科 traditionally sees children under 14 (the 0–14 岁 convention of most general hospitals);
# some children's hospitals and provinces extend it to under 18. A hospital sets its own limit here.
PAEDIATRIC_AGE_LIMIT = 14.0
MIN_SHARE = 0.005  # suggestions below this share of the evidence are not listed

KNOWLEDGE_FILES = {
    "departments": "departments.csv",
    "cmekg_map": "cmekg_department_map.csv",
    "cmekg_knowledge": "cmekg_symptom_departments.json.gz",
    "disease_departments": "disease_departments.csv",
    "benchmark_profiles": "disease_department_symptoms.json",
    "toyhom_map": "department_toyhom_map.csv",
    "router_params": "department_router_params.json",
}
CLASSIFIER_NAME = "department-classifier"

# Departments that a child's problem is moved out of, and where to. Orthopaedics, burns and plastic surgery
# stay (children are seen there, usually in a paediatric sub-clinic); so do the sense-organ clinics,
# dermatology, psychiatry and the emergency department.
_CHILD_SURGICAL_KEEP = frozenset({"ortho", "burns", "plastic"})
_ADULT_REDIRECT = {"peds": "gim", "pedsurg": "gensurg", "neonat": "gim"}
_FEMALE_ONLY = frozenset({"gyn", "obst"})
_MALE_ONLY = frozenset({"androl"})
# A child's gynaecological, obstetric, reproductive or andrological share goes to 儿科 first.
_CHILD_TO_PAEDIATRICS = frozenset({"gyn", "obst", "repro", "androl"})
_INTERNAL_GROUP = "内科"
_NEUTRAL = frozenset({"peds", "fever", "emerg"})
_SURGICAL_GROUP = "外科"

# CMeKG lists these ordinary words among symptoms; in a patient's question they say nothing about the
# department, so free-text reading ignores them.
_STOPWORD_TEXT = """
感觉 工作 关系 轻度 中度 重度 不适 年龄 运动 活动 反复 病史 体检 体检发现 并发症
程度 炎症 神经 饥饿 胃肠 脂肪 消化 腹部 四肢 肝脏 肾脏 数量 查体 点头 发白 情绪
不安 行为 面部 干燥 下腹 口腔 关节 增粗 感染 疼痛 吸烟 饮酒 跑步 受寒 无明显症状
排便 排气 皮肤 肿瘤 出血 溃疡 外伤 病毒 圆形 胸腔 不稳 紧张 结节 囊肿 糜烂 虚弱
全身 颈部 头部 胸部 背部 腰部 时间 妊娠 产后
"""
TEXT_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_SPLIT_RE = re.compile(r"[、，,；;。/]")
_PAREN_RE = re.compile(r"[（(][^（）()]*[）)]")
_SPACE_RE = re.compile(r"\s+")

# Everyday words → the form CMeKG uses, so that a patient's word and the knowledge meet.
SYMPTOM_SYNONYMS: dict[str, str] = {
    "发烧": "发热",
    "高烧": "高热",
    "低烧": "低热",
    "拉肚子": "腹泻",
    "拉稀": "腹泻",
    "流鼻涕": "流涕",
    "鼻流涕": "流涕",
    "流清涕": "流涕",
    "打喷嚏": "喷嚏",
    "喘气": "气喘",
    "头疼": "头痛",
    "肚子痛": "腹痛",
    "肚子疼": "腹痛",
    "嗓子疼": "咽痛",
    "嗓子痛": "咽痛",
    "咽喉痛": "咽痛",
    "喉咙痛": "咽痛",
    "咳血": "咯血",
    "心慌": "心悸",
    "瘙痒": "瘙痒症",
    "皮肤瘙痒": "瘙痒症",
    "痒": "瘙痒症",
    "流口水": "流涎",
    "食欲不佳": "食欲不振",
    "食欲减退": "食欲不振",
    "食欲差": "食欲不振",
    "胃口差": "食欲不振",
    "纳差": "食欲不振",
    "痰": "咳痰",
    "有痰": "咳痰",
    "痰多": "咳痰",
    "精神软": "精神萎靡",
    "精神差": "精神萎靡",
    "关节疼痛": "关节痛",
    "呼吸急促": "气促",
    "喘不过气": "呼吸困难",
    "胸口痛": "胸痛",
    "头昏": "头晕",
    "睡不着": "失眠",
    "睡不着觉": "失眠",
    "睡不好": "失眠",
    "心烦": "烦躁",
    "心里烦": "烦躁",
    "没力气": "乏力",
    "浑身无力": "乏力",
}


# ------------------------------------------------------------------------------------------------------
# Departments
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Department:
    code: str
    name_zh: str
    name_en: str
    group: str
    outpatient: bool = True
    refer_to: str | None = None  # where its patients register when it has no outpatient clinic
    note: str = ""


@dataclass(frozen=True)
class DepartmentSuggestion:
    department: Department
    score: float  # share of the evidence, 0–1; the suggestions of one call sum to at most 1
    reasons_zh: tuple[str, ...]
    reasons_en: tuple[str, ...]


def _knowledge(name: str) -> Traversable:
    return resources.files("tianfu.triage").joinpath("knowledge").joinpath(name)


def _read_csv(name: str) -> list[dict[str, str]]:
    text = _knowledge(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _codes(field_value: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in field_value.split(";") if c.strip())


@lru_cache(maxsize=1)
def _department_index() -> dict[str, Department]:
    out: dict[str, Department] = {}
    for row in _read_csv(KNOWLEDGE_FILES["departments"]):
        code = row["code"].strip()
        if code in out:
            raise ValueError(f"departments.csv: duplicate code {code}")
        out[code] = Department(
            code=code,
            name_zh=row["name_zh"].strip(),
            name_en=row["name_en"].strip(),
            group=row["group"].strip(),
            outpatient=row["outpatient"].strip().lower() in {"true", "1", "yes", "是"},
            refer_to=row.get("refer_to", "").strip() or None,
            note=row.get("note", "").strip(),
        )
    for d in out.values():
        if not d.outpatient and (d.refer_to is None or d.refer_to not in out):
            raise ValueError(f"departments.csv: {d.code} has no outpatient clinic and no valid refer_to")
    return out


def departments() -> list[Department]:
    """The hospital's department list, in file order."""
    return list(_department_index().values())


def department(code: str) -> Department:
    return _department_index()[code]


@lru_cache(maxsize=1)
def _cmekg_label_map() -> dict[str, tuple[str, ...]]:
    return {row["label"]: _codes(row["codes"]) for row in _read_csv(KNOWLEDGE_FILES["cmekg_map"])}


def normalise_cmekg_label(label: str) -> list[str]:
    """Department codes for one raw CMeKG 就诊科室 label; ``[]`` for a label the map does not know.

    Combined labels (``骨科；肿瘤科``) not in the map are split and each part is looked up.
    """
    label = label.strip()
    table = _cmekg_label_map()
    if label in table:
        return list(table[label])
    out: list[str] = []
    for part in re.split(r"[；;]", label):
        for code in table.get(part.strip(), ()):
            if code not in out:
                out.append(code)
    return out


def outpatient_code(code: str) -> str:
    """The clinic a patient registers at for ``code`` (itself, or its ``refer_to`` when it has none)."""
    index = _department_index()
    seen = {code}
    while not index[code].outpatient:
        code = index[code].refer_to or code
        if code in seen:
            break
        seen.add(code)
    return code


# ------------------------------------------------------------------------------------------------------
# Symptom names
# ------------------------------------------------------------------------------------------------------
def normalise_symptom(name: str) -> str:
    """One symptom name in the form the knowledge uses: NFKC, lower case, no trailing 等, synonyms merged."""
    s = unicodedata.normalize("NFKC", name).strip().lower()
    s = _SPACE_RE.sub(" ", s)
    s = _PAREN_RE.sub("", s).strip()
    while s.endswith("等"):
        s = s[:-1].strip()
    s = s.strip(" .。:：!！?？\"'“”‘’")
    s = SYMPTOM_SYNONYMS.get(s, s)
    return _pain_word(s) if "疼" in s else s


def _pain_word(s: str) -> str:
    # Colloquial 疼 and written 痛 mean the same (腹疼 = 腹痛); 疼痛 itself stays.
    return s.replace("疼痛", "\0").replace("疼", "痛").replace("\0", "疼痛")


def split_symptoms(raw: str, max_len: int = 16) -> list[str]:
    """CMeKG symptom entries hold lists (``恶心、呕吐``) and sentences: split, normalise, drop long ones."""
    out: list[str] = []
    for part in _SPLIT_RE.split(unicodedata.normalize("NFKC", raw)):
        s = normalise_symptom(part)
        keep = 2 <= len(s) <= max_len or (len(s) == 1 and not s.isascii())
        if keep and s not in out:
            out.append(s)
    return out


# ------------------------------------------------------------------------------------------------------
# Knowledge
# ------------------------------------------------------------------------------------------------------
# Population flags of a disease, from CMeKG 多发群体 and the disease name: C children, E elderly,
# P pregnancy; F/M sex-specific (female/male organs or clinics), f/m only more common in that sex.
FLAGS = "CEFMPfm"


def population_flags(name: str, groups: Iterable[str], codes: Iterable[str]) -> str:
    """Flags for who a disease affects; used to weigh diseases by the patient's age and sex."""
    text = " ".join(groups)
    code_set = set(codes)
    flags: set[str] = set()
    if re.search(r"儿童|小儿|婴|幼儿|新生儿|早产儿|学龄|男孩|女孩|少儿|患儿", text) or re.match(
        r"(小儿|新生儿|婴儿|婴幼儿|儿童|幼儿|先天性)", name
    ):
        flags.add("C")
    if code_set & {"peds", "neonat", "pedsurg"}:
        flags.add("C")
    if re.search(r"老年|老人", text) or name.startswith("老年"):
        flags.add("E")
    if re.search(r"孕|妊娠|产妇", text) or re.search(r"妊娠|孕|产后|产褥|胎", name):
        flags.add("P")
    if code_set & _FEMALE_ONLY or re.search(
        r"妊娠|孕|产后|产褥|胎盘|子宫|卵巢|阴道|宫颈|月经|外阴|输卵管", name
    ):
        flags.add("F")
    if code_set & _MALE_ONLY or re.search(r"阴茎|睾丸|前列腺|精索|阴囊|包皮|附睾|男性", name):
        flags.add("M")
    female = bool(re.search(r"女|妇|孕|产妇", text))
    male = bool(re.search(r"男", text))
    if female and not male:
        flags.add("f")
    if male and not female:
        flags.add("m")
    return "".join(f for f in FLAGS if f in flags)


@dataclass(frozen=True)
class KnowledgeDisease:
    """One disease of the routing knowledge: its departments and symptoms (weights 0–1)."""

    name: str
    codes: tuple[str, ...]
    symptoms: tuple[str, ...]
    weights: tuple[float, ...]
    flags: str = ""
    name_en: str = ""
    source: str = "cmekg"
    aliases: tuple[str, ...] = ()  # CMeKG 别称, for finding the disease by another name


def load_cmekg_knowledge(path: Traversable | Path | None = None) -> list[KnowledgeDisease]:
    """The compact CMeKG file written by the training script (gzip JSON, symptoms as vocabulary indices)."""
    src = path if path is not None else _knowledge(KNOWLEDGE_FILES["cmekg_knowledge"])
    with src.open("rb") as f:
        raw = json.loads(gzip.decompress(f.read()).decode("utf-8"))
    vocab: list[str] = raw["symptoms"]
    out = []
    for name, codes, sym_idx, flags, name_en, aliases in raw["diseases"]:
        syms = tuple(vocab[i] for i in sym_idx)
        weights = (1.0,) * len(syms)
        out.append(
            KnowledgeDisease(name, _codes(codes), syms, weights, flags, name_en, "cmekg", tuple(aliases))
        )
    return out


@lru_cache(maxsize=1)
def disease_department_table() -> dict[str, tuple[str, ...]]:
    """Curated disease name → department codes (``disease_departments.csv``): the benchmark diseases and
    common conditions that CMeKG lacks or routes unusually."""
    return {row["disease"]: _codes(row["codes"]) for row in _read_csv(KNOWLEDGE_FILES["disease_departments"])}


def load_benchmark_profiles(path: Traversable | Path | None = None) -> list[KnowledgeDisease]:
    """Symptom profiles of the benchmark diseases: share of training cases that report each symptom."""
    src = path if path is not None else _knowledge(KNOWLEDGE_FILES["benchmark_profiles"])
    raw = json.loads(src.read_text(encoding="utf-8"))
    table = disease_department_table()
    out = []
    for name, profile in raw["diseases"].items():
        codes = table[name]
        syms = tuple(profile)
        weights = tuple(float(profile[s]) for s in syms)
        out.append(
            KnowledgeDisease(name, codes, syms, weights, population_flags(name, (), codes), "", "benchmark")
        )
    return out


@lru_cache(maxsize=1)
def toyhom_department_map() -> dict[str, str]:
    """Toyhom internal-medicine labels → department codes."""
    return {row["label"]: row["code"] for row in _read_csv(KNOWLEDGE_FILES["toyhom_map"])}


# ------------------------------------------------------------------------------------------------------
# Free-text question classifier (numpy serving of a scikit-learn TF-IDF + logistic regression)
# ------------------------------------------------------------------------------------------------------
def prepare_text(text: str) -> str:
    """The text normalisation used at training and serving time (sklearn then sees it unchanged)."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def char_ngrams(text: str, min_n: int, max_n: int) -> list[str]:
    """Character n-grams exactly as scikit-learn's ``analyzer="char"`` makes them from prepared text."""
    out: list[str] = []
    n_chars = len(text)
    for n in range(min_n, max_n + 1):
        out.extend(text[i : i + n] for i in range(n_chars - n + 1))
    return out


@dataclass(frozen=True)
class QuestionClassifier:
    """Which internal-medicine sub-department a patient's question belongs to (Toyhom's 11 labels)."""

    classes: tuple[str, ...]
    vocabulary: dict[str, int]
    idf: npt.NDArray[np.float32]
    coef: npt.NDArray[np.float32]  # (classes, features)
    intercept: npt.NDArray[np.float32]
    ngram_range: tuple[int, int]
    sublinear_tf: bool
    majority_class: str
    metadata: Mapping[str, Any]

    @classmethod
    def load(cls) -> QuestionClassifier:
        return _load_classifier()

    @classmethod
    def from_files(cls, npz_path: Path, json_path: Path) -> QuestionClassifier:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = dict(z)
        meta = json.loads(Path(json_path).read_text(encoding="utf-8"))
        return cls.from_arrays(arrays, meta)

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]
    ) -> QuestionClassifier:
        vocab = [str(t) for t in arrays["vocabulary"].tolist()]
        lo, hi = meta["ngram_range"]
        return cls(
            classes=tuple(meta["classes"]),
            vocabulary={t: i for i, t in enumerate(vocab)},
            idf=np.asarray(arrays["idf"], dtype=np.float32),
            coef=np.asarray(arrays["coef"], dtype=np.float32),
            intercept=np.asarray(arrays["intercept"], dtype=np.float32),
            ngram_range=(int(lo), int(hi)),
            sublinear_tf=bool(meta["sublinear_tf"]),
            majority_class=str(meta["majority_class"]),
            metadata=meta,
        )

    def _features(self, text: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        counts: dict[int, int] = defaultdict(int)
        for gram in char_ngrams(prepare_text(text), *self.ngram_range):
            j = self.vocabulary.get(gram)
            if j is not None:
                counts[j] += 1
        if not counts:
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        idx = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear_tf:
            tf = 1.0 + np.log(tf)
        x = tf * self.idf[idx].astype(np.float64)
        norm = float(np.sqrt(np.dot(x, x)))
        return idx, x / norm if norm > 0 else x

    def probabilities(self, text: str) -> npt.NDArray[np.float64]:
        """Class probabilities in ``classes`` order (a softmax of the linear scores, as sklearn's)."""
        idx, x = self._features(text)
        z = self.intercept.astype(np.float64) + self.coef[:, idx].astype(np.float64) @ x
        z -= z.max()
        p = np.exp(z)
        return np.asarray(p / p.sum(), dtype=np.float64)

    def predict(self, text: str, top: int = 3) -> list[tuple[str, float]]:
        """The ``top`` most likely Toyhom department labels with their probabilities."""
        p = self.probabilities(text)
        order = np.argsort(-p, kind="stable")[: max(top, 0)]
        return [(self.classes[i], float(p[i])) for i in order]


@lru_cache(maxsize=1)
def _load_classifier() -> QuestionClassifier:
    base = resources.files("tianfu.triage").joinpath("models")
    with base.joinpath(f"{CLASSIFIER_NAME}.npz").open("rb") as f:
        arrays = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
    meta = json.loads(base.joinpath(f"{CLASSIFIER_NAME}.json").read_text(encoding="utf-8"))
    return QuestionClassifier.from_arrays(arrays, meta)


def evaluate_departments(path: Path, classifier: QuestionClassifier | None = None) -> dict[str, Any]:
    """Top-1/top-3 accuracy of the question classifier on a JSONL of ``{department, title, ask}``.

    ``majority_baseline`` is the accuracy of always answering the training set's majority class.
    """
    clf = classifier if classifier is not None else QuestionClassifier.load()
    n = top1 = top3 = majority = 0
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            truth = row["department"]
            ranked = [
                label for label, _ in clf.predict(f"{row.get('title', '')} {row.get('ask', '')}", top=3)
            ]
            n += 1
            top1 += ranked[:1] == [truth]
            top3 += truth in ranked
            majority += truth == clf.majority_class
    if n == 0:
        return {"n": 0, "top1": 0.0, "top3": 0.0, "majority_baseline": 0.0}
    return {"n": n, "top1": top1 / n, "top3": top3 / n, "majority_baseline": majority / n}


# ------------------------------------------------------------------------------------------------------
# Router
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouterParams:
    """Scoring settings. The shipped router uses the values the training script tuned on a development
    split of CMeKG (``department_router_params.json``); these defaults are the fallback."""

    idf_power: float = 1.5  # weight of disease-level rarity (IDF) of a symptom
    # Weight of how few departments a symptom points to (1 − normalised entropy). Tuning chose 0: on top of
    # IDF it lowered development accuracy (the training script reports the grid).
    dept_specificity_power: float = 0.0
    top_diseases: int = 100  # diseases that vote for departments
    sharpness: float = 8.0  # vote of a disease ∝ exp(sharpness · cosine) − 1
    fuzzy_weight: float = 1.0  # a symptom matched by containment counts this much of an exact match
    containment_weight: float = 0.0  # weight of longer entries containing an exactly matched symptom
    benchmark_weight: float = 1.0  # a benchmark disease profile's vote relative to a CMeKG disease
    text_condition_probability: float = 0.6  # diseases named in free text count as this likely
    classifier_share: float = 0.7  # classifier's say in splitting the internal-medicine share of text
    # With no other evidence, a classifier whose best class is below this probability shares the lead
    # with 全科医学科.
    classifier_unsure: float = 0.5
    # Free text whose knowledge evidence gives at least this share to non-internal specialties (surgery,
    # eyes, skin …) is not treated as an internal-medicine question.
    text_specialist_share: float = 0.6
    # Free text is searched only for symptoms that at least this many diseases share (CMeKG's one-off
    # entries include phrases that match ordinary words of a question).
    text_symptom_min_diseases: int = 3


@dataclass
class _Evidence:
    """Per-department scores and where they came from (for the reason strings)."""

    scores: dict[str, float]
    conditions: dict[str, list[tuple[str, float]]]  # code → [(disease, contribution)]
    symptoms: dict[str, dict[str, float]]  # code → {query symptom: contribution}
    examples: dict[str, list[tuple[str, float]]]  # code → [(knowledge disease, vote)]


class DepartmentRouter:
    """Recommends departments from conditions, symptoms, free text and the patient's age and sex."""

    def __init__(
        self,
        diseases: Sequence[KnowledgeDisease],
        params: RouterParams | None = None,
        classifier: QuestionClassifier | None = None,
        use_classifier: bool = True,
    ) -> None:
        self.params = params or RouterParams()
        self._classifier = classifier
        self._use_classifier = use_classifier
        self._classifier_tried = classifier is not None
        index = _department_index()
        self._dept_codes = list(index)
        self._dept_pos = {c: i for i, c in enumerate(self._dept_codes)}
        known = [d for d in diseases if any(c in index for c in d.codes)]
        self.diseases = [d for d in known if d.symptoms]
        # Name lookups for conditions: the curated table first, then CMeKG by Chinese name, alias and
        # English name (diseases without symptoms count here too).
        self._by_name: dict[str, tuple[str, ...]] = {}
        self._by_en: dict[str, tuple[str, ...]] = {}
        for d in known:
            if d.source == "cmekg":
                self._by_name.setdefault(d.name, d.codes)
                if d.name_en:
                    self._by_en.setdefault(d.name_en.lower(), d.codes)
        alias_count: dict[str, int] = defaultdict(int)
        for d in known:
            for a in set(d.aliases):
                alias_count[a] += 1
                if len(a) >= 2:
                    self._by_name.setdefault(a, d.codes)
        # Aliases safe to look for in free text: three or more characters, naming a single disease.
        self._text_aliases = {a for a, n in alias_count.items() if n == 1 and len(a) >= 3}
        self._cmekg_names = {d.name for d in known if d.source == "cmekg" and len(d.name) >= 2}
        self._build_matrix()
        self._build_lexicon()

    # ---- construction ---------------------------------------------------------------------------------
    @classmethod
    def load(cls) -> DepartmentRouter:
        """The router over the shipped knowledge (cached: the first call reads the files)."""
        return _load_router()

    def _build_matrix(self) -> None:
        p = self.params
        vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, d in enumerate(self.diseases):
            for s, w in zip(d.symptoms, d.weights, strict=True):
                j = vocab.setdefault(s, len(vocab))
                rows.append(i)
                cols.append(j)
                vals.append(w)
        self.vocabulary = vocab
        self._terms = list(vocab)
        n_dis, n_terms, n_dept = len(self.diseases), len(vocab), len(self._dept_codes)
        r = np.asarray(rows, dtype=np.intp)
        c = np.asarray(cols, dtype=np.intp)
        v = np.asarray(vals, dtype=np.float64)
        # Disease → outpatient-department shares (a disease with two departments gives each half).
        share = np.zeros((n_dis, n_dept))
        for i, d in enumerate(self.diseases):
            codes = [outpatient_code(x) for x in d.codes if x in self._dept_pos]
            for x in codes:
                share[i, self._dept_pos[x]] += 1.0 / len(codes)
        self._share = share
        self._source_weight = np.array(
            [p.benchmark_weight if d.source == "benchmark" else 1.0 for d in self.diseases]
        )
        # Rarity of a symptom across diseases, and (when weighted) how many departments it points to.
        df = np.bincount(c, minlength=n_terms).astype(np.float64)
        self._df = df
        idf = np.log((n_dis + 1.0) / (df + 1.0)) + 1.0
        self._term_weight = idf**p.idf_power
        if p.dept_specificity_power:
            term_dept = np.stack(
                [np.bincount(c, weights=share[r, k] * v, minlength=n_terms) for k in range(n_dept)], axis=1
            )
            prob = term_dept / np.maximum(term_dept.sum(axis=1, keepdims=True), 1e-12)
            plogp = np.where(prob > 0, prob * np.log(np.where(prob > 0, prob, 1.0)), 0.0)
            spec = 1.0 + plogp.sum(axis=1) / math.log(max(n_dept, 2))
            self._term_weight = self._term_weight * (0.1 + 0.9 * spec) ** p.dept_specificity_power
        # Postings by term; disease vector norms under the term weights (for cosine similarity).
        order = np.lexsort((r, c))
        self._post_dis = r[order]
        self._post_val = v[order]
        self._post_ptr = np.concatenate(([0], np.cumsum(np.bincount(c, minlength=n_terms))))
        wv = v * self._term_weight[c]
        self._dis_norm = np.sqrt(np.bincount(r, weights=wv * wv, minlength=n_dis))
        flags = [d.flags for d in self.diseases]
        self._flag = {f: np.array([f in x for x in flags]) for f in FLAGS}

    def _build_lexicon(self) -> None:
        self._max_term_len = max((len(t) for t in self._terms), default=1)
        self._bigram_index: dict[str, set[int]] | None = None
        self._text_names: tuple[set[str], set[str]] | None = None

    @property
    def _bigrams(self) -> dict[str, set[int]]:
        # Character-bigram index of the vocabulary, to find terms that contain a query symptom. Built on
        # first use, so that loading stays fast for callers that give exact symptom names.
        if self._bigram_index is None:
            bigrams: dict[str, set[int]] = defaultdict(set)
            for j, t in enumerate(self._terms):
                if not t.isascii():
                    for k in range(len(t) - 1):
                        bigrams[t[k : k + 2]].add(j)
            self._bigram_index = dict(bigrams)
        return self._bigram_index

    @property
    def _text_lexicon(self) -> tuple[set[str], set[str]]:
        # Names findable in free text: symptoms and disease names of two or more characters.
        if self._text_names is None:
            min_df = self.params.text_symptom_min_diseases
            symptoms = {
                t for t, n in zip(self._terms, self._df.tolist(), strict=True) if len(t) >= 2 and n >= min_df
            }
            symptoms = {t for t in symptoms if not t.isascii() and t not in TEXT_STOPWORDS}
            symptoms.update(SYMPTOM_SYNONYMS)  # everyday words, one-character ones (痒) included
            # A name that is also a common symptom (反胃, 眩晕) is read as the symptom, unless curated.
            diseases = (self._cmekg_names | self._text_aliases) - symptoms
            diseases.update(n for n in disease_department_table() if not n.isascii())
            self._text_names = (symptoms, diseases)
        return self._text_names

    # ---- symptom matching -----------------------------------------------------------------------------
    def match_symptom(self, name: str) -> list[tuple[int, float]]:
        """Vocabulary terms for a query symptom: the exact term, else terms it contains or that contain it."""
        s = normalise_symptom(name)
        j = self.vocabulary.get(s)
        chinese = bool(s) and not s.isascii()
        if j is not None:
            cw = self.params.containment_weight
            if cw <= 0 or not chinese:
                return [(j, 1.0)]
            # Longer entries that contain the exact term (右下腹痛 → 转移性右下腹痛) count a little too.
            wider = sorted(self._containing(s).items(), key=lambda kv: (-kv[1], kv[0]))
            return [(j, 1.0), *[(jj, cw * w) for jj, w in wider if jj != j][:4]]
        if not chinese:
            return []
        fw = self.params.fuzzy_weight
        found: dict[int, float] = {}
        # Terms inside the query (反复咳嗽 → 咳嗽).
        for n in range(min(len(s) - 1, self._max_term_len), 1, -1):
            for k in range(len(s) - n + 1):
                jj = self.vocabulary.get(s[k : k + n])
                if jj is not None:
                    found[jj] = max(found.get(jj, 0.0), fw * n / len(s))
        # Terms that contain the query (咳嗽 → 咳嗽咳痰).
        for jj, w in self._containing(s).items():
            found[jj] = max(found.get(jj, 0.0), fw * w)
        # A few best matches only, so a short query does not spread over dozens of sentences.
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:8]

    def _containing(self, s: str) -> dict[int, float]:
        """Vocabulary terms that contain ``s``, weighted len(s)/len(term); found through shared bigrams."""
        if len(s) < 2:
            return {}
        cands: set[int] | None = None
        for k in range(len(s) - 1):
            ids = self._bigrams.get(s[k : k + 2], set())
            cands = set(ids) if cands is None else cands & ids
            if not cands:
                return {}
        return {jj: len(s) / len(self._terms[jj]) for jj in sorted(cands or ()) if s in self._terms[jj]}

    def find_in_text(self, text: str) -> tuple[list[str], list[str]]:
        """Symptom and disease names mentioned in free text (longest match first, no overlaps)."""
        t = _pain_word(unicodedata.normalize("NFKC", text).lower())
        text_symptoms, text_diseases = self._text_lexicon
        symptoms: list[str] = []
        diseases: list[str] = []
        i, longest = 0, max(self._max_term_len, 12)
        while i < len(t):
            hit = 0
            for n in range(min(longest, len(t) - i), 0, -1):
                piece = t[i : i + n]
                if piece in text_diseases:
                    if piece not in diseases:
                        diseases.append(piece)
                    hit = n
                    break
                if piece in text_symptoms:
                    s = normalise_symptom(piece)
                    if s not in symptoms:
                        symptoms.append(s)
                    hit = n
                    break
            i += hit or 1
        return symptoms, diseases

    # ---- evidence -------------------------------------------------------------------------------------
    def _disease_prior(self, age_years: float | None, sex: str | None) -> npt.NDArray[np.float64]:
        # Multipliers, not filters: 多发群体 says "more common in", rarely "only in".
        prior = self._source_weight.copy()
        f = self._flag
        if age_years is not None:
            if age_years < PAEDIATRIC_AGE_LIMIT:
                prior *= np.where(f["C"], 3.0, 1.0) * np.where(f["E"], 0.3, 1.0) * np.where(f["P"], 0.05, 1.0)
                # Diseases of the adult reproductive organs are rare in children.
                prior *= np.where((f["F"] | f["M"]) & ~f["C"], 0.2, 1.0)
            else:
                prior *= np.where(f["C"] & ~f["E"], 0.3, 1.0)
                if age_years >= 60:
                    prior *= np.where(f["E"], 1.5, 1.0)
        if sex == "M":
            prior *= (
                np.where(f["F"] & ~f["M"], 0.02, 1.0)
                * np.where(f["f"], 0.7, 1.0)
                * np.where(f["m"], 1.3, 1.0)
            )
        elif sex == "F":
            prior *= (
                np.where(f["M"] & ~f["F"], 0.02, 1.0)
                * np.where(f["m"], 0.7, 1.0)
                * np.where(f["f"], 1.3, 1.0)
            )
        return prior

    def _symptom_evidence(
        self, symptoms: Sequence[str], prior: npt.NDArray[np.float64]
    ) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, list[tuple[str, float]]]]:
        p = self.params
        n_dis = len(self.diseases)
        query: dict[int, tuple[float, str]] = {}  # term → (match weight, the query symptom it came from)
        for s in symptoms:
            for j, m in self.match_symptom(s):
                if m > query.get(j, (0.0, ""))[0]:
                    query[j] = (m, s)
        if not query:
            return {}, {}, {}
        dot = np.zeros(n_dis)
        per_term: list[tuple[int, str, npt.NDArray[np.intp], npt.NDArray[np.float64]]] = []
        q_norm2 = 0.0
        for j, (m, s) in query.items():
            w = self._term_weight[j]
            lo, hi = self._post_ptr[j], self._post_ptr[j + 1]
            ids = self._post_dis[lo:hi]
            contrib = m * w * w * self._post_val[lo:hi]
            np.add.at(dot, ids, contrib)
            per_term.append((j, s, ids, contrib))
            q_norm2 += (m * w) ** 2
        cosine = dot / (np.maximum(self._dis_norm, 1e-12) * math.sqrt(q_norm2))
        k = min(p.top_diseases, int(np.count_nonzero(cosine > 0)))
        if k == 0:
            return {}, {}, {}
        top = np.argpartition(-cosine, k - 1)[:k]
        vote = prior[top] * np.expm1(p.sharpness * cosine[top])
        if vote.sum() <= 0:
            return {}, {}, {}
        vote = vote / vote.sum()
        dept = vote @ self._share[top]
        scores = {self._dept_codes[i]: float(dept[i]) for i in np.flatnonzero(dept > 0)}
        # Reasons: which query symptoms carried each department, and its best-matching diseases.
        vote_of = dict(zip(top.tolist(), vote.tolist(), strict=True))
        in_top = np.zeros(n_dis, dtype=bool)
        in_top[top] = True
        sym_contrib: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for _j, s, ids, contrib in per_term:
            keep = in_top[ids]
            for i, c in zip(ids[keep].tolist(), contrib[keep].tolist(), strict=True):
                for di in np.flatnonzero(self._share[i]):
                    sym_contrib[self._dept_codes[di]][s] += vote_of[i] * self._share[i, di] * c / dot[i]
        examples: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for i in top[np.argsort(-vote, kind="stable")].tolist():
            for di in np.flatnonzero(self._share[i]):
                examples[self._dept_codes[di]].append((self.diseases[i].name, vote_of[i]))
        return scores, {c: dict(v) for c, v in sym_contrib.items()}, dict(examples)

    def condition_codes(self, name: str) -> tuple[str, ...]:
        """Departments for a disease name: curated table, CMeKG name, CMeKG English name, 小儿… → 儿科."""
        table = disease_department_table()
        key = unicodedata.normalize("NFKC", name).strip()
        if key in table:
            return table[key]
        if key in self._by_name:
            return self._by_name[key]
        lowered = key.lower()
        for k, v in table.items():
            if k.lower() == lowered:
                return v
        if lowered in self._by_en:
            return self._by_en[lowered]
        base = re.sub(r"^(急性|慢性|原发性|继发性|特发性)", "", key)
        if base != key and base in self._by_name:
            return self._by_name[base]
        if re.match(r"(小儿|新生儿|婴儿|婴幼儿|儿童)", key):
            return ("peds",)
        return ()

    def _condition_evidence(
        self, conditions: Sequence[tuple[str, float]]
    ) -> tuple[dict[str, float], dict[str, list[tuple[str, float]]], float]:
        scores: dict[str, float] = defaultdict(float)
        sources: dict[str, list[tuple[str, float]]] = defaultdict(list)
        total = best = 0.0
        for name, prob in conditions:
            prob = float(prob)
            codes = [outpatient_code(c) for c in self.condition_codes(name) if c in self._dept_pos]
            if not codes or not prob > 0:
                continue
            total += prob
            best = max(best, prob)
            for c in codes:
                scores[c] += prob / len(codes)
                sources[c].append((name, prob))
        if total <= 0:
            return {}, {}, 0.0
        return {c: v / total for c, v in scores.items()}, dict(sources), min(best, 1.0)

    # ---- recommendation -------------------------------------------------------------------------------
    def recommend(
        self,
        symptoms: Sequence[str],
        conditions: Sequence[tuple[str, float]] = (),
        text: str = "",
        age_years: float | None = None,
        sex: str | None = None,
        top: int = 3,
    ) -> list[DepartmentSuggestion]:
        """Ranked departments with reasons (Chinese and English).

        ``conditions`` dominate when the inquiry model is confident (their weight is √ of the best
        probability); symptoms fill the rest. ``text`` is read only when no symptoms are given. ``sex`` is
        ``"M"``/``"F"`` (``男``/``女`` and ``male``/``female`` are accepted).
        """
        index = _department_index()
        sex = _normalise_sex(sex)
        prior = self._disease_prior(age_years, sex)
        symptoms = [s for s in symptoms if s and s.strip()]
        text_reasons: list[tuple[str, str]] = []
        text_conditions: list[tuple[str, float]] = []
        use_text = bool(text.strip()) and not symptoms
        if use_text:
            found_symptoms, found_diseases = self.find_in_text(text)
            symptoms = found_symptoms
            if found_diseases:
                p_each = self.params.text_condition_probability / len(found_diseases)
                text_conditions = [(d, p_each) for d in found_diseases]
            if found_symptoms:
                text_reasons.append(
                    (
                        "问题中提到症状" + "".join(f"「{s}」" for s in found_symptoms[:5]),
                        "The question mentions " + ", ".join(f"'{s}'" for s in found_symptoms[:5]),
                    )
                )

        mentioned = {name for name, _ in text_conditions} - {name for name, _ in conditions}
        sym_scores, sym_contrib, examples = self._symptom_evidence(symptoms, prior)
        cond_scores, cond_sources, best = self._condition_evidence(list(conditions) + text_conditions)
        # Conditions dominate when the inquiry model is confident: weight √(best probability).
        w_cond = (math.sqrt(best) if sym_scores else 1.0) if cond_scores else 0.0
        scores: dict[str, float] = defaultdict(float)
        for c, v in cond_scores.items():
            scores[c] += w_cond * v
        for c, v in sym_scores.items():
            scores[c] += (1.0 - w_cond) * v

        clf_probs: dict[str, float] = {}
        clf_top: list[tuple[str, float]] = []
        general_reason: tuple[str, str] | None = None
        if use_text:
            clf = self.classifier()
            if clf is not None:
                clf_top = clf.predict(text, top=len(clf.classes))
                mapping = toyhom_department_map()
                for label, prob in clf_top:
                    code = mapping.get(label)
                    if code in index:
                        clf_probs[code] = clf_probs.get(code, 0.0) + prob
                unsure = not scores and clf_top[0][1] < self.params.classifier_unsure
                scores = _split_internal(
                    scores, clf_probs, self.params.classifier_share, self.params.text_specialist_share, index
                )
                if unsure and "gim" in index:
                    # Nothing in the text says which specialty, and the internal-medicine classifier is
                    # unsure too (the question may not be internal medicine at all): 全科 shares the lead.
                    p_max = clf_top[0][1]
                    scores = {c: v * p_max for c, v in scores.items()}
                    scores["gim"] = scores.get("gim", 0.0) + (1.0 - p_max)
                    gim = index["gim"]
                    general_reason = (
                        f"未能确定问题所属专科，可先到{gim.name_zh}",
                        f"The specialty is unclear: {gim.name_en} can see the patient first",
                    )

        scores, adjust_reasons = _apply_patient(dict(scores), age_years, sex, index)
        total = sum(scores.values())
        if total <= 0:
            return [_fallback(age_years, index)][: max(top, 0)]
        # Departments with a negligible share are left out (the list may then be shorter than ``top``).
        floor = MIN_SHARE * total
        ranked = sorted(
            ((c, v) for c, v in scores.items() if v >= floor), key=lambda kv: (-kv[1], self._dept_pos[kv[0]])
        )[: max(top, 0)]
        out = []
        for code, score in ranked:
            dept = index[code]
            zh: list[str] = []
            en: list[str] = []
            for name, prob in sorted(cond_sources.get(code, []), key=lambda x: -x[1])[:2]:
                if name in mentioned:
                    zh.append(f"问题中提到「{name}」，该病通常就诊于{dept.name_zh}")
                    en.append(f"The question mentions '{name}', usually seen in {dept.name_en}")
                else:
                    zh.append(f"可能疾病「{name}」通常就诊于{dept.name_zh}（概率 {prob:.0%}）")
                    en.append(f"Possible condition '{name}' is usually seen in {dept.name_en} ({prob:.0%})")
            contrib = sym_contrib.get(code, {})
            if contrib:
                best_syms = [s for s, _ in sorted(contrib.items(), key=lambda kv: -kv[1])[:3]]
                eg = [n for n, _ in examples.get(code, [])[:2]]
                zh.append(
                    "症状"
                    + "".join(f"「{s}」" for s in best_syms)
                    + f"多见于{dept.name_zh}的疾病"
                    + ("，如" + "".join(f"「{n}」" for n in eg) if eg else "")
                )
                en.append(
                    "Symptoms " + ", ".join(f"'{s}'" for s in best_syms) + f" are common in diseases seen in "
                    f"{dept.name_en}" + (" (e.g. " + ", ".join(f"'{n}'" for n in eg) + ")" if eg else "")
                )
            if code in clf_probs:
                labels = [(lbl, p) for lbl, p in clf_top if toyhom_department_map().get(lbl) == code]
                for lbl, p in labels[:1]:
                    if p < 0.05:
                        continue
                    zh.append(f"问题文本分类为内科「{lbl}」（概率 {p:.0%}）")
                    en.append(f"The question text was classified as internal medicine '{lbl}' ({p:.0%})")
            for rz, re_ in text_reasons:
                if contrib:
                    zh.append(rz)
                    en.append(re_)
            for rz, re_ in adjust_reasons.get(code, []):
                zh.append(rz)
                en.append(re_)
            if general_reason is not None and code == "gim":
                zh.append(general_reason[0])
                en.append(general_reason[1])
            out.append(DepartmentSuggestion(dept, round(score / total, 6), tuple(zh), tuple(en)))
        return out

    def classifier(self) -> QuestionClassifier | None:
        """The shipped question classifier, or ``None`` when it is missing or turned off."""
        if not self._use_classifier:
            return None
        if not self._classifier_tried:
            self._classifier_tried = True
            try:
                self._classifier = QuestionClassifier.load()
            except (FileNotFoundError, KeyError, ValueError, OSError):
                self._classifier = None  # text routing then relies on the names found in the text
        return self._classifier


def _normalise_sex(sex: str | None) -> str | None:
    if sex is None:
        return None
    s = sex.strip().lower()
    if s in {"m", "male", "man", "男", "男性"}:
        return "M"
    if s in {"f", "female", "woman", "女", "女性"}:
        return "F"
    return None


def _split_internal(
    scores: Mapping[str, float],
    clf: Mapping[str, float],
    share: float,
    specialist_share: float,
    index: Mapping[str, Department],
) -> dict[str, float]:
    """Blend the internal-medicine classifier into the knowledge scores of a free-text question.

    The classifier knows only internal medicine. When most of the knowledge evidence points to other
    specialties (surgery, eyes, skin …) the question is not internal medicine and the classifier only
    splits the internal-medicine share; otherwise it splits everything but the specialist share.
    """
    total = sum(scores.values())
    if total <= 0:
        return dict(clf)
    norm = {c: v / total for c, v in scores.items()}

    def internal_like(code: str) -> bool:
        # 儿科, 发热门诊 and 急诊科 are not evidence against internal medicine.
        return index[code].group == _INTERNAL_GROUP or code in _NEUTRAL

    specialist = {c: v for c, v in norm.items() if not internal_like(c)}
    spec_mass = sum(specialist.values())
    if spec_mass >= specialist_share:
        pool = {c: v for c, v in norm.items() if index[c].group == _INTERNAL_GROUP}
        out = {c: v for c, v in norm.items() if c not in pool}
    else:
        pool = {c: v for c, v in norm.items() if internal_like(c)}
        out = dict(specialist)
    mass = sum(pool.values())
    if mass <= 0:
        return out
    for c in set(pool) | set(clf):
        out[c] = out.get(c, 0.0) + mass * (share * clf.get(c, 0.0) + (1.0 - share) * pool.get(c, 0.0) / mass)
    return out


_Reasons = dict[str, list[tuple[str, str]]]


def _apply_patient(
    scores: dict[str, float], age_years: float | None, sex: str | None, index: Mapping[str, Department]
) -> tuple[dict[str, float], _Reasons]:
    """Move shares that the patient's age and sex rule out to the clinic that sees such patients."""
    reasons: _Reasons = defaultdict(list)
    out: dict[str, float] = defaultdict(float)
    limit = f"{PAEDIATRIC_AGE_LIMIT:g}"
    for code, v in scores.items():
        target = code
        if age_years is not None and age_years < PAEDIATRIC_AGE_LIMIT:
            group = index[code].group
            if group == _INTERNAL_GROUP or code == "fever" or code in _CHILD_TO_PAEDIATRICS:
                target = "peds"
            elif group == _SURGICAL_GROUP and code not in _CHILD_SURGICAL_KEEP:
                target = "pedsurg"
        elif age_years is not None:
            target = _ADULT_REDIRECT.get(code, code)
        if (sex == "M" and code in _FEMALE_ONLY) or (sex == "F" and code in _MALE_ONLY):
            continue  # cannot apply to this patient; the rest is renormalised
        if target not in index:
            target = code
        out[target] += v
        if target != code:
            src, dst = index[code], index[target]
            if target == "peds":
                zh = f"患者为儿童（{limit}岁以下），内科等非手术问题由儿科接诊"
                en = (
                    f"The patient is a child (under {limit}): non-surgical problems are seen in {dst.name_en}"
                )
            elif target == "pedsurg":
                zh = f"患者为儿童（{limit}岁以下），外科问题由小儿外科接诊"
                en = f"The patient is a child (under {limit}): surgical problems are seen in {dst.name_en}"
            else:
                zh = f"患者已满{limit}岁，不在{src.name_zh}就诊，改为{dst.name_zh}"
                en = f"The patient is {limit} or older: not {src.name_en} but {dst.name_en}"
            if (zh, en) not in reasons[target]:
                reasons[target].append((zh, en))
    if age_years is not None and age_years < PAEDIATRIC_AGE_LIMIT:
        for code in ("peds", "pedsurg"):
            if code in out and not reasons[code]:
                reasons[code].append(
                    (f"患者为儿童（{limit}岁以下）", f"The patient is a child (under {limit})")
                )
    return dict(out), reasons


def _fallback(age_years: float | None, index: Mapping[str, Department]) -> DepartmentSuggestion:
    code = "peds" if age_years is not None and age_years < PAEDIATRIC_AGE_LIMIT else "gim"
    dept = index[code] if code in index else next(iter(index.values()))
    return DepartmentSuggestion(
        dept,
        0.0,
        (f"未能从所给信息判断科室，建议先到{dept.name_zh}或咨询导诊台",),
        (f"No department could be inferred; start at {dept.name_en} or ask the information desk",),
    )


def load_router_params() -> RouterParams:
    """The settings the training script tuned (``department_router_params.json``), else the defaults."""
    src = _knowledge(KNOWLEDGE_FILES["router_params"])
    if not src.is_file():
        return RouterParams()
    raw = json.loads(src.read_text(encoding="utf-8"))
    known = {f.name for f in fields(RouterParams)}
    return RouterParams(**{k: v for k, v in raw["params"].items() if k in known})


@lru_cache(maxsize=1)
def _load_router() -> DepartmentRouter:
    diseases = load_cmekg_knowledge() + load_benchmark_profiles()
    return DepartmentRouter(diseases, load_router_params())
