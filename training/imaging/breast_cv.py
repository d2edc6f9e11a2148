"""Choose the breast recipe by cross-validation on the official TRAIN split only (val is never read).

    D=/work/shared/data/imaging/medmnist/breastmnist.npz
    python training/imaging/breast_cv.py run --data $D --config base --seed 0 --out /tmp/breast_cv
    python training/imaging/breast_cv.py summary /tmp/breast_cv

``run`` trains one network per fold of a 5-fold stratified split of the 546 train images. Inside each
training fold the recipe of ``train.py`` is repeated as shipped: 15 % of the fold is the inner tune split
(normalisation from the inner fit part, epoch choice by tune AUC); after every epoch the held-out fold is
scored, plain and with its mirror image averaged in (test-time flip), so one run evaluates four recipes:
{best-tune epoch, last epoch} x {no flip, flip}. ``summary`` reports the mean held-out-fold AUC of every
recipe for one network and for the ensemble of the networks of all seeds run for a config (members
averaged in logit space as the exported graph does).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train as T  # noqa: E402  (the training script next to this one)

N_FOLDS = 5

# Overrides of the breast Spec in train.py ("base" is the shipped 1.0.0 recipe).
CONFIGS: dict[str, dict[str, Any]] = {
    "base": {},
    "ep100": {"epochs": 100},
    "mixup": {"mixup": 0.4},
    "mixup_ep100": {"mixup": 0.4, "epochs": 100},
    "aug_strong": {"rotate_deg": 15.0, "shift": 0.1, "scale": 0.15, "brightness": 0.15, "contrast": 0.25},
    "ls10": {"label_smoothing": 0.1},
    "wide": {"widths": (24, 48, 96)},
    "wd_lr": {"lr": 2e-3, "weight_decay": 0.1},
}


def spec_of(config: str) -> T.Spec:
    return dataclasses.replace(T.SPECS["breast"], **CONFIGS[config])


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    spec = spec_of(args.config)
    train = T.load_medmnist(args.data, "train")  # the val split is never loaded here
    x, y = T.to_tensor(train.images), train.labels
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=T.SEED)
    out: dict[str, np.ndarray] = {"labels": y}
    t0 = time.time()
    for fold, (train_idx, test_idx) in enumerate(folds.split(np.zeros(len(y)), y)):
        inner_fit, inner_tune = T.stratified_holdout(y[train_idx], T.SEED + fold)
        fit_idx, tune_idx = train_idx[inner_fit], train_idx[inner_tune]
        mean, std = x[fit_idx].mean(dim=(0, 2, 3)), x[fit_idx].std(dim=(0, 2, 3))
        xt = T.normalise(x[test_idx], mean, std)
        xu = T.normalise(x[tune_idx], mean, std)
        rec: dict[str, list[np.ndarray]] = {"test": [], "test_flip": [], "tune": [], "tune_flip": []}

        def on_epoch(epoch: int, model: torch.nn.Module, xt=xt, xu=xu, rec=rec) -> None:
            for key, xx in (("test", xt), ("tune", xu)):
                rec[key].append(T.forward_all(model, xx).numpy())
                rec[key + "_flip"].append(T.forward_all(model, T.hflip(xx)).numpy())

        seed = T.SEED + args.seed
        _, info = T.fit_one(spec, x[fit_idx], y[fit_idx], x[tune_idx], y[tune_idx], mean, std, seed, on_epoch)
        for key, arrs in rec.items():
            out[f"f{fold}_{key}"] = np.stack(arrs)
        out[f"f{fold}_test_idx"] = test_idx
        out[f"f{fold}_tune_y"] = y[tune_idx]
        out[f"f{fold}_best_epoch"] = np.array(info["best_epoch"])
        last = T.task_auc(spec, y[test_idx], out[f"f{fold}_test"][-1].astype(np.float64))
        T.log(f"{args.config} seed {seed} fold {fold}: best tune epoch {info['best_epoch']}, last-epoch AUC {last:.4f}")
    out["seconds"] = np.array(time.time() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"{args.config}_s{args.seed}.npz", **out)


def best_epoch(spec: T.Spec, tune: np.ndarray, y: np.ndarray) -> int:
    """train.py's rule: best tune AUC, ties to the lower NLL (epochs counted from 0 here)."""
    best, pick = (-1.0, 0.0), 0
    for e, z in enumerate(tune.astype(np.float64)):
        auc = T.task_auc(spec, y, z)
        nll = float(torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y)))
        if (auc, -nll) > best:
            best, pick = (auc, -nll), e
    return pick


def summary(args: argparse.Namespace) -> None:
    spec = T.SPECS["breast"]
    runs: dict[str, list[dict[str, np.ndarray]]] = {}
    for path in sorted(args.dir.glob("*_s*.npz")):
        config = path.stem.rsplit("_s", 1)[0]
        with np.load(path) as d:
            runs.setdefault(config, []).append(dict(d))
    print(f"mean held-out-fold AUC over {N_FOLDS} folds (SD over folds); 'ens' averages the seeds' logits")
    print(f"{'config':<14}{'seeds':>6}  {'single: best/last':>20}  {'+flip best/last':>18}  {'ens: best/last':>16}"
          f"  {'ens+flip best/last':>19}  min/run")
    for config, rs in runs.items():
        y = rs[0]["labels"]
        cells: dict[str, list[float]] = {}
        for fold in range(N_FOLDS):
            yt = y[rs[0][f"f{fold}_test_idx"]]
            yu = rs[0][f"f{fold}_tune_y"]
            picks = {"best": [], "last": []}
            for r in rs:
                for flip in (False, True):
                    t = r[f"f{fold}_test"] + (r[f"f{fold}_test_flip"] if flip else 0)
                    u = r[f"f{fold}_tune"] + (r[f"f{fold}_tune_flip"] if flip else 0)
                    b = best_epoch(spec, u / (2 if flip else 1), yu) if flip else int(r[f"f{fold}_best_epoch"]) - 1
                    for rule, e in (("best", b), ("last", len(t) - 1)):
                        z = t[e] / (2 if flip else 1)
                        cells.setdefault(f"single_{rule}_{flip}", []).append(T.task_auc(spec, yt, z.astype(np.float64)))
                        picks[rule].append((flip, z))
            for rule in ("best", "last"):
                for flip in (False, True):
                    z = np.mean([zz for f, zz in picks[rule] if f == flip], axis=0)
                    cells.setdefault(f"ens_{rule}_{flip}", []).append(T.task_auc(spec, yt, z.astype(np.float64)))

        def fmt(kind: str, flip: bool) -> str:
            b, last = (np.mean(cells[f"{kind}_{r}_{flip}"]) for r in ("best", "last"))
            return f"{b:.4f}/{last:.4f}"

        minutes = np.mean([float(r["seconds"]) for r in rs]) / 60
        print(f"{config:<14}{len(rs):>6}  {fmt('single', False):>20}  {fmt('single', True):>18}  "
              f"{fmt('ens', False):>16}  {fmt('ens', True):>19}  {minutes:.1f}")
        if args.folds:
            for key, vals in cells.items():
                print(f"    {key:<20} " + " ".join(f"{v:.3f}" for v in vals[:: max(1, len(vals) // N_FOLDS)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True, type=Path)
    r.add_argument("--config", required=True, choices=sorted(CONFIGS))
    r.add_argument("--seed", type=int, default=0, help="member seed offset (train.py uses 2023 + 0, 1, ...)")
    r.add_argument("--out", required=True, type=Path)
    s = sub.add_parser("summary")
    s.add_argument("dir", type=Path)
    s.add_argument("--folds", action="store_true")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else summary(args)


if __name__ == "__main__":
    main()
