"""Sepsis early-warning model: parsing, features, numpy trees, Challenge utility, evaluate().

Fixture: 12 PhysioNet/CinC 2019 stays (CC BY 4.0), see fixtures/physionet_sample/README.md.
"""

from __future__ import annotations

import importlib.util
import io
import math
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

np = pytest.importorskip("numpy")

from tianfu.monitoring import evaluate as ev  # noqa: E402
from tianfu.monitoring import sepsis as sp  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "physionet_sample"
SEPTIC = {"p000009", "p000011", "p000015", "p000022", "p000034", "p000058"}
REPO = Path(__file__).resolve().parents[2]


def fixture_stays() -> list[tuple[str, np.ndarray]]:
    return list(sp.iter_stays(FIXTURES))


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def test_parse_psv_shape_columns_and_missing() -> None:
    stay = sp.parse_psv(FIXTURES / "p000001.psv")
    assert stay.shape == (54, 41)
    assert len(sp.COLUMNS) == 41
    assert sp.COLUMNS[0] == "HR"
    assert sp.COLUMNS[-1] == "SepsisLabel"
    # first hour of p000001: nothing charted but demographics
    assert math.isnan(stay[0, sp.COLUMNS.index("HR")])
    assert stay[0, sp.COLUMNS.index("Age")] == pytest.approx(83.14)
    assert stay[1, sp.COLUMNS.index("HR")] == 97.0
    assert stay[:, sp.COLUMNS.index("ICULOS")].tolist() == list(range(1, 55))
    assert set(np.unique(stay[:, sp.LABEL_INDEX])) == {0.0}


def test_parse_psv_sources_agree() -> None:
    path = FIXTURES / "p000009.psv"
    a = sp.parse_psv(path)
    b = sp.parse_psv(path.read_bytes())
    c = sp.parse_psv(io.BytesIO(path.read_bytes()))
    d = sp.parse_psv(str(path))
    for other in (b, c, d):
        np.testing.assert_array_equal(a, other)
    assert a[:, sp.LABEL_INDEX].max() == 1.0


def test_parse_psv_reordered_and_missing_columns() -> None:
    text = "ICULOS|HR|Resp\n1|80|NaN\n2|NaN|18\n"
    stay = sp.parse_psv(text.encode())
    assert stay.shape == (2, 41)
    assert stay[0, sp.COLUMNS.index("HR")] == 80.0
    assert stay[1, sp.COLUMNS.index("Resp")] == 18.0
    assert stay[1, sp.COLUMNS.index("ICULOS")] == 2.0
    assert np.isnan(stay[:, sp.LABEL_INDEX]).all()  # no label column in live data


def test_parse_rows_matches_psv() -> None:
    stay = sp.parse_psv(FIXTURES / "p000011.psv")
    rows = [
        {name: (None if math.isnan(v) else v) for name, v in zip(sp.COLUMNS, row, strict=True)}
        for row in stay
    ]
    # sparse dicts: omit missing keys in half of the rows
    for r in rows[::2]:
        for k in [k for k, v in r.items() if v is None]:
            del r[k]
    np.testing.assert_array_equal(sp.parse_rows(rows), stay)
    assert sp.parse_rows([]).shape == (0, 41)


def test_iter_stays_directory_order() -> None:
    names = [n for n, _ in fixture_stays()]
    assert names == sorted(names)
    assert len(names) == 12
    assert {n for n, s in fixture_stays() if s[:, sp.LABEL_INDEX].max() == 1} == SEPTIC


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def test_feature_names_unique_and_counted() -> None:
    assert len(set(sp.FEATURE_NAMES)) == sp.N_FEATURES
    assert sp.FEATURE_NAMES[0] == "HR"
    assert "ICULOS" in sp.FEATURE_NAMES
    assert "Lactate_tsl" in sp.FEATURE_NAMES
    assert sp.signal_of("HR_d6") == "HR"
    assert sp.signal_of("Bilirubin_direct_dprev") == "Bilirubin_direct"
    assert sp.signal_of("NEWS2_partial") == "NEWS2_partial"


def test_incremental_features_equal_batch() -> None:
    for name, stay in fixture_stays():
        batch = sp.extract_features(stay)
        assert batch.shape == (stay.shape[0], sp.N_FEATURES)
        online = sp.OnlineFeatureExtractor()
        rows = np.vstack([online.update(row) for row in stay])
        np.testing.assert_array_equal(rows, batch, err_msg=name)  # bit for bit, NaN included


def test_incremental_accepts_dicts_and_rows_without_label() -> None:
    stay = sp.parse_psv(FIXTURES / "p000015.psv")
    batch = sp.extract_features(stay)
    a = sp.OnlineFeatureExtractor()
    b = sp.OnlineFeatureExtractor()
    for t, row in enumerate(stay):
        as_dict = {k: v for k, v in zip(sp.COLUMNS, row, strict=True) if not math.isnan(v)}
        np.testing.assert_array_equal(a.update(as_dict), batch[t])
        np.testing.assert_array_equal(b.update(row[:40]), batch[t])
    with pytest.raises(ValueError, match="COLUMNS order"):
        b.update(np.zeros(7))


def test_features_use_only_the_past() -> None:
    stay = sp.parse_psv(FIXTURES / "p000009.psv")
    full = sp.extract_features(stay)
    for t in (0, 1, 5, 6, 7, 40, stay.shape[0] - 1):
        np.testing.assert_array_equal(sp.extract_features(stay[: t + 1])[t], full[t])


def test_feature_values_by_hand() -> None:
    # HR measured at hours 0, 2 and 3; WBC once at hour 1
    rows = [
        {"HR": 80, "ICULOS": 1, "Age": 60},
        {"WBC": 15, "ICULOS": 2},
        {"HR": 100, "ICULOS": 3},
        {"HR": 110, "SBP": 100, "ICULOS": 4},
    ]
    f = sp.extract_features(sp.parse_rows(rows))
    col = {n: i for i, n in enumerate(sp.FEATURE_NAMES)}
    assert f[1, col["HR"]] == 80.0  # carried forward
    assert f[1, col["HR_tsl"]] == 1.0
    assert math.isnan(f[0, col["WBC_tsl"]])
    assert f[3, col["WBC_tsl"]] == 2.0
    assert f[3, col["WBC_n"]] == 1.0
    assert f[3, col["HR_d1"]] == 10.0
    assert math.isnan(f[3, col["HR_d6"]])  # no hour t-6 yet
    assert f[3, col["HR_mean6"]] == pytest.approx((80 + 80 + 100 + 110) / 4)
    assert f[3, col["HR_min6"]] == 80.0
    assert f[3, col["HR_max6"]] == 110.0
    assert f[3, col["HR_dev"]] == pytest.approx(110 - (80 + 100 + 110) / 3)
    assert f[3, col["ShockIndex"]] == pytest.approx(1.1)
    assert f[3, col["Age"]] == 60.0  # demographics carried forward
    assert f[3, col["n_vitals_now"]] == 2.0
    assert f[1, col["n_labs_now"]] == 1.0
    # SIRS: HR 110 > 90 and WBC 15 > 12
    assert f[3, col["SIRS_partial"]] == 2.0
    assert f[3, col["qSOFA_partial"]] == 1.0  # SBP <= 100


@pytest.mark.parametrize(
    ("rr", "spo2", "fio2", "sbp", "hr", "temp", "expected"),
    [
        # monitoring.md §1.1 vectors on scale 1 with an alert patient
        (16, 97, 0.21, 120, 70, 37.0, 0),  # 1
        (21, 95, 0.21, 110, 91, 38.1, 6),  # 2
        (25, 97, 0.21, 120, 70, 37.0, 3),  # 3
        (18, 95, 0.21, 130, 80, 36.5, 1),  # 8
        (24, 94, 0.21, 120, 111, 39.1, 7),  # 10
        (12, 96, 0.21, 219, 51, 36.1, 0),  # 11
        (11, 96, 0.21, 220, 50, 36.0, 6),  # 12
        (8, 91, 0.5, 90, 131, 35.0, 17),  # 4 without consciousness
        (8, 91, 50, 90, 131, 35.0, 17),  # FiO2 given in percent
        (float("nan"),) * 6 + (0,),  # nothing measured
        (20.5, 95.5, 0.21, 110.5, 90.5, 38.06, 4),  # rounded first: 21 (2), 96, 111, 91 (1), 38.1 (1)
    ],
)
def test_news2_partial(
    rr: float, spo2: float, fio2: float, sbp: float, hr: float, temp: float, expected: float
) -> None:
    assert sp.news2_partial(rr, spo2, fio2, sbp, hr, temp)[0] == expected


def test_news2_locf_per_stay() -> None:
    stay = sp.parse_rows([{"HR": 135}, {"Resp": 26}, {}])
    np.testing.assert_array_equal(sp.news2_for_stay(stay), [3.0, 6.0, 6.0])


# --------------------------------------------------------------------------------------------
# Trees: numpy evaluator vs scikit-learn, shipped artefact
# --------------------------------------------------------------------------------------------


def _load_train_module() -> ModuleType:
    path = REPO / "training" / "sepsis" / "train.py"
    spec = importlib.util.spec_from_file_location("sepsis_train_for_tests", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_numpy_trees_match_sklearn() -> None:
    pytest.importorskip("sklearn")
    from sklearn.ensemble import HistGradientBoostingClassifier

    train = _load_train_module()
    stays = fixture_stays()
    X = np.vstack([sp.extract_features(s) for _, s in stays])
    y = np.concatenate([s[:, sp.LABEL_INDEX] for _, s in stays]).astype(int)
    # a feature never observed in the fixture cannot be binned; give it a constant instead
    X[:, np.isnan(X).all(axis=0)] = 0.0
    clf = HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=15, min_samples_leaf=5, random_state=0)
    clf.fit(X, y)
    arrays = train.export_trees(clf)
    arrays["calib_x"] = np.array([-50.0, 50.0])
    arrays["calib_y"] = np.array([0.0, 1.0])
    model = sp.SepsisModel.from_arrays(
        arrays, {"feature_names": list(sp.FEATURE_NAMES), "operating_threshold": 0.5}
    )
    # unseen NaN patterns too: blank out some values
    Xt = X.copy()
    Xt[::3, ::2] = np.nan
    for data in (X, Xt):
        raw = model.raw_score(data)
        np.testing.assert_allclose(raw, clf.decision_function(data), rtol=0, atol=1e-9)
        np.testing.assert_allclose(1 / (1 + np.exp(-raw)), clf.predict_proba(data)[:, 1], rtol=0, atol=1e-12)
    # Saabas contributions add up to the raw score
    for row in Xt[:20]:
        bias, contrib = model.contributions(row)
        assert bias + contrib.sum() == pytest.approx(model.raw_score(row)[0], abs=1e-9)


def test_numpy_trees_split_on_missingness() -> None:
    pytest.importorskip("sklearn")
    from sklearn.ensemble import HistGradientBoostingClassifier

    train = _load_train_module()
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, sp.N_FEATURES))
    y = rng.integers(0, 2, size=600)
    X[y == 1, 0] = np.nan  # missingness itself is the signal: sklearn splits "on NaN" (+inf threshold)
    X[rng.random(600) < 0.3, 1] = np.nan
    clf = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=7, random_state=0).fit(X, y)
    arrays = train.export_trees(clf)
    assert np.isposinf(arrays["threshold"]).any()
    arrays["calib_x"] = np.array([-50.0, 50.0])
    arrays["calib_y"] = np.array([0.0, 1.0])
    model = sp.SepsisModel.from_arrays(
        arrays, {"feature_names": list(sp.FEATURE_NAMES), "operating_threshold": 0.5}
    )
    Xt = rng.normal(size=(300, sp.N_FEATURES)) * 3
    Xt[rng.random(Xt.shape) < 0.2] = np.nan
    np.testing.assert_allclose(model.raw_score(Xt), clf.decision_function(Xt), rtol=0, atol=1e-9)
    np.testing.assert_allclose(model.raw_score(X), clf.decision_function(X), rtol=0, atol=1e-9)


def test_shipped_model_loads_and_predicts() -> None:
    model = sp.SepsisModel.load()
    meta = model.metadata
    assert model.feature_names == sp.FEATURE_NAMES
    for key in ("version", "training_date", "data", "metrics", "operating_threshold", "feature_names"):
        assert key in meta
    assert "CC BY 4.0" in meta["data"]["licence"]
    assert 0.0 < model.operating_threshold < 1.0
    assert np.all(np.diff(model.calib_x) > 0)
    assert np.all(np.diff(model.calib_y) >= 0)
    stay = sp.parse_psv(FIXTURES / "p000009.psv")
    feats = sp.extract_features(stay)
    probs = model.predict_proba(feats)
    assert probs.shape == (stay.shape[0],)
    assert np.all((probs >= 0) & (probs <= 1))
    online = sp.OnlineFeatureExtractor()
    for t, row in enumerate(stay[:30]):
        p = model.predict(online.update(row))
        assert isinstance(p, float)
        assert p == probs[t]
    with pytest.raises(ValueError, match="one feature vector"):
        model.predict(feats)


def test_shipped_model_explain() -> None:
    model = sp.SepsisModel.load()
    stay = sp.parse_psv(FIXTURES / "p000009.psv")
    x = sp.extract_features(stay)[-1]
    exp = model.explain(x, top_k=5)
    assert len(exp.top) == 5
    assert exp.probability == pytest.approx(model.predict(x))
    assert exp.log_odds == pytest.approx(model.raw_score(x)[0], abs=1e-9)
    mags = [abs(c.contribution) for c in exp.top]
    assert mags == sorted(mags, reverse=True)
    signals = {c.name for c in exp.top}
    assert signals <= set(sp.PHYSIO) | set(sp.DEMOGRAPHICS) | set(sp.DERIVED)
    per_feature = model.explain(x, top_k=3, by_signal=False)
    assert all(c.name in sp.FEATURE_NAMES for c in per_feature.top)


# --------------------------------------------------------------------------------------------
# Challenge utility
# --------------------------------------------------------------------------------------------


def reference_hour_utility(t: int, t_sepsis: float, alarm: bool) -> float:
    """The published per-hour reward, written out case by case (dt -12 / -6 / +3)."""
    if math.isinf(t_sepsis):
        return -0.05 if alarm else 0.0
    d = t - t_sepsis
    if d > 3:
        return 0.0
    if alarm:
        if d <= -6:
            return max((d + 12) / 6, -0.05)  # 0 at -12, 1 at -6
        return (3 - d) / 9  # 1 at -6, 0 at +3
    if d <= -6:
        return 0.0
    return -2 * (d + 6) / 9  # 0 at -6, -2 at +3


def reference_utility(labels: list[int], preds: list[int]) -> float:
    t_sepsis = labels.index(1) + 6 if 1 in labels else math.inf
    return sum(reference_hour_utility(t, t_sepsis, bool(p)) for t, p in enumerate(preds))


def test_utility_published_example() -> None:
    # the example in the Challenge's evaluate_sepsis_score.py
    assert ev.prediction_utility([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx(3.388888888888889)


def test_utility_matches_reference_on_random_cases() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        onset = int(rng.integers(0, n + 8))
        labels = [int(t >= onset) for t in range(n)]
        preds = [int(v) for v in rng.integers(0, 2, size=n)]
        assert ev.prediction_utility(labels, preds) == pytest.approx(
            reference_utility(labels, preds), abs=1e-9
        )


def test_normalized_utility_perfect_none_and_false_alarms() -> None:
    septic = [0] * 20 + [1] * 15
    quiet = [0] * 30
    labels = [septic, quiet]
    perfect = [ev.best_predictions(septic), np.zeros(30)]
    nothing = [np.zeros(35), np.zeros(30)]
    assert ev.normalized_utility(labels, perfect) == pytest.approx(1.0)
    assert ev.normalized_utility(labels, nothing) == 0.0
    # alarms in every hour of the non-septic stay cost 0.05 each
    assert ev.prediction_utility(quiet, np.ones(30)) == pytest.approx(-1.5)
    best = ev.prediction_utility(septic, ev.best_predictions(septic))
    inaction = ev.prediction_utility(septic, np.zeros(35))
    assert best == pytest.approx(sum(reference_hour_utility(t, 26, True) for t in range(14, 30)))
    expected = 1.0 - 1.5 / (best - inaction)
    got = ev.normalized_utility(labels, [ev.best_predictions(septic), np.ones(30)])
    assert got == pytest.approx(expected)
    assert got < 1.0
    with pytest.raises(ValueError, match="without a septic stay"):
        ev.normalized_utility([quiet], [np.ones(30)])


def test_best_predictions_window_and_early_onset() -> None:
    np.testing.assert_array_equal(np.flatnonzero(ev.best_predictions([0] * 20 + [1] * 15)), np.arange(14, 30))
    # labelled from the first hour: t_sepsis = 6, window clipped at 0
    np.testing.assert_array_equal(np.flatnonzero(ev.best_predictions([1] * 8)), np.arange(0, 8))
    assert not ev.best_predictions([0] * 10).any()


def test_utility_table_sweep_matches_direct_scores() -> None:
    stays = [s for _, s in fixture_stays()]
    labels = [s[:, sp.LABEL_INDEX] for s in stays]
    table = ev.UtilityTable.from_labels(labels)
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 20, size=table.u_alarm.shape[0]).astype(float)
    ths, utils = table.sweep(scores)
    assert np.all(np.diff(ths) < 0)
    offsets = np.cumsum([0] + [len(lab) for lab in labels])
    for th, u in zip(ths[::4], utils[::4], strict=True):
        preds = [scores[offsets[i] : offsets[i + 1]] >= th for i in range(len(labels))]
        assert u == pytest.approx(ev.normalized_utility(labels, preds))
        assert u == pytest.approx(table.score(scores >= th))
    th, u = table.best_threshold(scores)
    assert u == pytest.approx(utils.max())


def test_auroc() -> None:
    assert ev.auroc([0, 0, 0, 0, 1, 1], [0.3, 0.4, 0.6, 0.7, 0.8, 0.8]) == 1.0
    assert ev.auroc([0, 1], [0.5, 0.5]) == 0.5
    assert ev.auroc([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.2]) == 0.5
    assert math.isnan(ev.auroc([0, 0], [0.1, 0.2]))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert ev.auroc(y, s) == pytest.approx(pairs)


# --------------------------------------------------------------------------------------------
# evaluate()
# --------------------------------------------------------------------------------------------

EXPECTED_KEYS = {
    "n_stays",
    "n_hours",
    "n_septic_stays",
    "auroc",
    "utility",
    "threshold",
    "news2_auroc",
    "news2_utility",
    "news2_threshold",
    "model_version",
    "elapsed_s",
}


def test_evaluate_directory_and_tarball(tmp_path: Path) -> None:
    from_dir = ev.evaluate(FIXTURES, progress=False)
    assert set(from_dir) >= EXPECTED_KEYS
    assert from_dir["n_stays"] == 12
    assert from_dir["n_septic_stays"] == 6
    assert from_dir["n_hours"] == sum(s.shape[0] for _, s in fixture_stays())
    assert 0.0 <= from_dir["auroc"] <= 1.0
    assert 0.0 <= from_dir["news2_auroc"] <= 1.0
    assert from_dir["news2_threshold"] == 5
    assert from_dir["threshold"] == sp.SepsisModel.load().operating_threshold
    assert from_dir["utility"] <= 1.0
    assert from_dir["news2_utility"] <= 1.0

    archive = tmp_path / "stays.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted(FIXTURES.glob("*.psv")):
            tf.add(f, arcname=f"training_setX/{f.name}")
        tf.add(FIXTURES / "README.md", arcname="training_setX/README.md")  # ignored
    from_tar = ev.evaluate(archive, progress=False)
    for key in EXPECTED_KEYS - {"elapsed_s"}:
        assert from_tar[key] == from_dir[key], key


def test_evaluate_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert ev.main([str(FIXTURES)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_stays"] == 12
    assert ev.main([]) == 2


def test_evaluate_rejects_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no \.psv stays"):
        ev.evaluate(tmp_path, progress=False)
