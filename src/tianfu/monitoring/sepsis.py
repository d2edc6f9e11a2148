"""Sepsis early warning for ICU stays: parsing, online features, and a numpy-only tree ensemble.

The model predicts, every hour of an ICU stay, the probability that the PhysioNet/CinC 2019
``SepsisLabel`` is 1 (the label turns 1 six hours before Sepsis-3 onset). It was trained on the
Challenge's hospital A (CC BY 4.0) by ``training/sepsis/train.py``; the model card is
``training/sepsis/MODEL_CARD.md``. Research and decision support only, not for clinical use.

Pieces:

- :func:`parse_psv` / :func:`parse_rows` turn one stay (a ``.psv`` file or a list of hourly dicts)
  into a ``(hours, 41)`` float array in :data:`COLUMNS` order (``NaN`` = not measured).
- :class:`OnlineFeatureExtractor` keeps a small per-stay state and returns the feature vector of
  each new hour in O(1); :func:`extract_features` computes the same features for a whole stay at
  once (vectorised over hours). Both call one shared kernel, so they agree bit for bit.
- :class:`SepsisModel` loads the shipped artefact (``models/sepsis_v1.npz`` + ``.json``) and scores
  features with a vectorised numpy walk of a gradient-boosted tree ensemble exported from
  scikit-learn's ``HistGradientBoostingClassifier``, followed by an isotonic calibration map.
  :meth:`SepsisModel.explain` gives per-feature contributions by the Saabas path method.

Only numpy is needed at serving time.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

# --------------------------------------------------------------------------------------------
# Columns of a PhysioNet 2019 stay file
# --------------------------------------------------------------------------------------------

VITALS: Final = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2")
LABS: Final = (
    "BaseExcess",
    "HCO3",
    "FiO2",
    "pH",
    "PaCO2",
    "SaO2",
    "AST",
    "BUN",
    "Alkalinephos",
    "Calcium",
    "Chloride",
    "Creatinine",
    "Bilirubin_direct",
    "Glucose",
    "Lactate",
    "Magnesium",
    "Phosphate",
    "Potassium",
    "Bilirubin_total",
    "TroponinI",
    "Hct",
    "Hgb",
    "PTT",
    "WBC",
    "Fibrinogen",
    "Platelets",
)
DEMOGRAPHICS: Final = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS")
LABEL: Final = "SepsisLabel"
PHYSIO: Final = VITALS + LABS  # 34 measured signals
COLUMNS: Final = (*PHYSIO, *DEMOGRAPHICS, LABEL)  # the 41 columns of a .psv file
_COL_INDEX: Final = {name: i for i, name in enumerate(COLUMNS)}
N_PHYSIO: Final = len(PHYSIO)
LABEL_INDEX: Final = _COL_INDEX[LABEL]

# Vitals that get short-window trend features. EtCO2 is never charted in the training hospital
# (0 % of hours), so the model cannot use it and it is left out of the features.
TREND_VITALS: Final = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp")
SPARSE_SIGNALS: Final = LABS
WINDOW: Final = 6  # hours in the rolling window (t-5 .. t)
_LAGS: Final = WINDOW + 1  # ring buffer keeps t-6 .. t for the 6-hour delta

_TREND_IDX: Final = np.array([_COL_INDEX[n] for n in TREND_VITALS], dtype=np.intp)
_SPARSE_IDX: Final = np.array([_COL_INDEX[n] for n in SPARSE_SIGNALS], dtype=np.intp)
_LAB_IDX: Final = np.array([_COL_INDEX[n] for n in LABS], dtype=np.intp)
_DEMO_IDX: Final = np.array([_COL_INDEX[n] for n in DEMOGRAPHICS], dtype=np.intp)
_NEWS2_IDX: Final = np.array([_COL_INDEX[n] for n in ("Resp", "O2Sat", "SBP", "HR", "Temp")], dtype=np.intp)
_DERIVED_IDX: Final = tuple(
    _COL_INDEX[n] for n in ("HR", "SBP", "DBP", "Resp", "Temp", "WBC", "BUN", "Creatinine", "FiO2")
)

_TREND_SUFFIXES: Final = ("", "_tsl", "_d1", "_d6", "_mean6", "_min6", "_max6", "_std6", "_dev")
_SPARSE_SUFFIXES: Final = ("", "_tsl", "_n", "_dprev")
DERIVED: Final = (
    "ShockIndex",
    "PulsePressure",
    "NEWS2_partial",
    "qSOFA_partial",
    "SIRS_partial",
    "BUN_Creatinine",
    "n_vitals_now",
    "n_labs_now",
    "labs_total",
)


def _feature_names() -> tuple[str, ...]:
    names: list[str] = []
    for v in TREND_VITALS:
        names.extend(v + s for s in _TREND_SUFFIXES)
    for v in SPARSE_SIGNALS:
        names.extend(v + s for s in _SPARSE_SUFFIXES)
    names.extend(DEMOGRAPHICS)
    names.extend(DERIVED)
    return tuple(names)


FEATURE_NAMES: Final = _feature_names()
N_FEATURES: Final = len(FEATURE_NAMES)

_FEATURE_DOC: Final = """\
Per hour t of a stay, from the rows 0..t only (t = row index within the stay):
- 7 vitals (HR, O2Sat, Temp, SBP, MAP, DBP, Resp): last observation carried forward (LOCF) value,
  hours since last measurement (`_tsl`, NaN before the first), 1-h and 6-h delta of the LOCF series
  (`_d1`, `_d6`), mean/min/max/std of the LOCF series over t-5..t, and deviation of the current
  value from the mean of all values measured so far in the stay (`_dev`).
- 26 labs: LOCF value, hours since last measurement, number of measurements so far (`_n`),
  change between the last two measurements (`_dprev`).
- Age, Gender, Unit1, Unit2, HospAdmTime, ICULOS (LOCF).
- Derived: shock index HR/SBP, pulse pressure, partial NEWS2 (no consciousness), partial qSOFA
  (RR >= 22, SBP <= 100), partial SIRS (HR, Temp, Resp, WBC), BUN/creatinine, vitals and labs measured
  this hour, total lab measurements so far.
- EtCO2 is not used: the training hospital never charted it.
Missing stays NaN; the trees route NaN by a learned direction."""


def signal_of(feature_name: str) -> str:
    """The measured signal a feature is derived from (``"HR_d6"`` -> ``"HR"``)."""
    for s in PHYSIO:
        if feature_name == s or (
            feature_name.startswith(s + "_") and feature_name[len(s) :] in _ALL_SUFFIXES
        ):
            return s
    return feature_name


_ALL_SUFFIXES: Final = frozenset(s for s in (*_TREND_SUFFIXES, *_SPARSE_SUFFIXES) if s)

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _align(header: Sequence[str], data: FloatArray) -> FloatArray:
    """Reorder columns of ``data`` (named by ``header``) into :data:`COLUMNS`; absent ones are NaN."""
    if tuple(header) == COLUMNS:
        return data
    out = np.full((data.shape[0], len(COLUMNS)), np.nan)
    for j, name in enumerate(header):
        k = _COL_INDEX.get(name.strip())
        if k is not None:
            out[:, k] = data[:, j]
    return out


def parse_psv(source: str | os.PathLike[str] | bytes | IO[bytes]) -> FloatArray:
    """Parse one PhysioNet 2019 stay (pipe-separated, header line) into a ``(hours, 41)`` array.

    ``source`` is a path, the file's bytes, or a binary file object. Columns come back in
    :data:`COLUMNS` order whatever the file's order; columns the file lacks (for instance
    ``SepsisLabel`` in live data) are NaN.
    """
    if isinstance(source, bytes):
        raw = source
    elif isinstance(source, str | os.PathLike):
        raw = Path(source).read_bytes()
    else:
        raw = source.read()
    head, _, body = raw.partition(b"\n")
    header = head.decode("utf-8").strip().split("|")
    if body.strip():
        data = np.loadtxt(io.BytesIO(body), delimiter="|", ndmin=2, dtype=np.float64)
    else:
        data = np.empty((0, len(header)))
    if data.shape[1] != len(header):
        raise ValueError(f"expected {len(header)} columns, got {data.shape[1]}")
    return _align(header, data)


def _to_float(value: object) -> float:
    if value is None or value == "":
        return float("nan")
    return float(value)  # type: ignore[arg-type]


def parse_row(row: Mapping[str, object]) -> FloatArray:
    """One hourly row given as ``{column: value}`` (missing key / None / "" / NaN = not measured)."""
    out = np.full(len(COLUMNS), np.nan)
    for name, value in row.items():
        k = _COL_INDEX.get(name)
        if k is not None:
            out[k] = _to_float(value)
    return out


def parse_rows(rows: Iterable[Mapping[str, object]]) -> FloatArray:
    """A stay given as a list of hourly dicts, in time order, as a ``(hours, 41)`` array."""
    parsed = [parse_row(r) for r in rows]
    if not parsed:
        return np.empty((0, len(COLUMNS)))
    return np.vstack(parsed)


def iter_stays(path: str | os.PathLike[str]) -> Iterator[tuple[str, FloatArray]]:
    """Yield ``(name, stay_array)`` for every ``.psv`` in a directory or a ``.tar.gz``/``.tar``.

    A tar archive is streamed member by member; nothing is extracted to disk. Order: sorted file
    names for a directory, archive order for a tar.
    """
    p = Path(path)
    if p.is_dir():
        for f in sorted(p.glob("*.psv")):
            yield f.stem, parse_psv(f)
        return
    if not tarfile.is_tarfile(p):
        raise ValueError(f"{p} is neither a directory nor a tar archive of .psv files")
    with tarfile.open(p, mode="r|*") as tf:
        for member in tf:
            if not member.isfile() or not member.name.endswith(".psv"):
                continue
            base = member.name.rsplit("/", 1)[-1]
            if base.startswith("."):
                continue
            fobj = tf.extractfile(member)
            if fobj is None:
                continue
            with fobj:
                yield base[: -len(".psv")], parse_psv(fobj.read())


# --------------------------------------------------------------------------------------------
# Scores shared with the evaluation baseline
# --------------------------------------------------------------------------------------------


def _round_half_up(x: FloatArray) -> FloatArray:
    """Round to the nearest integer, halves away from zero for the positive values used here."""
    return np.floor(x + 0.5)


# Band edges on rounded values (temperature in tenths of a degree) and the sub-score of each band:
# np.digitize(value, edges) indexes the scores. RCP 2017 Chart 1, SpO2 scale 1.
_NEWS2_BANDS: Final = (
    ((8.5, 11.5, 20.5, 24.5), (3, 1, 0, 2, 3)),  # respiration rate: <=8, 9-11, 12-20, 21-24, >=25
    ((91.5, 93.5, 95.5), (3, 2, 1, 0)),  # SpO2 scale 1: <=91, 92-93, 94-95, >=96
    ((90.5, 100.5, 110.5, 219.5), (3, 2, 1, 0, 3)),  # systolic BP: <=90 ... >=220
    ((40.5, 50.5, 90.5, 110.5, 130.5), (3, 1, 0, 1, 2, 3)),  # pulse: <=40 ... >=131
    ((350.5, 360.5, 380.5, 390.5), (3, 1, 0, 1, 2)),  # temperature: <=35.0 ... >=39.1
)
# All five parameters banded by one searchsorted: parameter k is shifted by k * _SHIFT.
_SHIFT: Final = 10_000.0
_NEWS2_EDGES: Final = np.concatenate([np.array(e) + k * _SHIFT for k, (e, _) in enumerate(_NEWS2_BANDS)])
_NEWS2_SCORES: Final = np.concatenate([np.array(sc, dtype=np.float64) for _, sc in _NEWS2_BANDS])
_NEWS2_OFFSETS: Final = np.arange(len(_NEWS2_BANDS)) * _SHIFT
_NEWS2_SCALE: Final = np.array([1.0, 1.0, 1.0, 1.0, 10.0])
_NEWS2_BAND_INDEX: Final = np.arange(len(_NEWS2_BANDS))


def news2_partial(
    resp: npt.ArrayLike,
    spo2: npt.ArrayLike,
    fio2: npt.ArrayLike,
    sbp: npt.ArrayLike,
    hr: npt.ArrayLike,
    temp: npt.ArrayLike,
) -> FloatArray:
    """Partial NEWS2 (RCP 2017 chart) without consciousness, which is assumed Alert.

    SpO2 on scale 1; supplemental oxygen = FiO2 > 0.21 (values above 1 are read as percent).
    Values are rounded half up (temperature to 0.1 °C) before banding; a missing value scores 0.
    Vectorised over 1-D arrays of equal length (or scalars); returns float totals 0..17.
    """
    v = np.stack(
        np.broadcast_arrays(
            *(np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (resp, spo2, sbp, hr, temp, fio2))
        ),
        axis=1,
    )
    return _news2_matrix(v[:, :5], v[:, 5])


def _news2_matrix(v: FloatArray, fio2: FloatArray) -> FloatArray:
    """Partial NEWS2 of an ``(n, 5)`` matrix of Resp, SpO2, SBP, HR, Temp and an ``(n,)`` FiO2."""
    with np.errstate(invalid="ignore"):
        r = np.clip(_round_half_up(v * _NEWS2_SCALE), -4000.0, 4000.0) + _NEWS2_OFFSETS
        missing = np.isnan(r)
        idx = np.searchsorted(_NEWS2_EDGES, r, side="right") + _NEWS2_BAND_INDEX
        idx[missing] = 0
        sub = np.where(missing, 0.0, _NEWS2_SCORES[idx])
        oxygen = np.where(np.where(fio2 > 1.0, fio2 / 100.0, fio2) > 0.21, 2.0, 0.0)
    total: FloatArray = sub.sum(axis=1) + oxygen
    return total


def locf(values: FloatArray) -> FloatArray:
    """Last observation carried forward down axis 0 of a ``(hours, k)`` array (leading NaN stays)."""
    n = values.shape[0]
    if n == 0:
        return values.copy()
    observed = ~np.isnan(values)
    idx = np.where(observed, np.arange(n)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = values[np.maximum(idx, 0), np.arange(values.shape[1])[None, :]]
    out[idx < 0] = np.nan
    return out


def news2_for_stay(stay: FloatArray) -> FloatArray:
    """Hourly partial NEWS2 of a stay array, on per-stay LOCF values."""
    cols = [_COL_INDEX[c] for c in ("Resp", "O2Sat", "FiO2", "SBP", "HR", "Temp")]
    v = locf(stay[:, cols])
    return news2_partial(v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4], v[:, 5])


# --------------------------------------------------------------------------------------------
# Features: one kernel, fed by a batch pass or by the incremental state
# --------------------------------------------------------------------------------------------


def _features_kernel(
    raw: FloatArray,  # (n, 41) raw rows at hour t
    last: FloatArray,  # (n, 34) LOCF physio values
    tsl: FloatArray,  # (n, 34) hours since last measurement (NaN if never)
    count: FloatArray,  # (n, 34) number of measurements so far
    csum: FloatArray,  # (n, 34) sum of measured values so far
    prev: FloatArray,  # (n, 34) the measured value before the last one (NaN if < 2)
    win: FloatArray,  # (n, 7, 7) LOCF trend vitals at lags 0..6 (NaN before the stay)
    demo: FloatArray,  # (n, 6) LOCF demographics
) -> FloatArray:
    """Assemble the feature matrix. Only element-wise operations, so row results do not depend on n."""
    n = raw.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        # window statistics over lags 0..5; sums are spelled out so that every row is computed by
        # the same element-wise operations whatever the number of rows (batch == incremental)
        w = win[:, :WINDOW, :]
        m = ~np.isnan(w)
        z = np.where(m, w, 0.0)
        c = m.sum(axis=1, dtype=np.float64)  # integers: exact in any order
        s = ((z[:, 0] + z[:, 1]) + (z[:, 2] + z[:, 3])) + (z[:, 4] + z[:, 5])
        mean = np.where(c > 0, s / c, np.nan)
        dz = np.where(m, w - mean[:, None, :], 0.0)
        dz = dz * dz
        ss = ((dz[:, 0] + dz[:, 1]) + (dz[:, 2] + dz[:, 3])) + (dz[:, 4] + dz[:, 5])
        std = np.where(c > 0, np.sqrt(ss / c), np.nan)
        mn = np.fmin.reduce(w, axis=1)  # min/max do not depend on order
        mx = np.fmax.reduce(w, axis=1)
        d1 = win[:, 0, :] - win[:, 1, :]
        d6 = win[:, 0, :] - win[:, WINDOW, :]
        tcount = count[:, _TREND_IDX]
        base = np.where(tcount > 0, csum[:, _TREND_IDX] / tcount, np.nan)
        tv = last[:, _TREND_IDX]
        trend = np.stack((tv, tsl[:, _TREND_IDX], d1, d6, mean, mn, mx, std, tv - base), axis=2)
        sv = last[:, _SPARSE_IDX]
        sparse = np.stack((sv, tsl[:, _SPARSE_IDX], count[:, _SPARSE_IDX], sv - prev[:, _SPARSE_IDX]), axis=2)
        hr, sbp, dbp, resp, temp, wbc, bun, cr, fio2 = (last[:, i] for i in _DERIVED_IDX)
        measured = ~np.isnan(raw[:, :N_PHYSIO])
        derived = np.stack(
            (
                np.where(sbp > 0, hr / sbp, np.nan),
                sbp - dbp,
                _news2_matrix(last[:, _NEWS2_IDX], fio2),
                (resp >= 22).astype(np.float64) + (sbp <= 100),
                (hr > 90).astype(np.float64)
                + ((temp > 38) | (temp < 36))
                + (resp > 20)
                + ((wbc > 12) | (wbc < 4)),
                np.where(cr > 0, bun / cr, np.nan),
                measured[:, _TREND_IDX].sum(axis=1, dtype=np.float64),
                measured[:, _SPARSE_IDX].sum(axis=1, dtype=np.float64),
                count[:, _LAB_IDX].sum(axis=1),
            ),
            axis=1,
        )
    return np.concatenate((trend.reshape(n, -1), sparse.reshape(n, -1), demo, derived), axis=1)


def extract_features(stay: FloatArray) -> FloatArray:
    """Features for every hour of a stay at once, ``(hours, N_FEATURES)``; row t uses rows 0..t only."""
    stay = np.asarray(stay, dtype=np.float64)
    n = stay.shape[0]
    if n == 0:
        return np.empty((0, N_FEATURES))
    phys = stay[:, :N_PHYSIO]
    observed = ~np.isnan(phys)
    t = np.arange(n)
    cols = np.arange(N_PHYSIO)[None, :]
    last_t = np.where(observed, t[:, None], -1)
    np.maximum.accumulate(last_t, axis=0, out=last_t)
    ever = last_t >= 0
    last = np.where(ever, phys[np.maximum(last_t, 0), cols], np.nan)
    tsl = np.where(ever, (t[:, None] - last_t).astype(np.float64), np.nan)
    count_i = np.cumsum(observed, axis=0)
    count = count_i.astype(np.float64)
    csum = np.cumsum(np.where(observed, phys, 0.0), axis=0)
    # the previous measured value: the (count-1)-th observation, located through observation order
    obs_rows = [np.flatnonzero(observed[:, j]) for j in range(N_PHYSIO)]
    prev = np.full((n, N_PHYSIO), np.nan)
    for j, rows in enumerate(obs_rows):
        if rows.size >= 2:
            before = count_i[:, j] - 2
            ok = before >= 0
            prev[ok, j] = phys[rows[before[ok]], j]
    trend_last = last[:, _TREND_IDX]
    win = np.full((n, _LAGS, len(TREND_VITALS)), np.nan)
    for k in range(min(_LAGS, n)):
        win[k:, k, :] = trend_last[: n - k]
    demo = locf(stay[:, _DEMO_IDX])
    return _features_kernel(stay, last, tsl, count, csum, prev, win, demo)


class OnlineFeatureExtractor:
    """Incremental features for one stay: feed rows hour by hour, get that hour's feature vector.

    The state is a handful of small arrays (last values, their times, counts, sums, the previous
    measurement and a 7-hour ring buffer of the trend vitals), so an update costs a few dozen numpy
    operations on arrays of length <= 41, independent of the stay's length.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t = -1
        self._last = np.full(N_PHYSIO, np.nan)
        self._last_t = np.full(N_PHYSIO, -1, dtype=np.int64)
        self._count = np.zeros(N_PHYSIO)
        self._csum = np.zeros(N_PHYSIO)
        self._prev = np.full(N_PHYSIO, np.nan)
        self._win = np.full((_LAGS, len(TREND_VITALS)), np.nan)
        self._demo = np.full(len(DEMOGRAPHICS), np.nan)

    def update(self, row: Mapping[str, object] | npt.ArrayLike) -> FloatArray:
        """Add hour t+1 (a dict by column name, or a 40/41-long array in :data:`COLUMNS` order)."""
        if isinstance(row, Mapping):
            r = parse_row(row)
        else:
            r = np.asarray(row, dtype=np.float64).reshape(-1)
            if r.shape[0] == len(COLUMNS) - 1:
                r = np.append(r, np.nan)
            elif r.shape[0] != len(COLUMNS):
                raise ValueError(f"a row has {len(COLUMNS)} values in COLUMNS order, got {r.shape[0]}")
        self.t += 1
        phys = r[:N_PHYSIO]
        m = ~np.isnan(phys)
        self._prev = np.where(m, self._last, self._prev)
        self._last = np.where(m, phys, self._last)
        self._last_t = np.where(m, self.t, self._last_t)
        self._count = self._count + m
        self._csum = self._csum + np.where(m, phys, 0.0)
        self._win[1:] = self._win[:-1]
        self._win[0] = self._last[_TREND_IDX]
        d = r[_DEMO_IDX]
        self._demo = np.where(np.isnan(d), self._demo, d)
        ever = self._last_t >= 0
        tsl = np.where(ever, (self.t - self._last_t).astype(np.float64), np.nan)
        feats = _features_kernel(
            r[None, :],
            self._last[None, :],
            tsl[None, :],
            self._count[None, :],
            self._csum[None, :],
            self._prev[None, :],
            self._win[None, :, :],
            self._demo[None, :],
        )
        out: FloatArray = feats[0]
        return out


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

MODEL_NAME: Final = "sepsis_v1"
_MODEL_PACKAGE: Final = "tianfu.monitoring"


@dataclass(frozen=True)
class Contribution:
    """One signal's or feature's share of a prediction, in log-odds (Saabas path attribution)."""

    name: str
    value: float  # the feature's value (NaN when missing; for a signal group, its main feature)
    contribution: float


@dataclass(frozen=True)
class Explanation:
    bias: float  # expected log-odds at the root of every tree (training prior)
    log_odds: float  # bias + sum of all contributions
    probability: float  # calibrated probability, as predict() returns
    top: list[Contribution] = field(default_factory=list)


@dataclass(frozen=True, eq=False)
class SepsisModel:
    """A binary tree ensemble in flat arrays plus an isotonic calibration map.

    Node arrays (all trees concatenated; ``roots[i]`` is tree i's first node): ``feature`` index,
    ``threshold`` (go left when ``x <= threshold``), ``missing_left`` (where NaN goes), ``left`` /
    ``right`` child (a leaf points to itself), ``value`` (leaf: its raw contribution; internal
    node: the training-count-weighted mean of the leaves below, used by :meth:`explain`).
    ``predict`` = ``interp(baseline + sum of leaf values, calib_x, calib_y)``.
    """

    feature_names: tuple[str, ...]
    feature: IntArray
    threshold: FloatArray
    missing_left: BoolArray
    left: IntArray
    right: IntArray
    value: FloatArray
    is_leaf: BoolArray
    roots: IntArray
    baseline: float
    max_depth: int
    calib_x: FloatArray
    calib_y: FloatArray
    operating_threshold: float
    metadata: dict[str, Any] = field(default_factory=dict)
    # derived walking tables, see __post_init__
    _split_feature: npt.NDArray[np.intp] = field(init=False, repr=False)
    _split_threshold: FloatArray = field(init=False, repr=False)
    _children: npt.NDArray[np.intp] = field(init=False, repr=False)
    # explain(by_signal=True): each feature's signal, as an index into _signals
    _signals: tuple[str, ...] = field(init=False, repr=False)
    _signal_of_feature: npt.NDArray[np.intp] = field(init=False, repr=False)
    _signal_value_at: tuple[int | None, ...] = field(init=False, repr=False)  # the signal's own feature

    def __post_init__(self) -> None:
        # Missing values without a branch per node: the matrix is widened to [X with NaN -> +inf,
        # X with NaN -> -inf]; a node whose NaN goes left reads the second half (-inf <= t: left),
        # the others the first (+inf > t: right). A "split on NaN" has threshold +inf in sklearn;
        # lowering it to the largest finite float keeps every real value left and +inf right.
        n_feat = len(self.feature_names)
        internal = ~self.is_leaf
        sf = np.where(internal & self.missing_left, self.feature + n_feat, self.feature).astype(np.intp)
        st = np.where(np.isposinf(self.threshold), np.finfo(np.float64).max, self.threshold)
        children = np.stack((self.left, self.right), axis=1).reshape(-1).astype(np.intp)
        object.__setattr__(self, "_split_feature", sf)
        object.__setattr__(self, "_split_threshold", st)
        object.__setattr__(self, "_children", children)
        signals = tuple(dict.fromkeys(signal_of(n) for n in self.feature_names))
        object.__setattr__(self, "_signals", signals)
        object.__setattr__(
            self,
            "_signal_of_feature",
            np.array([signals.index(signal_of(n)) for n in self.feature_names], dtype=np.intp),
        )
        names = self.feature_names
        object.__setattr__(
            self, "_signal_value_at", tuple(names.index(k) if k in names else None for k in signals)
        )

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, name: str = MODEL_NAME) -> SepsisModel:
        """Load the artefact shipped in the package (``tianfu/monitoring/models/<name>.npz/.json``)."""
        base = resources.files(_MODEL_PACKAGE).joinpath("models")
        with base.joinpath(f"{name}.npz").open("rb") as f:
            arrays = dict(np.load(io.BytesIO(f.read()), allow_pickle=False))
        meta = json.loads(base.joinpath(f"{name}.json").read_text(encoding="utf-8"))
        return cls.from_arrays(arrays, meta)

    @classmethod
    def from_files(cls, npz_path: str | os.PathLike[str], json_path: str | os.PathLike[str]) -> SepsisModel:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = dict(z)
        meta = json.loads(Path(json_path).read_text(encoding="utf-8"))
        return cls.from_arrays(arrays, meta)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], meta: Mapping[str, Any]) -> SepsisModel:
        names = tuple(meta["feature_names"])
        if names != FEATURE_NAMES:
            raise ValueError("model feature names do not match this version of the feature extractor")
        left = np.asarray(arrays["left"], dtype=np.int32)
        return cls(
            feature_names=names,
            feature=np.asarray(arrays["feature"], dtype=np.int32),
            threshold=np.asarray(arrays["threshold"], dtype=np.float64),
            missing_left=np.asarray(arrays["missing_left"], dtype=np.bool_),
            left=left,
            right=np.asarray(arrays["right"], dtype=np.int32),
            value=np.asarray(arrays["value"], dtype=np.float64),
            is_leaf=left == np.arange(left.shape[0], dtype=np.int32),
            roots=np.asarray(arrays["roots"], dtype=np.int32),
            baseline=float(np.asarray(arrays["baseline"]).reshape(-1)[0]),
            max_depth=int(np.asarray(arrays["max_depth"]).reshape(-1)[0]),
            calib_x=np.asarray(arrays["calib_x"], dtype=np.float64),
            calib_y=np.asarray(arrays["calib_y"], dtype=np.float64),
            operating_threshold=float(meta["operating_threshold"]),
            metadata=dict(meta),
        )

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    # ---- scoring -------------------------------------------------------------------------
    def _leaves(self, X: FloatArray) -> npt.NDArray[np.intp]:
        """Leaf node index reached in every tree, ``(n_rows, n_trees)``."""
        n, n_feat = X.shape
        nan = np.isnan(X)
        wide = np.concatenate((np.where(nan, np.inf, X), np.where(nan, -np.inf, X)), axis=1).ravel()
        row_offset = (np.arange(n, dtype=np.intp) * (2 * n_feat))[:, None]
        node = np.repeat(self.roots.astype(np.intp)[None, :], n, axis=0)
        for _ in range(self.max_depth):
            x = wide[row_offset + self._split_feature[node]]
            node = self._children[2 * node + (x > self._split_threshold[node])]
        return node

    def raw_score(self, X: npt.ArrayLike, batch_rows: int = 2048) -> FloatArray:
        """Uncalibrated log-odds, like sklearn's ``decision_function``; ``X`` is ``(n, F)`` or ``(F,)``."""
        A = self._check(X)
        out = np.empty(A.shape[0])
        for start in range(0, A.shape[0], batch_rows):
            leaves = self._leaves(A[start : start + batch_rows])
            out[start : start + batch_rows] = self.baseline + self.value[leaves].sum(axis=1)
        return out

    def calibrate(self, raw: FloatArray) -> FloatArray:
        """Map log-odds to calibrated probability (isotonic, linearly interpolated, clipped)."""
        return np.interp(raw, self.calib_x, self.calib_y)

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities for a ``(n, F)`` feature matrix."""
        return self.calibrate(self.raw_score(X))

    def predict(self, features: npt.ArrayLike) -> float:
        """Calibrated probability for one feature vector (as returned by the feature extractor)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError("predict() takes one feature vector; use predict_proba() for a matrix")
        return float(self.predict_proba(x[None, :])[0])

    def alarm(self, probability: float) -> bool:
        """Whether a probability is at or above the operating threshold chosen in training."""
        return probability >= self.operating_threshold

    def _check(self, X: npt.ArrayLike) -> FloatArray:
        """A 2-D float matrix of the right width; infinities count as missing (sklearn rejects them)."""
        A = np.asarray(X, dtype=np.float64)
        if np.isinf(A).any():
            A = np.where(np.isinf(A), np.nan, A)
        if A.ndim == 1:
            A = A[None, :]
        if A.ndim != 2 or A.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} features, got shape {A.shape}")
        return A

    # ---- explanation ---------------------------------------------------------------------
    def contributions(self, features: npt.ArrayLike) -> tuple[float, FloatArray]:
        """Saabas path attribution: ``(bias, per-feature log-odds contributions)``.

        Walking each tree from the root, the change in node value (the training-count-weighted
        mean of the leaves below) at every split is credited to that split's feature. Bias plus
        the contributions equals :meth:`raw_score` exactly (up to rounding).
        """
        x = self._check(features)[0]
        contrib = np.zeros(len(self.feature_names))
        node = self.roots.astype(np.intp)
        for _ in range(self.max_depth):
            f = self.feature[node]
            xv = x[f]
            go_left = np.where(np.isnan(xv), self.missing_left[node], xv <= self.threshold[node])
            nxt = np.where(go_left, self.left[node], self.right[node])
            active = ~self.is_leaf[node]
            np.add.at(contrib, f[active], self.value[nxt[active]] - self.value[node[active]])
            node = nxt
        bias = self.baseline + float(self.value[self.roots].sum())
        return bias, contrib

    def explain(self, features: npt.ArrayLike, top_k: int = 5, by_signal: bool = True) -> Explanation:
        """The signals (or single features) that pushed this prediction up or down the most.

        Method: Saabas path attribution in log-odds (see :meth:`contributions`), summed per
        measured signal when ``by_signal`` (``HR``, ``HR_d6``, ``HR_std6`` ... -> ``HR``). Sorted by
        absolute contribution. For a group, ``value`` is the signal's current (LOCF) value.
        """
        x = self._check(features)[0]
        bias, contrib = self.contributions(x)
        items: list[Contribution]
        if by_signal:
            groups = np.bincount(self._signal_of_feature, weights=contrib, minlength=len(self._signals))
            items = [
                Contribution(k, float("nan") if at is None else float(x[at]), float(v))
                for k, at, v in zip(self._signals, self._signal_value_at, groups, strict=True)
            ]
        else:
            items = [
                Contribution(n, float(v), float(c))
                for n, v, c in zip(self.feature_names, x, contrib, strict=True)
            ]
        items.sort(key=lambda c: -abs(c.contribution))
        log_odds = bias + float(contrib.sum())  # the raw score (see contributions), without a second walk
        prob = float(self.calibrate(np.array([log_odds]))[0])
        return Explanation(bias=bias, log_odds=log_odds, probability=prob, top=items[:top_k])


def score_stay(model: SepsisModel, stay: FloatArray) -> FloatArray:
    """Hourly calibrated probabilities for a whole stay array."""
    return model.predict_proba(extract_features(stay))


FEATURE_DESCRIPTION: Final = _FEATURE_DOC
