"""Train the sepsis early-warning model shipped as ``tianfu/monitoring/models/sepsis_v1``.

    python training/sepsis/train.py \\
        --data /work/shared/data/monitoring/physionet2019/training_setA.tar.gz \\
        --out src/tianfu/monitoring/models/

Steps (all seeded, so a rerun with the same data and library versions writes the same ``.npz``):

1. Stream every stay of the archive, compute the hourly features with the serving code
   (``tianfu.monitoring.sepsis.extract_features``) and the hourly partial NEWS2.
2. Patient-level stratified k-fold cross-validation (split by stay, stratified by "ever septic"):
   fit a ``HistGradientBoostingClassifier`` on k-1 folds, score the held-out fold. For fold i the
   isotonic calibration map and the utility-maximising threshold are fitted on the out-of-fold
   predictions of the *other* folds only, then applied to fold i; the same fold's NEWS2 metrics
   are computed beside it.
3. Calibration and operating threshold of the shipped model: isotonic map and utility-maximising
   threshold on all out-of-fold predictions.
4. Fit on all stays, export the trees to flat numpy arrays, check the numpy evaluator against
   ``predict_proba`` of scikit-learn, write ``sepsis_v1.npz``, ``sepsis_v1.json`` and the model card.

Needs scikit-learn (training only; serving needs numpy only). The training date written in the
JSON is today's unless ``SOURCE_DATE_EPOCH`` is set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

from tianfu.monitoring.evaluate import NEWS2_ALARM, UtilityTable, auroc
from tianfu.monitoring.sepsis import (
    FEATURE_DESCRIPTION,
    FEATURE_NAMES,
    LABEL_INDEX,
    MODEL_NAME,
    SepsisModel,
    extract_features,
    iter_stays,
    news2_for_stay,
)

SEED = 2019
N_FOLDS = 5
VERSION = "1.0.0"
HGB_PARAMS: dict[str, Any] = {
    "loss": "log_loss",
    "learning_rate": 0.05,
    "max_iter": 200,
    "max_leaf_nodes": 15,
    "max_depth": 8,
    "min_samples_leaf": 500,
    "max_features": 0.5,
    "l2_regularization": 1.0,
    "max_bins": 255,
    "early_stopping": False,
    "random_state": SEED,
}
CALIBRATION_POINTS = 512  # isotonic breakpoints kept in the artefact (quantiles of the raw score)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_dataset(path: str, cache: str | None = None) -> dict[str, Any]:
    """Features, labels, stay index and NEWS2 for every hour of every stay under ``path``."""
    if cache and Path(cache).exists():
        log(f"loading cached features from {cache}")
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    news: list[np.ndarray] = []
    names: list[str] = []
    lengths: list[int] = []
    for name, stay in iter_stays(path):
        feats.append(extract_features(stay))
        labels.append(stay[:, LABEL_INDEX])
        news.append(news2_for_stay(stay))
        names.append(name)
        lengths.append(stay.shape[0])
        if len(names) % 2000 == 0:
            log(f"  {len(names)} stays read ({time.time() - t0:.0f} s)")
    data = {
        "X": np.concatenate(feats),
        "y": np.concatenate(labels).astype(np.int8),
        "news2": np.concatenate(news),
        "stay": np.repeat(np.arange(len(names)), lengths),
        "lengths": np.array(lengths),
        "names": np.array(names),
    }
    n_hours, n_feats = data["X"].shape
    log(f"{len(names)} stays, {n_hours} hours, {n_feats} features ({time.time() - t0:.0f} s)")
    if cache:
        np.savez(cache, **data)
    return data


def split_by_stay(values: np.ndarray, lengths: np.ndarray, stays: np.ndarray) -> list[np.ndarray]:
    """Per-stay slices of an hourly array, for the stays listed (in that order)."""
    offsets = np.r_[0, np.cumsum(lengths)]
    return [values[offsets[s] : offsets[s + 1]] for s in stays]


# --------------------------------------------------------------------------------------------
# Model pieces
# --------------------------------------------------------------------------------------------


def fit_hgb(X: np.ndarray, y: np.ndarray) -> HistGradientBoostingClassifier:
    clf = HistGradientBoostingClassifier(**HGB_PARAMS)
    clf.fit(X, y)
    return clf


def fit_calibration(raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic map from raw log-odds to probability, thinned to a few hundred interpolation points."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True)
    iso.fit(raw, y)
    qs = np.unique(np.quantile(raw, np.linspace(0.0, 1.0, CALIBRATION_POINTS)))
    ys = iso.predict(qs)
    return qs.astype(np.float64), np.maximum.accumulate(ys).astype(np.float64)


def export_trees(clf: HistGradientBoostingClassifier) -> dict[str, np.ndarray]:
    """Flatten sklearn's fitted predictors into node arrays (see ``SepsisModel``)."""
    feature, threshold, missing_left, left, right, value, roots = [], [], [], [], [], [], []
    offset = 0
    max_depth = 0
    for per_iter in clf._predictors:
        if len(per_iter) != 1:
            raise ValueError("binary classification expected")
        nodes = per_iter[0].nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported")
        n = nodes.shape[0]
        is_leaf = nodes["is_leaf"].astype(bool)
        idx = np.arange(n)
        lft = np.where(is_leaf, idx, nodes["left"].astype(np.int64))
        rgt = np.where(is_leaf, idx, nodes["right"].astype(np.int64))
        # node value for Saabas attribution: count-weighted mean of the leaves below
        val = np.where(is_leaf, nodes["value"], 0.0).astype(np.float64)
        cnt = nodes["count"].astype(np.float64)
        order = np.argsort(-nodes["depth"], kind="stable")  # deepest first: children before parents
        for i in order:
            if not is_leaf[i]:
                li, ri = lft[i], rgt[i]
                val[i] = (cnt[li] * val[li] + cnt[ri] * val[ri]) / (cnt[li] + cnt[ri])
        max_depth = max(max_depth, int(nodes["depth"].max()))
        feature.append(np.where(is_leaf, 0, nodes["feature_idx"]).astype(np.int32))
        threshold.append(np.where(is_leaf, 0.0, nodes["num_threshold"]).astype(np.float64))
        missing_left.append(nodes["missing_go_to_left"].astype(bool) & ~is_leaf)
        left.append((lft + offset).astype(np.int32))
        right.append((rgt + offset).astype(np.int32))
        value.append(val)
        roots.append(offset)
        offset += n
    return {
        "feature": np.concatenate(feature),
        "threshold": np.concatenate(threshold),
        "missing_left": np.concatenate(missing_left),
        "left": np.concatenate(left),
        "right": np.concatenate(right),
        "value": np.concatenate(value),
        "roots": np.array(roots, dtype=np.int32),
        "baseline": np.array([float(np.asarray(clf._baseline_prediction).reshape(-1)[0])]),
        "max_depth": np.array([max_depth], dtype=np.int32),
    }


# --------------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------------


def cross_validate(data: dict[str, Any]) -> dict[str, Any]:
    X, y, stay, lengths, news2 = data["X"], data["y"], data["stay"], data["lengths"], data["news2"]
    n_stays = lengths.shape[0]
    septic_stay = np.zeros(n_stays, dtype=bool)
    septic_stay[stay[y == 1]] = True
    skf = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=SEED)
    fold_of_stay = np.empty(n_stays, dtype=np.int64)
    for k, (_, test_stays) in enumerate(skf.split(np.zeros(n_stays), septic_stay)):
        fold_of_stay[test_stays] = k
    fold_of_row = fold_of_stay[stay]
    oof_raw = np.empty(X.shape[0])
    for k in range(N_FOLDS):
        t0 = time.time()
        train = fold_of_row != k
        clf = fit_hgb(X[train], y[train])
        oof_raw[~train] = clf.decision_function(X[~train])
        log(
            f"fold {k}: fitted on {int(train.sum())} hours, "
            f"raw AUROC {auroc(y[~train], oof_raw[~train]):.4f} "
            f"({time.time() - t0:.0f} s)"
        )

    folds: list[dict[str, Any]] = []
    for k in range(N_FOLDS):
        test = fold_of_row == k
        other = ~test
        # calibration and threshold from the other folds' out-of-fold predictions only
        cx, cy = fit_calibration(oof_raw[other], y[other])
        other_stays = np.flatnonzero(fold_of_stay != k)
        test_stays = np.flatnonzero(fold_of_stay == k)
        other_table = UtilityTable.from_labels(split_by_stay(y, lengths, other_stays))
        p_other = np.concatenate(split_by_stay(np.interp(oof_raw, cx, cy), lengths, other_stays))
        th, _ = other_table.best_threshold(p_other)
        p_test = np.concatenate(split_by_stay(np.interp(oof_raw, cx, cy), lengths, test_stays))
        y_test = np.concatenate(split_by_stay(y, lengths, test_stays))
        n_test = np.concatenate(split_by_stay(news2, lengths, test_stays))
        table = UtilityTable.from_labels(split_by_stay(y, lengths, test_stays))
        row = {
            "fold": k,
            "n_stays": int(test_stays.size),
            "n_septic_stays": int(septic_stay[test_stays].sum()),
            "n_hours": int(test.sum()),
            "model_auroc": auroc(y_test, p_test),
            "model_utility": table.score(p_test >= th),
            "model_threshold": th,
            "model_alarm_rate": float(np.mean(p_test >= th)),
            "news2_auroc": auroc(y_test, n_test),
            "news2_utility": table.score(n_test >= NEWS2_ALARM),
            "news2_alarm_rate": float(np.mean(n_test >= NEWS2_ALARM)),
        }
        folds.append(row)
        log(
            "fold {fold}: model AUROC {model_auroc:.4f} utility {model_utility:.4f} "
            "(th {model_threshold:.4f}); "
            "NEWS2 AUROC {news2_auroc:.4f} utility {news2_utility:.4f}".format(**row)
        )

    # shipped calibration + threshold: all out-of-fold predictions
    cx, cy = fit_calibration(oof_raw, y)
    all_stays = np.arange(n_stays)
    table = UtilityTable.from_labels(split_by_stay(y, lengths, all_stays))
    p_all = np.interp(oof_raw, cx, cy)
    th, u_oof = table.best_threshold(p_all)
    keys = (
        "model_auroc",
        "model_utility",
        "news2_auroc",
        "news2_utility",
        "model_alarm_rate",
        "news2_alarm_rate",
    )
    summary = {
        "folds": folds,
        "mean": {k: float(np.mean([f[k] for f in folds])) for k in keys},
        "std": {k: float(np.std([f[k] for f in folds], ddof=1)) for k in keys},
        "pooled_oof": {
            "model_auroc": auroc(y, p_all),
            "model_utility_at_threshold": u_oof,
            "news2_auroc": auroc(y, news2),
            "news2_utility": table.score(news2 >= NEWS2_ALARM),
        },
        "operating_threshold": th,
        "calibration": (cx, cy),
    }
    return summary


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def training_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC).date().isoformat()
    return dt.datetime.now(tz=dt.UTC).date().isoformat()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed member order (numpy writes fixed zip timestamps)."""
    np.savez_compressed(path, **{k: arrays[k] for k in sorted(arrays)})


def fmt(x: float) -> str:
    return f"{x:.3f}"


def write_model_card(path: Path, meta: dict[str, Any]) -> None:
    cv = meta["metrics"]["cross_validation"]
    rows = "\n".join(
        f"| {f['fold']} | {f['n_stays']} | {f['n_septic_stays']} | {fmt(f['model_auroc'])} | "
        f"{fmt(f['model_utility'])} | {fmt(f['model_threshold'])} | {fmt(f['news2_auroc'])} | "
        f"{fmt(f['news2_utility'])} |"
        for f in cv["folds"]
    )
    m, s = cv["mean"], cv["std"]
    p = meta["model"]["params"]

    def pm(key: str) -> str:
        return f"{fmt(m[key])} ± {fmt(s[key])}"

    mean_row = (
        f"| **mean ± sd** | | | **{pm('model_auroc')}** | **{pm('model_utility')}** | | "
        f"{pm('news2_auroc')} | {pm('news2_utility')} |"
    )
    pooled = cv["pooled_oof"]
    text = f"""# Model card — sepsis early warning `{meta["name"]}` v{meta["version"]}

Hourly probability that an ICU patient's PhysioNet/CinC 2019 `SepsisLabel` is 1 (the label turns
1 six hours before Sepsis-3 onset), with an alarm threshold chosen to maximise the Challenge's
normalised utility. Serving code: `src/tianfu/monitoring/sepsis.py` (numpy only); evaluation:
`src/tianfu/monitoring/evaluate.py`; training: `training/sepsis/train.py` (this card is written by it).

## Intended use
Research and decision support, **not for clinical use**. It is not a medical device, has not been
validated prospectively or on any Chinese hospital, and must not trigger treatment on its own.
Any deployment needs local validation (see Limits) and clinical governance.

## Data and licence
- PhysioNet/CinC Challenge 2019, training set A (hospital A): {meta["data"]["n_stays"]} ICU stays,
  {meta["data"]["n_hours"]} hours, {meta["data"]["n_septic_stays"]} stays with sepsis
  ({meta["data"]["positive_hour_rate"]:.2%} of hours labelled 1). Reyna MA et al., "Early Prediction
  of Sepsis From Clinical Data: the PhysioNet/Computing in Cardiology Challenge 2019", Crit Care Med
  2020;48(2):210-217. Goldberger AL et al., PhysioBank, PhysioToolkit and PhysioNet, Circulation 2000.
- Licence: {meta["data"]["licence"]}. The model is a derivative of that data; keep the attribution.
- Hospital B of the same Challenge is held out for independent evaluation and was never used here.

## Model
- scikit-learn {meta["training"]["sklearn_version"]} `HistGradientBoostingClassifier`
  ({meta["model"]["n_trees"]} trees, ≤{p["max_leaf_nodes"]} leaves, depth ≤{p["max_depth"]},
  ≥{p["min_samples_leaf"]} hours per leaf, {p["max_features"]:.0%} of the features drawn at each split,
  learning rate {p["learning_rate"]}, L2 {p["l2_regularization"]}, log-loss, no class weights, seed
  {SEED}), exported to flat numpy arrays ({meta["model"]["n_nodes"]} nodes; artefact
  {meta["model"]["artefact_bytes"] / 1024:.0f} KiB) and evaluated by a vectorised numpy walk that
  matches `predict_proba` to within {meta["model"]["max_abs_diff_vs_sklearn"]:.1e}.
- Calibration: isotonic regression of the out-of-fold log-odds on the labels, stored as
  {meta["model"]["calibration_points"]} interpolation points (`numpy.interp`).
- Operating threshold: {meta["operating_threshold"]:.4f} (calibrated probability), the value that
  maximises the normalised utility over all out-of-fold predictions of hospital A.
- Explanations: Saabas path attribution (per tree, the change of the count-weighted mean leaf
  value at each split is credited to the split's feature), summed per measured signal. Cheap and
  exact in sum (bias + contributions = log-odds), but biased towards features split near the root;
  read it as "what moved this score", not as causal importance.

## Features ({len(meta["feature_names"])})
{meta["feature_description"]}

## Cross-validated performance (hospital A, {N_FOLDS}-fold, split by stay, stratified by sepsis)
Per fold, the calibration map and the utility-maximising threshold come from the other folds'
out-of-fold predictions, so the fold's own utility is not tuned on itself. NEWS2 = partial NEWS2
(RR, SpO2 scale 1, O2 if FiO2 > 0.21, SBP, HR, Temp; consciousness assumed Alert; LOCF per stay),
score as the risk for AUROC, alarm at ≥ 5 for utility.

| fold | stays | septic | model AUROC | model utility | threshold | NEWS2 AUROC | NEWS2 utility |
|---|---|---|---|---|---|---|---|
{rows}
{mean_row}

Pooled out-of-fold: model AUROC {fmt(pooled["model_auroc"])}, utility at the shipped threshold
{fmt(pooled["model_utility_at_threshold"])} (optimistic: the threshold was chosen on these same
predictions); NEWS2 AUROC {fmt(pooled["news2_auroc"])}, utility {fmt(pooled["news2_utility"])}.
Alarm rate (share of hours at or above the threshold): model {m["model_alarm_rate"]:.1%}, NEWS2 ≥ 5
{m["news2_alarm_rate"]:.1%}.

Targets from the issue: AUROC ≥ 0.80 and utility ≥ 0.30 **on unseen data**. The numbers above are
internal (same hospital) and are an upper bound on what to expect elsewhere.

## Caveats and limits
- **One hospital, ICU only.** All training and validation data come from hospital A's ICUs. In
  the Challenge, nearly every entry scored a *negative* utility on the hidden hospital C (the
  winner 0.360 overall but −0.123 on C); expect a large drop on hospital B and on any Chengdu
  hospital. Re-validate, recalibrate and re-choose the threshold locally before any use.
- The hyper-parameters were picked among three settings (31 vs 63 vs 15 leaves, with and without
  feature subsampling, 100-500 trees) by their AUROC/utility on CV fold 0, so fold 0 and the mean
  are slightly optimistic; the differences were small (AUROC 0.814-0.839 on that fold).
- Some strong features are care-process signals rather than physiology: lab ordering counts,
  time since measurement, ICU length of stay (ICULOS) and hospital admission time. They encode
  hospital A's practice and label construction and may not transfer.
- The label is the Challenge's retrospective Sepsis-3 onset (suspected infection + SOFA rise);
  it is noisy, and SepsisLabel stays 1 after onset, so hourly AUROC rewards recognising
  established sepsis as well as predicting it.
- No consciousness/GCS, no medications, fluids or cultures in the data; the partial NEWS2 lacks
  consciousness and has only FiO2 as an oxygen proxy, and NEWS2 is a ward score: its ICU
  alarm rate is high and its PPV low (see `docs/monitoring.md` §4).
- Probabilities are calibrated on hospital A's prevalence ({meta["data"]["positive_hour_rate"]:.2%}
  of hours); elsewhere they are a ranking, not a risk, until recalibrated.
- Adults in US ICUs; no paediatric or obstetric validation; no subgroup (sex, age) analysis yet.
- **In Tianfu** the model scores ward patients from monitor data: hours count from the start of the
  stay (ICULOS), HospAdmTime is 0, the ICU unit flags are unknown and labs are absent unless a lab
  system sends them. That is a different population and feature mix from the training ICUs, so
  on a ward the risk is a ranking shown beside NEWS2 (flagged above the threshold); it raises no alarm.

## Reproduce
```
python training/sepsis/train.py --data training_setA.tar.gz --out src/tianfu/monitoring/models/
python -m tianfu.monitoring.evaluate training_setA.tar.gz   # in-sample on A: optimistic
```
Trained {meta["training_date"]} with Python {meta["training"]["python"]}, numpy
{meta["training"]["numpy_version"]}, scikit-learn {meta["training"]["sklearn_version"]} in
{meta["training"]["seconds"] / 60:.0f} min on {meta["training"]["cpu_threads"]} CPU threads.
Artefact SHA-256 `{meta["model"]["sha256"]}`.
"""
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="directory or .tar.gz of PhysioNet 2019 .psv stays")
    ap.add_argument("--out", required=True, help="output directory for sepsis_v1.npz/.json")
    ap.add_argument("--card", default=str(Path(__file__).with_name("MODEL_CARD.md")), help="model card path")
    ap.add_argument("--cache", default=None, help="optional .npz to cache the feature matrix")
    ap.add_argument("--skip-cv", action="store_true", help="fit on all data only (debugging)")
    ap.add_argument("--card-only", action="store_true", help="rewrite the model card from the JSON in --out")
    args = ap.parse_args(argv)
    if args.card_only:
        meta = json.loads((Path(args.out) / f"{MODEL_NAME}.json").read_text(encoding="utf-8"))
        write_model_card(Path(args.card), meta)
        return 0

    t_start = time.time()
    np.random.seed(SEED)
    data = load_dataset(args.data, args.cache)
    X, y = data["X"], data["y"]
    if X.shape[1] != len(FEATURE_NAMES):
        raise SystemExit("cached features do not match the feature extractor; delete the cache")

    cv = cross_validate(data) if not args.skip_cv else None

    log("fitting the final model on all stays")
    clf = fit_hgb(X, y)
    arrays = export_trees(clf)
    if cv is not None:
        cx, cy = cv.pop("calibration")
        threshold = float(cv.pop("operating_threshold"))
    else:
        cx, cy = fit_calibration(clf.decision_function(X), y)
        threshold = 0.5
    arrays["calib_x"], arrays["calib_y"] = cx, cy

    # the numpy evaluator must reproduce sklearn
    meta_stub = {"feature_names": list(FEATURE_NAMES), "operating_threshold": threshold}
    model = SepsisModel.from_arrays(arrays, meta_stub)
    rng = np.random.default_rng(SEED)
    check = rng.choice(X.shape[0], size=min(20_000, X.shape[0]), replace=False)
    p_np = 1.0 / (1.0 + np.exp(-model.raw_score(X[check])))
    p_sk = clf.predict_proba(X[check])[:, 1]
    max_diff = float(np.max(np.abs(p_np - p_sk)))
    log(f"numpy vs sklearn max |dp| on {check.size} rows: {max_diff:.2e}")
    if max_diff > 1e-9:
        raise SystemExit("numpy tree evaluator disagrees with sklearn")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    npz_path = out / f"{MODEL_NAME}.npz"
    write_npz(npz_path, arrays)
    digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    n_stays = int(data["lengths"].shape[0])
    meta: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": VERSION,
        "task": "hourly probability of PhysioNet/CinC 2019 SepsisLabel (onset - 6 h onwards)",
        "intended_use": "research and decision support, not for clinical use",
        "training_date": training_date(),
        "data": {
            "source": "PhysioNet/CinC Challenge 2019, training set A (hospital A)",
            "citation": "Reyna MA et al. Crit Care Med 2020;48(2):210-217",
            "licence": "CC BY 4.0 (PhysioNet open access)",
            "n_stays": n_stays,
            "n_hours": int(X.shape[0]),
            "n_septic_stays": int(np.unique(data["stay"][y == 1]).size),
            "positive_hour_rate": float(np.mean(y)),
        },
        "feature_names": list(FEATURE_NAMES),
        "feature_description": FEATURE_DESCRIPTION,
        "model": {
            "type": "HistGradientBoostingClassifier exported to numpy arrays",
            "params": HGB_PARAMS,
            "n_trees": int(arrays["roots"].shape[0]),
            "n_nodes": int(arrays["feature"].shape[0]),
            "max_depth": int(arrays["max_depth"][0]),
            "calibration": "isotonic on out-of-fold log-odds, linear interpolation",
            "calibration_points": int(cx.shape[0]),
            "explanation": "Saabas path attribution in log-odds, summed per signal",
            "max_abs_diff_vs_sklearn": max_diff,
            "artefact": npz_path.name,
            "artefact_bytes": npz_path.stat().st_size,
            "sha256": digest,
        },
        "operating_threshold": threshold,
        "metrics": {"cross_validation": cv} if cv is not None else {},
        "training": {
            "seed": SEED,
            "folds": N_FOLDS,
            "python": platform.python_version(),
            "numpy_version": np.__version__,
            "sklearn_version": sklearn.__version__,
            "cpu_threads": os.cpu_count(),
            "seconds": round(time.time() - t_start, 1),
        },
    }
    (out / f"{MODEL_NAME}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if cv is not None:
        write_model_card(Path(args.card), meta)
    log(
        f"wrote {npz_path} ({npz_path.stat().st_size} bytes, sha256 {digest[:12]}), threshold {threshold:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
