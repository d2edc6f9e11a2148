"""Free-text symptom recognition for intake (Chinese and English).

A patient's own words ("小儿3岁，一直有点流清鼻涕。没有发烧", "a cough and a runny nose but no fever")
become symptom mentions normalised to a given vocabulary of canonical names, each marked present,
absent or uncertain.

How it works:

1. One lexicon holds the surface forms of the vocabulary's symptoms and the cue phrases of
   ``knowledge/symptom_cues.csv`` (negation, uncertainty, pseudo-cues such as 退烧药 or "no
   improvement", scope terminators such as 但/but). Text is case-folded and NFKC-folded character by
   character, so spans index the original text. Chinese forms match character by character,
   English forms on stemmed word tokens (cough/coughing/coughs); at every position the longest
   form wins (流清鼻涕 before 鼻涕). Synonyms written ``re:<pattern>`` are regular expressions (gapped
   forms such as 舌苔有一点发白, temperatures such as 39.5度); a named group ``neg`` that takes part in
   the match makes the mention absent (大便不稀).
2. Scope, NegEx-style: text splits into clauses at punctuation; a negation or uncertainty cue
   governs the symptoms that follow it within its clause, the first within the cue's window and
   further ones while they are only joined by connectors (没有发烧和呕吐 negates both, 没有发烧，
   但咳嗽 only the fever). Some cues also look backwards (发烧没有, 咳嗽不明显). In English a
   negated list runs on over commas when the rest of the sentence is only symptoms ("no fever,
   cough or vomiting"); in Chinese a comma ends it (不发烧，咳嗽 is a cough without fever).
3. One mention per symptom: a symptom stated present anywhere is present (it happened in this
   episode, even if it has since gone: 昨天发烧，今天不烧了); otherwise the last statement wins.

Shipped data (``knowledge/``, read once):

- ``symptom_synonyms.csv`` (``canonical,synonym,language,source``): one row per name or surface
  form; the rows sharing a ``canonical`` key are one concept, in order of preference. ``source``
  says where a name comes from: a benchmark's symptom vocabulary (``dxy``, ``mz4``, ``mz10``,
  ``imcs``, ``sd90``, ``mdd``), CMeKG's (``cmekg``), a form seen in the development half of DXY's
  patient texts (``dxy-dev``), or ``manual``.
- ``symptom_fallbacks.csv`` (``concept,fallback``): which concept stands in for another when a
  vocabulary lacks it (低热 → 发热, 腹泻 → 稀便), tried in file order. So one table serves DXY's
  names (发烧, 稀便) and MZ-10's (发热, 低热, 腹泻). A concept that resolves to nothing keeps its
  names as phrases to skip, so 喘憋性肺炎 is not read as 喘憋 in a vocabulary without it.
- ``symptom_cues.csv`` (``cue,language,role,window``): negation and uncertainty cues (``negation``
  and ``uncertainty`` look either way, ``pre_*`` forwards, ``post_*`` backwards), ``pseudo`` cues
  and ``terminator`` words; ``window`` is how many characters (Chinese) or words (English), filler
  words aside, a forward cue reaches to its first symptom.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final, Literal, cast

__all__ = ["Status", "SymptomMention", "SymptomRecogniser", "SynonymTable", "load_synonym_table"]

Status = Literal["present", "absent", "uncertain"]

_PACKAGE: Final = "tianfu.triage"
_SYNONYMS_FILE: Final = "symptom_synonyms.csv"
_FALLBACKS_FILE: Final = "symptom_fallbacks.csv"
_CUES_FILE: Final = "symptom_cues.csv"
_REGEX_PREFIX: Final = "re:"


@dataclass(frozen=True)
class SymptomMention:
    """A recognised symptom: canonical name, status and where it was said."""

    symptom: str
    status: Status
    start: int
    end: int
    text: str


# ---- text normalisation ------------------------------------------------------------------------


class _FoldTable(dict[int, str]):
    """``str.translate`` table folding one character to one character, filled lazily.

    Keeping every character one character long is what lets spans on the folded text index the
    original text.
    """

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        folded = unicodedata.normalize("NFKC", ch).lower()
        if len(folded) != 1:
            lower = ch.lower()
            folded = lower if len(lower) == 1 else ch
        if folded in "‘’′`":  # typographic apostrophes: "don’t" must read as "don't"
            folded = "'"
        self[code] = folded
        return folded


_FOLD: Final = _FoldTable()


def _fold(text: str) -> str:
    if text.isascii():
        return text.lower()
    return text.translate(_FOLD)


def _key(name: str) -> str:
    """Comparison key of a name: folded, whitespace collapsed."""
    return " ".join(_fold(name).split())


_WORD_RE: Final = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
# Between two words of one English form only spaces, hyphens and apostrophes may stand.
_WORD_JOIN_RE: Final = re.compile(r"[\s\-']*")
_BOUNDARY_RE: Final = re.compile(
    r"[,;!?:()\[\]{}|<>\"\n\r\t。【】「」『』《》~…]"
    r"|(?<!\d)\.|\.(?!\d)"
    # A space between two CJK characters separates phrases the way a comma does.
    r"|(?<=[^\x00-\x7f])\s+(?=[^\x00-\x7f\s])"
)
# Forms with any non-ASCII character (Chinese) match by characters, the others by English words.
_NON_ASCII_RE: Final = re.compile(r"[^\x00-\x7f]")


def _stem(word: str) -> str:
    """A light English stemmer: enough for cough/coughs/coughing/coughed and sneeze/sneezing."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("ing") and len(word) > 5:
        word = _undouble(word[:-3])
    elif word.endswith("ed") and len(word) > 4:
        word = _undouble(word[:-2])
    elif word.endswith(("ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def _undouble(word: str) -> str:
    if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "lsz":
        return word[:-1]
    return word


def _stems(text: str) -> tuple[str, ...]:
    return tuple(_stem(m.group()) for m in _WORD_RE.finditer(text))


# ---- lexicon -----------------------------------------------------------------------------------

_Role = Literal[
    "symptom",
    "negation",
    "pre_negation",
    "post_negation",
    "uncertainty",
    "pre_uncertainty",
    "post_uncertainty",
    "pseudo",
    "terminator",
]
_CUE_ROLES: Final = frozenset(
    {
        "negation",
        "pre_negation",
        "post_negation",
        "uncertainty",
        "pre_uncertainty",
        "post_uncertainty",
        "pseudo",
        "terminator",
    }
)
# Cue role -> the status it gives the symptoms it governs, looking forwards (_PRE) or back (_POST).
_PRE: Final[dict[str, Status]] = {
    "negation": "absent",
    "pre_negation": "absent",
    "uncertainty": "uncertain",
    "pre_uncertainty": "uncertain",
}
_POST: Final[dict[str, Status]] = {
    "negation": "absent",
    "post_negation": "absent",
    "uncertainty": "uncertain",
    "post_uncertainty": "uncertain",
}


@dataclass(frozen=True, slots=True)
class _Entry:
    role: _Role
    value: str  # canonical symptom name; the cue text for cues
    window: int  # how far a pre-cue reaches: characters (Chinese cue) or words (English cue)
    words: bool  # an English cue measures its window in words


@dataclass(frozen=True, slots=True)
class _Item:
    start: int
    end: int
    entry: _Entry
    negated: bool  # a ``neg`` group of a pattern took part in the match


@dataclass(frozen=True)
class _Cue:
    text: str
    role: _Role
    window: int


@cache
def _read_csv(name: str) -> tuple[dict[str, str], ...]:
    data = resources.files(_PACKAGE).joinpath("knowledge", name).read_text(encoding="utf-8")
    return tuple(csv.DictReader(io.StringIO(data)))


@cache
def _shipped_cues() -> tuple[_Cue, ...]:
    cues = []
    for row in _read_csv(_CUES_FILE):
        role = row["role"]
        if role not in _CUE_ROLES:
            raise ValueError(f"{_CUES_FILE}: unknown role {role!r} for cue {row['cue']!r}")
        cues.append(_Cue(row["cue"], cast(_Role, role), int(row["window"] or 0)))
    return tuple(cues)


class _Lexicon:
    """Longest-match lookup of symptom forms and cues."""

    def __init__(self) -> None:
        self.chars: dict[str, _Entry] = {}  # folded Chinese/mixed form -> entry
        self.char_lengths: dict[str, list[int]] = {}  # first character -> form lengths, longest first
        self.words: dict[tuple[str, ...], _Entry] = {}  # stemmed English form -> entry
        self.word_lengths: dict[str, list[int]] = {}  # first stem -> form lengths in words, longest first
        self.patterns: list[tuple[re.Pattern[str], _Entry]] = []
        self.start_re: re.Pattern[str] | None = None
        self._priority: dict[str | tuple[str, ...], int] = {}

    def add(self, form: str, entry: _Entry, priority: int, *, literal: bool = False) -> None:
        """Index ``form``; a form already there is replaced only by one of higher priority.

        Unless ``literal``, a form starting ``re:`` is a regular expression."""
        if not literal and form.startswith(_REGEX_PREFIX):
            self.patterns.append((re.compile(form[len(_REGEX_PREFIX) :]), entry))
            return
        key = _key(form)
        if not key:
            return
        if _NON_ASCII_RE.search(key):
            if priority > self._priority.get(key, -1):
                self.chars[key] = entry
                self._priority[key] = priority
            return
        stems = _stems(key)
        if stems and priority > self._priority.get(stems, -1):
            self.words[stems] = entry
            self._priority[stems] = priority

    def freeze(self) -> None:
        char_lengths: dict[str, set[int]] = {}
        for form in self.chars:
            char_lengths.setdefault(form[0], set()).add(len(form))
        self.char_lengths = {c: sorted(v, reverse=True) for c, v in char_lengths.items()}
        # Finds the positions where a Chinese form may start, so the scan skips the others in C.
        self.start_re = re.compile("[" + "".join(re.escape(c) for c in sorted(char_lengths)) + "]")
        word_lengths: dict[str, set[int]] = {}
        for stems in self.words:
            word_lengths.setdefault(stems[0], set()).add(len(stems))
        self.word_lengths = {w: sorted(v, reverse=True) for w, v in word_lengths.items()}


# ---- scope -------------------------------------------------------------------------------------

# What may stand between two symptoms for one cue to govern both (发烧和呕吐, fever or vomiting).
_CONNECTOR_RE: Final = re.compile(
    r"(?:\s|[、/&+]|以及|或者|和|与|及|或|跟|同|等|and|or|nor|any|a|an|the|of)*", re.ASCII
)
# What may stand between a symptom and a cue that looks back at it (发烧已经没有了).
_POST_GAP_RE: Final = re.compile(r"(?:\s|已经|已|都|也|基本|早就|就|现在|目前|倒是|的?症状|的?情况|了)*")
_POST_GAP_WORDS: Final = 3
# Words that do not count against a cue's window: 没有(明显的)发烧, 没发现(有)咳嗽, no (signs of) fever.
_ZH_FILLER_RE: Final = re.compile(
    r"明显的?|任何|什么|出现|发现|看到|感觉到?|觉得|一点|其他|别的|严重的?|真的|几乎|完全|基本|经常|一直|总是?|老是?"
    r"|[再过有太会是曾了的很都也就点啥\s]"
)
_EN_FILLERS: Final = frozenset(
    {
        "a", "an", "any", "the", "have", "has", "had", "having", "been", "got", "get", "gotten", "really",
        "much", "real", "significant", "sign", "signs", "of", "evidence", "symptom", "symptoms", "my", "his",
        "her", "their", "our", "i", "i'm", "is", "are", "was", "were", "it", "it's", "do", "does", "did",
        "feel", "feeling", "felt", "experience", "experienced", "experiencing", "notice", "noticed", "see",
        "seen", "anymore", "more", "further", "new", "at", "all",
    }
)  # fmt: skip


def _words_in(text: str) -> int:
    return sum(1 for _ in _WORD_RE.finditer(text))


def _gap_size(gap: str, words: bool) -> int:
    """How far a symptom is from the cue before it: content words (English) or characters (Chinese)."""
    if words:
        return sum(1 for m in _WORD_RE.finditer(gap) if m.group() not in _EN_FILLERS)
    return len(_ZH_FILLER_RE.sub("", gap))


# ---- synonym table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SynonymTable:
    """Concepts with all their names, and which concept stands in for another."""

    names: Mapping[str, tuple[str, ...]]  # concept -> names and surface forms, preferred first
    fallbacks: Mapping[str, tuple[str, ...]]  # concept -> concepts to try when it is not in a vocabulary

    def concept_of(self) -> dict[str, str]:
        """Key of every literal name -> its concept (the first concept listing it)."""
        out: dict[str, str] = {}
        for concept, names in self.names.items():
            for name in (concept, *names):
                if not name.startswith(_REGEX_PREFIX):
                    out.setdefault(_key(name), concept)
        return out

    def resolve(self, vocabulary: Iterable[str]) -> dict[str, list[str]]:
        """Surface forms of the table for each name of ``vocabulary`` (vocabulary name -> forms).

        A concept resolves to the vocabulary name that belongs to it (the one listed first in the
        table when several do), else to what its fallbacks resolve to; concepts that resolve to
        nothing contribute nothing (see ``unresolved``).
        """
        out: dict[str, list[str]] = {}
        for concept, name in self._targets(vocabulary).items():
            if name is not None:
                out.setdefault(name, []).extend((concept, *self.names[concept]))
        return out

    def unresolved(self, vocabulary: Iterable[str]) -> list[str]:
        """Literal names of the concepts that resolve to nothing in ``vocabulary``."""
        return [
            form
            for concept, name in self._targets(vocabulary).items()
            if name is None
            for form in (concept, *self.names[concept])
            if not form.startswith(_REGEX_PREFIX)
        ]

    def _targets(self, vocabulary: Iterable[str]) -> dict[str, str | None]:
        vocab = list(dict.fromkeys(v for v in vocabulary if v.strip()))
        concept_of = self.concept_of()
        in_vocab: dict[str, list[str]] = {}
        for name in vocab:
            concept = concept_of.get(_key(name))
            if concept is not None:
                in_vocab.setdefault(concept, []).append(name)
        preferred: dict[str, str] = {}
        for concept, members in in_vocab.items():
            rank = {_key(n): i for i, n in enumerate((concept, *self.names.get(concept, ())))}
            preferred[concept] = min(members, key=lambda n: rank.get(_key(n), len(rank)))

        resolved: dict[str, str | None] = {}

        def target(concept: str, seen: frozenset[str]) -> str | None:
            if concept in resolved:
                return resolved[concept]
            found = preferred.get(concept)
            if found is None:
                for fallback in self.fallbacks.get(concept, ()):
                    if fallback not in seen:
                        found = target(fallback, seen | {concept})
                        if found is not None:
                            break
            if not seen:  # only a top-level answer is final; nested ones depend on the path
                resolved[concept] = found
            return found

        return {concept: target(concept, frozenset()) for concept in self.names}


@cache
def load_synonym_table() -> SynonymTable:
    """The shipped table: ``knowledge/symptom_synonyms.csv`` and ``knowledge/symptom_fallbacks.csv``."""
    names: dict[str, list[str]] = {}
    for row in _read_csv(_SYNONYMS_FILE):
        forms = names.setdefault(row["canonical"], [])
        if row["synonym"] != row["canonical"]:
            forms.append(row["synonym"])
    fallbacks: dict[str, list[str]] = {}
    for row in _read_csv(_FALLBACKS_FILE):
        fallbacks.setdefault(row["concept"], []).append(row["fallback"])
    return SynonymTable(
        names={c: tuple(f) for c, f in names.items()},
        fallbacks={c: tuple(f) for c, f in fallbacks.items()},
    )


# ---- recogniser --------------------------------------------------------------------------------


class SymptomRecogniser:
    """Recognise the symptoms of ``vocabulary`` in free text, with negation and uncertainty.

    ``synonyms`` maps a vocabulary name to further surface forms of it (``re:`` marks a regular
    expression on the case-folded text). Every vocabulary name is a surface form of itself and wins
    over a synonym spelled the same. Build once, reuse: construction indexes every form.
    """

    def __init__(
        self,
        vocabulary: Iterable[str],
        synonyms: Mapping[str, Iterable[str]] | None = None,
        *,
        ignore: Iterable[str] = (),
    ) -> None:
        """``ignore``: phrases that name no symptom of this vocabulary (a disease it lacks, say
        喘憋性肺炎); they are consumed so that no shorter form inside them is matched."""
        self.vocabulary: tuple[str, ...] = tuple(dict.fromkeys(v for v in vocabulary if v.strip()))
        known = set(self.vocabulary)
        lexicon = _Lexicon()
        # Priorities: a vocabulary name beats a synonym, which beats a cue or an ignored phrase.
        for cue in _shipped_cues():
            lexicon.add(
                cue.text, _Entry(cue.role, cue.text, cue.window, not _NON_ASCII_RE.search(cue.text)), 0
            )
        for phrase in ignore:
            if not phrase.startswith(_REGEX_PREFIX):
                lexicon.add(phrase, _Entry("pseudo", phrase, 0, not _NON_ASCII_RE.search(phrase)), 0)
        for canonical, forms in (synonyms or {}).items():
            if canonical not in known:
                raise ValueError(f"synonyms name {canonical!r}, which is not in the vocabulary")
            entry = _Entry("symptom", canonical, 0, False)
            for form in forms:
                lexicon.add(form, entry, 1)
        for name in self.vocabulary:
            lexicon.add(name, _Entry("symptom", name, 0, False), 2, literal=True)
        lexicon.freeze()
        self._lexicon = lexicon

    @classmethod
    def for_vocabulary(cls, vocabulary: Iterable[str]) -> SymptomRecogniser:
        """Vocabulary plus the shipped synonym table entries that map onto its names."""
        vocab = list(vocabulary)
        table = load_synonym_table()
        return cls(vocab, table.resolve(vocab), ignore=table.unresolved(vocab))

    def recognise(self, text: str) -> list[SymptomMention]:
        """One mention per symptom, in text order.

        A symptom stated present anywhere is present (the span is its first present mention);
        otherwise its last mention decides between absent and uncertain.
        """
        chosen: dict[str, SymptomMention] = {}
        for mention in self.recognise_all(text):
            current = chosen.get(mention.symptom)
            if current is None or current.status != "present":
                chosen[mention.symptom] = mention
        return sorted(chosen.values(), key=lambda m: (m.start, m.end))

    def recognise_all(self, text: str) -> list[SymptomMention]:
        """Every symptom mention in text order, each with its own status (no merging)."""
        if not text:
            return []
        folded = _fold(text)
        items = self._scan(folded)
        if not any(item.entry.role == "symptom" for item in items):
            return []
        statuses = _statuses(folded, items)
        return [
            SymptomMention(item.entry.value, statuses[i], item.start, item.end, text[item.start : item.end])
            for i, item in enumerate(items)
            if item.entry.role == "symptom"
        ]

    # ---- matching ------------------------------------------------------------------------------

    def _scan(self, folded: str) -> list[_Item]:
        lex = self._lexicon
        tokens = [(m.start(), m.end(), _stem(m.group())) for m in _WORD_RE.finditer(folded)]
        token_at = {start: i for i, (start, _, _) in enumerate(tokens)}
        # Patterns run once over the whole text; the scan below picks their matches by position.
        pattern_at: dict[int, tuple[int, _Entry, bool]] = {}
        for pattern, pattern_entry in lex.patterns:
            for m in pattern.finditer(folded):
                if m.end() > m.start():
                    best = pattern_at.get(m.start())
                    if best is None or m.end() > best[0]:
                        negated = "neg" in pattern.groupindex and m.group("neg") is not None
                        pattern_at[m.start()] = (m.end(), pattern_entry, negated)

        starts = set(token_at)
        starts.update(pattern_at)
        if lex.start_re is not None and lex.char_lengths:
            starts.update(m.start() for m in lex.start_re.finditer(folded))
        chars, char_lengths, words, word_lengths = lex.chars, lex.char_lengths, lex.words, lex.word_lengths
        items: list[_Item] = []
        n = len(folded)
        i = 0
        for pos in sorted(starts):
            if pos < i:
                continue
            best_end, best_entry, negated = pos, None, False
            entry: _Entry | None
            for length in char_lengths.get(folded[pos], ()):
                if pos + length <= n:
                    entry = chars.get(folded[pos : pos + length])
                    if entry is not None:
                        best_end, best_entry = pos + length, entry
                        break
            t = token_at.get(pos)
            if t is not None:
                for length in word_lengths.get(tokens[t][2], ()):
                    if t + length > len(tokens):
                        continue
                    entry = words.get(tuple(tok[2] for tok in tokens[t : t + length]))
                    if entry is None or not _joined(folded, tokens, t, length):
                        continue
                    end = tokens[t + length - 1][1]
                    if end > best_end:
                        best_end, best_entry = end, entry
                    break
            found = pattern_at.get(pos)
            if found is not None and found[0] > best_end:
                best_end, best_entry, negated = found
            if best_entry is not None:
                items.append(_Item(pos, best_end, best_entry, negated))
                i = best_end
            elif t is not None:
                i = tokens[t][1]  # never match inside an English word
        return items


def _joined(folded: str, tokens: Sequence[tuple[int, int, str]], first: int, count: int) -> bool:
    """Whether ``count`` tokens from ``first`` are one phrase (no punctuation between them)."""
    for k in range(first, first + count - 1):
        gap_start, gap_end = tokens[k][1], tokens[k + 1][0]
        m = _WORD_JOIN_RE.fullmatch(folded, gap_start, gap_end)
        if m is None:
            return False
    return True


def _statuses(folded: str, items: Sequence[_Item]) -> list[Status]:
    """Status of every item (only symptoms' matter), by cue scope within clauses."""
    bounds = [m.start() for m in _BOUNDARY_RE.finditer(folded)]
    statuses: list[Status] = ["present"] * len(items)
    mode: Status | None = None  # the status an active pre-cue gives
    anchor_end = 0  # end of the cue, or of the last symptom it governed
    anchor_is_cue = False
    window = 0
    window_in_words = False
    chain: list[int] = []  # the last run of symptoms joined by connectors
    chain_end = 0
    clause = -1
    english_carry = False  # a negated English list may run on past a comma

    for idx, item in enumerate(items):
        entry = item.entry
        item_clause = bisect_right(bounds, item.start)
        if item_clause != clause:
            english_carry = (
                mode is not None
                and not anchor_is_cue
                and window_in_words
                and clause >= 0
                and item_clause == clause + 1
                and folded[bounds[clause]] == ","
                and _is_list_continuation(folded, items, idx, bounds, item_clause)
            )
            if not english_carry:
                mode = None
            chain = []
            clause = item_clause
        role = entry.role
        if role == "symptom":
            status: Status = "present"
            if mode is not None:
                gap_start = anchor_end
                if english_carry and not anchor_is_cue:
                    gap_start = bounds[clause - 1] + 1
                gap = folded[gap_start : item.start]
                if anchor_is_cue:
                    in_scope = _gap_size(gap, window_in_words) <= window
                else:
                    in_scope = _CONNECTOR_RE.fullmatch(gap) is not None
                if in_scope:
                    status = mode
                    anchor_end, anchor_is_cue = item.end, False
                else:
                    mode = None
            if item.negated:
                status = "uncertain" if status == "uncertain" else "absent"
            statuses[idx] = status
            if chain and _CONNECTOR_RE.fullmatch(folded, chain_end, item.start):
                chain.append(idx)
            else:
                chain = [idx]
            chain_end = item.end
            english_carry = False
            continue

        follows_chain = bool(chain) and _post_gap_ok(folded, chain_end, item.start, entry.words)
        if (
            role in _POST
            and follows_chain
            and (
                role in ("post_negation", "post_uncertainty")
                or not _symptom_follows(items, idx, bounds, clause)
            )
        ):
            post: Status = _POST[role]
            for k in chain:
                statuses[k] = "uncertain" if "uncertain" in (statuses[k], post) else post
            chain, mode = [], None
            continue
        chain = []
        if role in _PRE:
            new: Status = _PRE[role]
            # Doubt right before a negation, or the reverse, stays doubt (好像没有发烧, 不确定有没有).
            stacked = (
                mode is not None
                and anchor_is_cue
                and _gap_size(folded[anchor_end : item.start], window_in_words) <= window
            )
            mode = "uncertain" if stacked and mode != new else new
            anchor_end, anchor_is_cue = item.end, True
            window, window_in_words = entry.window, entry.words
        else:  # pseudo-cues and terminators close any scope
            mode = None
    return statuses


def _post_gap_ok(folded: str, start: int, end: int, words: bool) -> bool:
    if words:
        return _words_in(folded[start:end]) <= _POST_GAP_WORDS
    return _POST_GAP_RE.fullmatch(folded, start, end) is not None


def _symptom_follows(items: Sequence[_Item], idx: int, bounds: Sequence[int], clause: int) -> bool:
    nxt = idx + 1
    return (
        nxt < len(items)
        and items[nxt].entry.role == "symptom"
        and bisect_right(bounds, items[nxt].start) == clause
    )


def _is_list_continuation(
    folded: str, items: Sequence[_Item], idx: int, bounds: Sequence[int], clause: int
) -> bool:
    """Whether the English clauses from ``clause`` to the end of the sentence hold only symptoms
    ("no fever, cough or vomiting", "denies fever, chills"): then a negation runs on over the commas.
    One clause with anything else ("no fever, cough for three days") stops it."""
    k = idx
    c = clause
    while True:
        start = bounds[c - 1] + 1
        end = bounds[c] if c < len(bounds) else len(folded)
        pos = start
        while k < len(items) and items[k].start < end:
            if (
                items[k].entry.role != "symptom"
                or _CONNECTOR_RE.fullmatch(folded, pos, items[k].start) is None
            ):
                return False
            pos = items[k].end
            k += 1
        if pos == start or _CONNECTOR_RE.fullmatch(folded, pos, end) is None:
            return False
        if c >= len(bounds) or folded[bounds[c]] != ",":
            return True
        c += 1
