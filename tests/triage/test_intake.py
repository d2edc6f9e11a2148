"""Free-text symptom recognition: negation, uncertainty, scope, synonyms, spans."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tianfu.triage.intake import SymptomMention, SymptomRecogniser, load_synonym_table

# Symptom names of the benchmarks, inline (tests never read the benchmark files).
DXY = [
    "体重减轻", "厌食", "反胃", "发烧", "口渴", "吐泡泡", "呕吐", "呼吸困难", "咳嗽", "咳痰", "咽部不适",
    "喘气", "大便酸臭", "头痛", "尿少", "打喷嚏", "打嗝", "抽搐", "揉眼睛", "揉鼻子", "放屁", "流口水",
    "流涕", "流鼻血", "淋巴结肿大", "烦躁不安", "疱疹", "皮疹", "盗汗", "稀便", "精神萎靡", "绿便",
    "肚子咕噜叫", "肺部湿啰音", "肺部阴影", "腹痛", "腹胀", "舌苔发白", "蛋花样便", "过敏", "鼻塞",
]  # fmt: skip
MZ10 = [
    "发热", "低热", "高热", "咳嗽", "痰", "咳痰", "鼻流涕", "腹泻", "稀便", "呕吐", "喷嚏", "鼻塞", "哭闹",
    "胸痛",
]  # fmt: skip
SD90 = [
    "Fever", "Cough", "Coryza", "Vomiting", "Sharp chest pain", "Headache", "Dizziness", "Skin rash",
    "Diarrhea", "Chills",
]  # fmt: skip
MDD = [
    "Fever", "Cough", "Runny nose", "Vomiting", "Diarrhea", "Stomach ache", "Nausea", "Sneeze",
    "Chills and fever",
]  # fmt: skip


@pytest.fixture(scope="module")
def dxy() -> SymptomRecogniser:
    return SymptomRecogniser.for_vocabulary([*DXY, "胸痛"])


@pytest.fixture(scope="module")
def mz10() -> SymptomRecogniser:
    return SymptomRecogniser.for_vocabulary(MZ10)


@pytest.fixture(scope="module")
def sd90() -> SymptomRecogniser:
    return SymptomRecogniser.for_vocabulary(SD90)


@pytest.fixture(scope="module")
def mdd() -> SymptomRecogniser:
    return SymptomRecogniser.for_vocabulary(MDD)


def statuses(recogniser: SymptomRecogniser, text: str) -> dict[str, str]:
    mentions = recogniser.recognise(text)
    assert_well_formed(text, mentions)
    return {m.symptom: m.status for m in mentions}


def assert_well_formed(text: str, mentions: list[SymptomMention]) -> None:
    for m in mentions:
        assert 0 <= m.start < m.end <= len(text)
        assert text[m.start : m.end] == m.text
        assert m.status in ("present", "absent", "uncertain")
    assert [m.start for m in mentions] == sorted(m.start for m in mentions)
    assert len({m.symptom for m in mentions}) == len(mentions)


def test_chinese_complaint_from_a_parent(dxy: SymptomRecogniser) -> None:
    text = "小儿3岁，一直有点流清鼻涕。偶尔有点咳嗽。没有发烧"
    mentions = dxy.recognise(text)
    assert [(m.symptom, m.status, m.text) for m in mentions] == [
        ("流涕", "present", "流清鼻涕"),
        ("咳嗽", "present", "咳嗽"),
        ("发烧", "absent", "发烧"),
    ]
    assert_well_formed(text, mentions)


def test_english_complaint(mdd: SymptomRecogniser) -> None:
    text = "I have a cough and a runny nose but no fever"
    mentions = mdd.recognise(text)
    assert [(m.symptom, m.status, m.text) for m in mentions] == [
        ("Cough", "present", "cough"),
        ("Runny nose", "present", "runny nose"),
        ("Fever", "absent", "fever"),
    ]


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("没有发烧", "发烧"),
        ("无发热", "发烧"),
        ("不发烧", "发烧"),
        ("不咳", "咳嗽"),
        ("无咳嗽", "咳嗽"),
        ("否认胸痛", "胸痛"),
        ("未见皮疹", "皮疹"),
        ("也没发烧", "发烧"),
        ("没有明显的皮疹", "皮疹"),
        ("发烧没有", "发烧"),
        ("鼻涕已经没有了", "流涕"),
        ("咳嗽不明显", "咳嗽"),
        ("大便不稀", "稀便"),
        ("喉咙不红肿", "咽部不适"),
    ],
)
def test_chinese_negation(dxy: SymptomRecogniser, text: str, symptom: str) -> None:
    assert statuses(dxy, text) == {symptom: "absent"}


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("no fever", "Fever"),
        ("No fever.", "Fever"),
        ("I don't have a fever", "Fever"),
        ("She denies chest pain", "Sharp chest pain"),
        ("Nausea without vomiting", "Vomiting"),
        ("never had any headaches", "Headache"),
        ("the fever is gone", "Fever"),
    ],
)
def test_english_negation(sd90: SymptomRecogniser, text: str, symptom: str) -> None:
    assert statuses(sd90, text)[symptom] == "absent"


@pytest.mark.parametrize(
    "text", ["好像有点发烧", "可能发烧了", "似乎有点发烧", "不确定有没有发烧", "不知道是不是发烧", "怀疑发烧"]
)
def test_chinese_uncertainty(dxy: SymptomRecogniser, text: str) -> None:
    assert statuses(dxy, text) == {"发烧": "uncertain"}


@pytest.mark.parametrize(
    "text", ["maybe a fever", "I think I have a fever", "not sure if I have a fever", "possibly a fever"]
)
def test_english_uncertainty(sd90: SymptomRecogniser, text: str) -> None:
    assert statuses(sd90, text) == {"Fever": "uncertain"}


def test_doubt_about_a_negation_stays_doubt(dxy: SymptomRecogniser) -> None:
    assert statuses(dxy, "好像没有发烧") == {"发烧": "uncertain"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("没有发烧和呕吐", {"发烧": "absent", "呕吐": "absent"}),
        ("没有发烧、咳嗽、流鼻涕", {"发烧": "absent", "咳嗽": "absent", "流涕": "absent"}),
        ("没有发烧，但咳嗽", {"发烧": "absent", "咳嗽": "present"}),
        ("没有发烧但是咳嗽", {"发烧": "absent", "咳嗽": "present"}),
        ("不发烧，咳嗽，打喷嚏", {"发烧": "absent", "咳嗽": "present", "打喷嚏": "present"}),
        ("不发烧也不咳嗽，就是流鼻涕", {"发烧": "absent", "咳嗽": "absent", "流涕": "present"}),
        ("没发现有厌食或发烧的情况", {"厌食": "absent", "发烧": "absent"}),
        ("发烧和咳嗽都没有了", {"发烧": "absent", "咳嗽": "absent"}),
        ("好像有点发烧，还咳嗽", {"发烧": "uncertain", "咳嗽": "present"}),
        # The cue's window: a negator does not reach a symptom past another verb phrase.
        ("没进食总要水喝", {"口渴": "present"}),
    ],
)
def test_chinese_scope(dxy: SymptomRecogniser, text: str, expected: dict[str, str]) -> None:
    assert statuses(dxy, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no fever or cough", {"Fever": "absent", "Cough": "absent"}),
        ("No fever, cough or vomiting.", {"Fever": "absent", "Cough": "absent", "Vomiting": "absent"}),
        ("No fever, cough for three days", {"Fever": "absent", "Cough": "present"}),
        ("Denies fever, chills.", {"Fever": "absent", "Chills": "absent"}),
        ("no fever but a bad cough", {"Fever": "absent", "Cough": "present"}),
        ("no fever. Coughing since Monday", {"Fever": "absent", "Cough": "present"}),
        (
            "I am not sure if I have a fever, but I have a headache",
            {"Fever": "uncertain", "Headache": "present"},
        ),
    ],
)
def test_english_scope(sd90: SymptomRecogniser, text: str, expected: dict[str, str]) -> None:
    assert statuses(sd90, text) == expected


def test_longest_surface_form_wins(dxy: SymptomRecogniser) -> None:
    (mention,) = dxy.recognise("流清鼻涕")
    assert (mention.symptom, mention.text) == ("流涕", "流清鼻涕")
    # 吐泡泡 is its own symptom, not 呕吐 followed by something.
    assert statuses(dxy, "经常吐泡泡") == {"吐泡泡": "present"}
    # A drug name is not a symptom, and it does not leave 烧 behind.
    assert statuses(dxy, "吃了退烧药") == {}
    assert statuses(dxy, "高烧不退") == {"发烧": "present"}
    assert statuses(dxy, "不停地咳嗽") == {"咳嗽": "present"}


def test_english_case_and_inflection(sd90: SymptomRecogniser) -> None:
    for text in ("COUGHING all night", "she coughs", "he coughed twice", "a Cough"):
        assert statuses(sd90, text) == {"Cough": "present"}, text
    assert statuses(sd90, "threw up twice, terrible headaches") == {
        "Vomiting": "present",
        "Headache": "present",
    }
    # Not inside another word.
    assert statuses(sd90, "coughdrop feverfew") == {}


@pytest.mark.parametrize(
    ("text", "dxy_name", "mz10_name"),
    [
        ("低烧", "发烧", "低热"),
        ("高烧", "发烧", "高热"),
        ("拉肚子", "稀便", "腹泻"),
        ("大便稀", "稀便", "稀便"),
        ("流鼻涕", "流涕", "鼻流涕"),
        ("打喷嚏", "打喷嚏", "喷嚏"),
        ("哭闹", "烦躁不安", "哭闹"),
        ("有痰", "咳痰", "咳痰"),
    ],
)
def test_one_table_serves_several_vocabularies(
    dxy: SymptomRecogniser, mz10: SymptomRecogniser, text: str, dxy_name: str, mz10_name: str
) -> None:
    assert statuses(dxy, text) == {dxy_name: "present"}
    assert statuses(mz10, text) == {mz10_name: "present"}


def test_vocabulary_names_map_to_themselves(mz10: SymptomRecogniser) -> None:
    # 痰 and 咳痰 are two names of MZ-10; each stays itself.
    assert statuses(mz10, "痰") == {"痰": "present"}
    assert statuses(mz10, "咳痰") == {"咳痰": "present"}


def test_english_synonyms_resolve_per_vocabulary(sd90: SymptomRecogniser, mdd: SymptomRecogniser) -> None:
    assert statuses(mdd, "runny nose") == {"Runny nose": "present"}
    assert statuses(sd90, "runny nose") == {"Coryza": "present"}
    assert statuses(mdd, "tummy ache and the runs") == {"Stomach ache": "present", "Diarrhea": "present"}
    assert statuses(sd90, "tummy ache") == {}  # SD-90 has no plain abdominal pain in this list


def test_cross_language_concepts(sd90: SymptomRecogniser, dxy: SymptomRecogniser) -> None:
    assert statuses(sd90, "发烧三天，头疼") == {"Fever": "present", "Headache": "present"}
    assert statuses(dxy, "fever and a runny nose") == {"发烧": "present", "流涕": "present"}


def test_temperatures_are_fever(
    dxy: SymptomRecogniser, mz10: SymptomRecogniser, sd90: SymptomRecogniser
) -> None:
    assert statuses(dxy, "最高39.2度") == {"发烧": "present"}
    assert statuses(dxy, "体温36.8度") == {}
    assert statuses(mz10, "37.8℃") == {"低热": "present"}
    assert statuses(sd90, "temperature of 39.5") == {"Fever": "present"}
    assert statuses(sd90, "102 F since last night") == {"Fever": "present"}


def test_one_mention_per_symptom(dxy: SymptomRecogniser) -> None:
    # Present anywhere wins: the fever happened in this episode.
    text = "昨天发烧，今天不烧了"
    (fever,) = dxy.recognise(text)
    assert (fever.status, fever.start) == ("present", 2)
    assert [m.status for m in dxy.recognise_all(text)] == ["present", "absent"]
    # Otherwise the last statement wins.
    assert statuses(dxy, "好像有点发烧，量了体温，没有发烧") == {"发烧": "absent"}
    assert statuses(dxy, "没有发烧。可能有点发烧") == {"发烧": "uncertain"}


def test_spans_index_the_original_text(dxy: SymptomRecogniser, sd90: SymptomRecogniser) -> None:
    text = "ＣＯＵＧＨ，孩子ＩＳ发烧３９度，\u0130 流清鼻涕"  # full-width letters, digits and punctuation
    assert_well_formed(text, dxy.recognise(text))
    assert_well_formed(text, sd90.recognise(text))
    assert {m.text for m in dxy.recognise(text)} == {"ＣＯＵＧＨ", "发烧", "流清鼻涕"}


@pytest.mark.parametrize(
    "text", ["", " ", "你好医生，请问怎么办？", "Hello doctor, what should I do?", "12345"]
)
def test_nothing_to_find(dxy: SymptomRecogniser, sd90: SymptomRecogniser, text: str) -> None:
    assert dxy.recognise(text) == []
    assert sd90.recognise(text) == []
    assert dxy.recognise_all(text) == []


def test_explicit_synonyms() -> None:
    recogniser = SymptomRecogniser(["fever", "咳嗽"], {"fever": ["pyrexia", "re:体温(?P<neg>不)?高"]})
    assert statuses(recogniser, "Pyrexia and 咳嗽") == {"fever": "present", "咳嗽": "present"}
    assert statuses(recogniser, "体温不高") == {"fever": "absent"}
    with pytest.raises(ValueError, match="not in the vocabulary"):
        SymptomRecogniser(["fever"], {"cough": ["coughing"]})


def test_vocabulary_without_table_entries() -> None:
    recogniser = SymptomRecogniser.for_vocabulary(["罕见症状甲"])
    assert statuses(recogniser, "没有罕见症状甲，但发烧") == {"罕见症状甲": "absent"}


def test_shipped_table_is_consistent() -> None:
    table = load_synonym_table()
    owner: dict[str, str] = {}
    for concept, names in table.names.items():
        for name in (concept, *names):
            if name.startswith("re:"):
                re.compile(name[3:])
                continue
            key = " ".join(name.lower().split())
            assert owner.setdefault(key, concept) == concept, f"{name!r} in {owner[key]} and {concept}"
    for concept, fallbacks in table.fallbacks.items():
        assert concept in table.names
        assert all(f in table.names for f in fallbacks)
    # Every DXY and MZ-10 name above belongs to a concept of the table.
    concept_of = table.concept_of()
    assert all(" ".join(name.lower().split()) in concept_of for name in DXY + MZ10)
    resolved = table.resolve(DXY)
    assert resolved["发烧"][:2] == ["发热", "发烧"]  # the concept, then its names in table order


_WORDS = [
    "发烧", "没有", "不", "咳嗽", "，", "但", "好像", "no ", "fever", " or ", "cough", "。", "流清鼻涕", "…",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(_WORDS)), max_size=30).map("".join))
def test_arbitrary_text_never_breaks(text: str) -> None:
    recognisers = _hypothesis_recognisers()
    for recogniser in recognisers:
        assert_well_formed(text, recogniser.recognise(text))
        for m in recogniser.recognise_all(text):
            assert text[m.start : m.end] == m.text


_CACHE: list[SymptomRecogniser] = []


def _hypothesis_recognisers() -> list[SymptomRecogniser]:
    # Hypothesis forbids function-scoped fixtures in @given tests; build once here instead.
    if not _CACHE:
        _CACHE.extend(SymptomRecogniser.for_vocabulary(v) for v in (DXY, SD90))
    return _CACHE
