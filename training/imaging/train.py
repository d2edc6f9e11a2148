"""Train, calibrate and export the imaging models shipped in ``src/tianfu/imaging/models/``.

    D=/work/shared/data/imaging M=src/tianfu/imaging/models/
    python training/imaging/train.py --task pneumonia --data $D/medmnist/pneumoniamnist.npz --out $M
    python training/imaging/train.py --task breast --data $D/medmnist/breastmnist.npz --out $M
    python training/imaging/train.py --task retina --data $D/medmnist/retinamnist.npz --out $M
    python training/imaging/train.py --task cxr-abnormal --data $D/cxr-samples/nih1000_64px --out $M

Protocol (every step seeded; CPU; ``--threads``, default 1: on two cores shared with other work, two
intra-op threads ran 2-4x slower than one; results are bit-reproducible for a given thread count):

1. MedMNIST tasks: the official ``train`` split is divided, stratified by label, into ``fit`` (85 %)
   and ``tune`` (15 %). Networks learn on ``fit``; ``tune`` picks the epoch (best tune AUC), fits the
   softmax temperature, picks the screening threshold and the heatmap scale. The official ``val``
   split is touched once, at the end, to report metrics; the official ``test`` split is not in our
   copy of the data and is never used.
2. ``cxr-abnormal`` (NIH ChestX-ray14, 1,000 images, 264 patients that leak across the given folders):
   the given folders are ignored; 5-fold cross-validation grouped by patient (and stratified by
   label); inside each training fold 15 % of the patients form ``tune`` as above. The shipped model
   repeats the recipe once on all patients (85 % fit / 15 % tune, grouped by patient).
3. Model: a compact ResNet (3 stages of one basic block each) whose head is global average pooling
   + one linear layer, so the class activation map is exact. ``--seeds`` networks with different
   seeds are averaged; the average is packed into one ONNX graph whose ``features`` output
   concatenates the members' feature maps (head weights concatenated and divided by the number of
   members), so CAM stays exact for the ensemble. Each member keeps the epoch with the best tune AUC, or
   (``keep_epoch="last"``, breast since 1.1.0) the end of its schedule; with ``tta_hflip`` (breast) the
   graph also runs every member on the mirror image and averages the logits (its feature maps, mirrored
   back, join ``features``, so CAM stays exact). ``breast_cv.py`` chose the breast recipe by 5-fold
   cross-validation on the train split.
4. Export ONNX (opset 17), check onnxruntime against torch (|diff| <= 1e-4), run the serving code
   (``tianfu.imaging.inference``) on the raw uint8 ``val`` images and check it reproduces the
   calibrated probabilities, write ``<task>.onnx`` + ``<task>.json`` (sha256, metrics, provenance),
   the model card ``training/imaging/MODEL_CARD_<task>.md`` and the test fixture
   ``tests/imaging/fixtures/model_<task>.npz``.

Needs torch (CPU), onnx, onnxruntime, scikit-learn (splits only). Serving needs numpy + onnxruntime.
The training date written in the JSON is today's unless ``SOURCE_DATE_EPOCH`` is set.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import shlex
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import sklearn
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from torch import nn

from tianfu.imaging.evaluate import metrics, roc_auc
from tianfu.imaging.inference import FORMAT, ImagingModel

REPO = Path(__file__).resolve().parents[2]
SEED = 2023
TUNE_FRACTION = 0.15
N_FOLDS = 5
FIXTURE_SIZE = 16
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Spec:
    """Everything task-specific: data meaning, network size, schedule and augmentation."""

    task: str
    title: str
    classes: tuple[str, ...]
    positive_classes: tuple[int, ...]
    positive_name: str
    kind: str  # "binary" or "ordinal"
    channels: int
    size: int
    stem_stride: int
    widths: tuple[int, int, int]
    epochs: int
    batch: int
    lr: float
    weight_decay: float
    label_smoothing: float
    dropout: float
    seeds: int
    target_sensitivity: float
    rotate_deg: float
    shift: float  # max translation, fraction of the image side
    scale: float  # max relative zoom in/out
    hflip: bool
    vflip: bool
    brightness: float
    contrast: float
    padding: str  # grid_sample padding: "border" for radiographs, "zeros" for the black fundus surround
    # Later additions: their defaults reproduce the 1.0.0 recipes exactly (same random draws, same bytes);
    # hyperparameters at their default are left out of the JSON, so older models' records stay as they were.
    mixup: float = 0.0  # Beta(a, a) mixup of image pairs within a batch; 0 = off
    keep_epoch: str = "best_tune"  # "best_tune": epoch with the best tune AUC; "last": end of the schedule
    tta_hflip: bool = False  # the exported graph averages the image and its mirror image (test-time flip)
    version: str = "1.0.0"


SPECS = {
    s.task: s
    for s in (
        Spec(
            task="pneumonia",
            title="Paediatric chest radiograph: pneumonia vs normal (PneumoniaMNIST)",
            classes=("normal", "pneumonia"),
            positive_classes=(1,),
            positive_name="pneumonia",
            kind="binary",
            channels=1,
            size=28,
            stem_stride=1,
            widths=(16, 32, 64),
            epochs=15,
            batch=128,
            lr=3e-3,
            weight_decay=0.05,
            label_smoothing=0.05,
            dropout=0.2,
            seeds=1,
            target_sensitivity=0.95,
            rotate_deg=10.0,
            shift=0.08,
            scale=0.08,
            hflip=False,
            vflip=False,
            brightness=0.1,
            contrast=0.15,
            padding="border",
        ),
        Spec(
            task="breast",
            title="Breast ultrasound: malignant vs normal/benign (BreastMNIST)",
            classes=("malignant", "normal/benign"),
            positive_classes=(0,),
            positive_name="malignant",
            kind="binary",
            channels=1,
            size=28,
            stem_stride=1,
            widths=(16, 32, 64),
            epochs=60,
            batch=64,
            lr=3e-3,
            weight_decay=0.05,
            label_smoothing=0.05,
            dropout=0.3,
            seeds=5,
            target_sensitivity=0.90,
            rotate_deg=10.0,
            shift=0.08,
            scale=0.1,
            hflip=True,
            vflip=False,
            brightness=0.1,
            contrast=0.15,
            padding="border",
            # 1.1.0, chosen by 5-fold CV on the train split (training/imaging/breast_cv.py): last epoch, not
            # the best tune epoch; test-time flip; 5 members instead of 3.
            keep_epoch="last",
            tta_hflip=True,
            version="1.1.0",
        ),
        Spec(
            task="retina",
            title="Fundus photograph: diabetic-retinopathy grade 0-4 (RetinaMNIST)",
            classes=("grade 0", "grade 1", "grade 2", "grade 3", "grade 4"),
            positive_classes=(2, 3, 4),
            positive_name="referable DR (grade >= 2)",
            kind="ordinal",
            channels=3,
            size=28,
            stem_stride=1,
            widths=(16, 32, 64),
            epochs=40,
            batch=64,
            lr=3e-3,
            weight_decay=0.05,
            label_smoothing=0.05,
            dropout=0.3,
            seeds=3,
            target_sensitivity=0.90,
            rotate_deg=25.0,
            shift=0.06,
            scale=0.08,
            hflip=True,
            vflip=True,
            brightness=0.1,
            contrast=0.15,
            padding="zeros",
        ),
        Spec(
            task="cxr-abnormal",
            title="Adult frontal chest radiograph: abnormal vs normal (NIH ChestX-ray14, 1,000-image subset)",
            classes=("normal", "abnormal"),
            positive_classes=(1,),
            positive_name="abnormal",
            kind="binary",
            channels=1,
            size=64,
            stem_stride=2,
            widths=(16, 32, 64),
            epochs=30,
            batch=64,
            lr=3e-3,
            weight_decay=0.05,
            label_smoothing=0.05,
            dropout=0.3,
            seeds=1,
            target_sensitivity=0.95,
            rotate_deg=8.0,
            shift=0.06,
            scale=0.08,
            hflip=False,
            vflip=False,
            brightness=0.1,
            contrast=0.15,
            padding="border",
        ),
    )
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit non-interlaced PNG (stdlib zlib): no Pillow dependency for 1,000 small files."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: no IHDR")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or interlace != 0 or channels is None:
        raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB(A) PNG is supported")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = [0] * stride
    for r in range(height):
        start = r * (stride + 1)
        ftype, line = raw[start], list(raw[start + 1 : start + 1 + stride])
        cur = [0] * stride
        for i in range(stride):
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + pred) & 0xFF
        out[r] = cur
        prev = cur
    return out.reshape(height, width, channels)


@dataclass
class Dataset:
    images: np.ndarray  # uint8 (N, H, W) or (N, H, W, 3): raw display values, as serving receives them
    labels: np.ndarray  # int64 (N,)
    groups: np.ndarray | None = None  # patient ids where images of one patient must stay together


def load_medmnist(path: Path, split: str) -> Dataset:
    with np.load(path) as d:
        return Dataset(d[f"{split}_images"], d[f"{split}_labels"].astype(np.int64).ravel())


def load_nih(root: Path) -> Dataset:
    rows = list(csv.DictReader((root / "labels.csv").open(encoding="utf-8")))
    images = []
    for row in rows:
        rgb = read_png(root / row["path"])
        if rgb.shape[2] >= 3 and not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            raise ValueError(f"{row['path']}: expected a grey radiograph stored as RGB")
        images.append(rgb[..., 0])
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    groups = np.array([r["nih_patient_id"] for r in rows])
    return Dataset(np.stack(images), labels, groups)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W[, C]) → float32 (N, C, H, W) in [0, 1] (the serving code divides uint8 by 255 too)."""
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0))
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def stratified_holdout(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(labels))
    fit, tune = train_test_split(idx, test_size=TUNE_FRACTION, stratify=labels, random_state=seed)
    return np.sort(fit), np.sort(tune)


def grouped_holdout(labels: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """~15 % of the patients (label-stratified) for tune; no patient on both sides."""
    splitter = StratifiedGroupKFold(n_splits=round(1 / TUNE_FRACTION), shuffle=True, random_state=seed)
    fit, tune = next(splitter.split(np.zeros(len(labels)), labels, groups))
    return np.sort(fit), np.sort(tune)


# ---------------------------------------------------------------- model


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem + 3 one-block stages (stride 1, 2, 2) → GAP → dropout → linear: CAM = Σ_k w_k·feature_k."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        w1, w2, w3 = spec.widths
        self.stem = nn.Sequential(
            nn.Conv2d(spec.channels, w1, 3, spec.stem_stride, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU()
        )
        self.stages = nn.Sequential(Block(w1, w1, 1), Block(w1, w2, 2), Block(w2, w3, 2))
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(w3, len(spec.classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x).mean(dim=(2, 3))))


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror the last (width) axis."""
    return torch.flip(x, dims=(x.ndim - 1,))


class Exported(nn.Module):
    """The averaged ensemble as one graph: input already normalised; outputs (logits, features).

    With ``tta_hflip`` every member also sees the mirror image; its feature maps are mirrored back (so
    the heatmap stays in image coordinates) and its logits join the average. Global average pooling does
    not see the mirroring, so ``features`` (members x views, concatenated) and the averaged head weights
    still explain the logits exactly.
    """

    def __init__(self, members: list[SmallResNet], tta_hflip: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta_hflip = tta_hflip

    def views(self) -> int:
        return 2 if self.tta_hflip else 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.tta_hflip:  # the 1.0.0 graph, op for op (same ONNX bytes)
            feats = [m.features(x) for m in self.members]
            z = torch.stack([m.head(f.mean(dim=(2, 3))) for m, f in zip(self.members, feats, strict=True)])
            return z.mean(dim=0), torch.cat(feats, dim=1)
        # Separate passes, no batch slicing: the traced graph must not bake in the export batch size.
        views = [x, hflip(x)]
        feats, logits = [], []
        for m in self.members:
            for v, image in enumerate(views):
                f = m.features(image)
                logits.append(m.head(f.mean(dim=(2, 3))))
                feats.append(hflip(f) if v else f)
        return torch.stack(logits).mean(dim=0), torch.cat(feats, dim=1)

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """Linear head on the concatenated pooled features equal to the averaged member (and view) heads."""
        k = len(self.members) * self.views()
        weight = torch.cat([m.head.weight for m in self.members for _ in range(self.views())], dim=1) / k
        bias = torch.stack([m.head.bias for m in self.members]).mean(dim=0)
        return weight.detach().numpy().astype(np.float64), bias.detach().numpy().astype(np.float64)


# ---------------------------------------------------------------- training


def augment(x: torch.Tensor, spec: Spec, gen: torch.Generator) -> torch.Tensor:
    """Random affine (small rotation, shift, zoom; flips only where anatomy allows) + intensity jitter."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-spec.rotate_deg, spec.rotate_deg) * math.pi / 180
    zoom = uniform(1 - spec.scale, 1 + spec.scale)
    tx, ty = uniform(-2 * spec.shift, 2 * spec.shift), uniform(-2 * spec.shift, 2 * spec.shift)
    fx = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if spec.hflip else torch.ones(n)
    fy = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if spec.vflip else torch.ones(n)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * fx, -sin * fy, tx], 1), torch.stack([sin * fx, cos * fy, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=spec.padding, align_corners=False)
    contrast = uniform(1 - spec.contrast, 1 + spec.contrast).view(n, 1, 1, 1)
    bright = uniform(-spec.brightness, spec.brightness).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp(0.0, 1.0)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


@torch.no_grad()
def forward_all(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def task_auc(spec: Spec, labels: np.ndarray, logits: np.ndarray) -> float:
    probs = softmax(logits)
    return float(metrics(labels, probs, spec.positive_classes, 0.5)["auc"])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit_one(
    spec: Spec,
    x_fit: torch.Tensor,
    y_fit: np.ndarray,
    x_tune: torch.Tensor,
    y_tune: np.ndarray,
    mean: torch.Tensor,
    std: torch.Tensor,
    seed: int,
    on_epoch: Callable[[int, SmallResNet], None] | None = None,
) -> tuple[SmallResNet, dict[str, Any]]:
    """AdamW, 1-epoch linear warm-up then cosine decay; keeps the epoch with the best tune AUC, or the
    last one (``spec.keep_epoch``). ``on_epoch(epoch, model)`` (model in eval mode) serves experiments."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mix_rng = np.random.default_rng(seed)  # separate stream: mixup off leaves every other draw unchanged
    model = SmallResNet(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    steps_per_epoch = math.ceil(len(x_fit) / spec.batch)
    total = spec.epochs * steps_per_epoch

    def lr_factor(step: int) -> float:
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * (step - steps_per_epoch) / max(1, total - steps_per_epoch)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    y_t = torch.from_numpy(y_fit)
    x_tune_n = normalise(x_tune, mean, std)
    best: tuple[float, float] = (-1.0, 0.0)
    best_state, best_epoch = copy.deepcopy(model.state_dict()), 0
    history = []
    for epoch in range(spec.epochs):
        model.train()
        order = torch.randperm(len(x_fit), generator=gen)
        total_loss = 0.0
        for start in range(0, len(order), spec.batch):
            idx = order[start : start + spec.batch]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            with torch.no_grad():
                xb = normalise(augment(x_fit[idx], spec, gen), mean, std)
            yb = y_t[idx]
            if spec.mixup > 0:
                lam = float(mix_rng.beta(spec.mixup, spec.mixup))
                perm = torch.from_numpy(mix_rng.permutation(len(idx)))
                out = model(lam * xb + (1 - lam) * xb[perm])
                loss = lam * F.cross_entropy(out, yb, label_smoothing=spec.label_smoothing) + (
                    1 - lam
                ) * F.cross_entropy(out, yb[perm], label_smoothing=spec.label_smoothing)
            else:
                loss = F.cross_entropy(model(xb), yb, label_smoothing=spec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        logits = forward_all(model, x_tune_n).numpy().astype(np.float64)
        auc = task_auc(spec, y_tune, logits)
        nll = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y_tune)))
        history.append(
            {"epoch": epoch + 1, "train_loss": total_loss / len(x_fit), "tune_auc": auc, "tune_nll": nll}
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, model)
        # Ties in tune AUC (small tune sets) go to the lower NLL.
        if (auc, -nll) > best:
            best = (auc, -nll)
            if spec.keep_epoch == "best_tune":
                best_state = copy.deepcopy(model.state_dict())
                best_epoch = epoch + 1
    if spec.keep_epoch == "last":
        best_state, best_epoch = copy.deepcopy(model.state_dict()), spec.epochs
    model.load_state_dict(best_state)
    model.eval()
    kept_auc = history[best_epoch - 1]["tune_auc"] if best_epoch else best[0]
    return model, {"seed": seed, "best_epoch": best_epoch, "best_tune_auc": kept_auc, "history": history}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Softmax temperature minimising the NLL: log-spaced grid, then a finer grid around the best."""

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(labels)), labels].mean())

    grid = np.exp(np.linspace(math.log(0.05), math.log(20.0), 301))
    t0 = float(grid[np.argmin([nll(t) for t in grid])])
    fine = np.exp(np.linspace(math.log(t0) - 0.03, math.log(t0) + 0.03, 121))
    return float(fine[np.argmin([nll(t) for t in fine])])


def nll_of(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def pick_threshold(score: np.ndarray, positive: np.ndarray, target: float) -> float:
    """Highest threshold keeping sensitivity >= target on these data, placed halfway to the next lower score.

    The midpoint keeps the operating point off an exact sample value (ties, float noise in serving).
    """
    pos_scores = np.sort(score[positive])[::-1]
    k = math.ceil(target * len(pos_scores) - 1e-9)
    cut = float(pos_scores[k - 1])
    below = score[score < cut]
    return (cut + float(below.max())) / 2 if below.size else cut / 2


def bootstrap_auc(
    spec: Spec, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None
) -> list[float]:
    """95 % percentile interval of the AUC; resamples patients, not images, when groups are given."""
    rng = np.random.default_rng(SEED)
    units = np.unique(groups) if groups is not None else np.arange(len(labels))
    members = {u: np.flatnonzero(groups == u) for u in units} if groups is not None else None
    values = []
    for _ in range(BOOTSTRAP):
        pick = rng.choice(len(units), size=len(units), replace=True)
        idx = np.concatenate([members[units[p]] for p in pick]) if members is not None else pick
        values.append(metrics(labels[idx], probs[idx], spec.positive_classes, 0.5)["auc"])
    arr = np.asarray(values, dtype=np.float64)
    return [float(np.nanpercentile(arr, 2.5)), float(np.nanpercentile(arr, 97.5))]


@dataclass
class Trained:
    exported: Exported
    mean: torch.Tensor
    std: torch.Tensor
    temperature: float
    threshold: float
    cam_scale: float
    tune_metrics: dict[str, Any]
    runs: list[dict[str, Any]]


def cam_maps(exported: Exported, feats: torch.Tensor, spec: Spec) -> np.ndarray:
    weight, _ = exported.head()
    is_pos = np.zeros(len(spec.classes), dtype=bool)
    is_pos[list(spec.positive_classes)] = True
    vector = weight[is_pos].mean(axis=0) - weight[~is_pos].mean(axis=0)
    return np.einsum("f,nfhw->nhw", vector, feats.numpy().astype(np.float64))


def train_recipe(
    spec: Spec, x: torch.Tensor, y: np.ndarray, fit_idx: np.ndarray, tune_idx: np.ndarray
) -> Trained:
    """Seeds on fit, ensemble, then temperature, threshold and heatmap scale on tune."""
    x_fit, x_tune = x[fit_idx], x[tune_idx]
    y_fit, y_tune = y[fit_idx], y[tune_idx]
    mean = x_fit.mean(dim=(0, 2, 3))
    std = x_fit.std(dim=(0, 2, 3))
    members, runs = [], []
    for s in range(spec.seeds):
        t0 = time.time()
        model, info = fit_one(spec, x_fit, y_fit, x_tune, y_tune, mean, std, SEED + s)
        info["seconds"] = round(time.time() - t0, 1)
        log(f"{spec.task} seed {SEED + s}: epoch {info['best_epoch']}, tune AUC {info['best_tune_auc']:.4f}")
        members.append(model)
        runs.append(info)
    exported = Exported(members, spec.tta_hflip).eval()
    with torch.no_grad():
        logits, feats = exported(normalise(x_tune, mean, std))
    z = logits.numpy().astype(np.float64)
    temperature = fit_temperature(z, y_tune)
    probs = softmax(z / temperature)
    score = probs[:, list(spec.positive_classes)].sum(axis=1)
    threshold = pick_threshold(score, np.isin(y_tune, spec.positive_classes), spec.target_sensitivity)
    per_image_max = np.maximum(cam_maps(exported, feats, spec), 0).reshape(len(feats), -1).max(axis=1)
    cam_scale = float(np.percentile(per_image_max, 95)) or 1.0
    tune = metrics(y_tune, probs, spec.positive_classes, threshold)
    tune["nll_uncalibrated"] = nll_of(softmax(z), y_tune)
    tune["nll_calibrated"] = nll_of(probs, y_tune)
    return Trained(exported, mean, std, temperature, threshold, cam_scale, tune, runs)


def calibrated(trained: Trained, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(uncalibrated logits, calibrated probabilities) of the ensemble."""
    with torch.no_grad():
        logits, _ = trained.exported(normalise(x, trained.mean, trained.std))
    z = logits.numpy().astype(np.float64)
    return z, softmax(z / trained.temperature)


# ---------------------------------------------------------------- export


def export_onnx(spec: Spec, trained: Trained, path: Path, check_x: torch.Tensor) -> dict[str, float]:
    dummy = torch.zeros(2, spec.channels, spec.size, spec.size)
    buf = io.BytesIO()
    torch.onnx.export(
        trained.exported,
        (dummy,),
        buf,
        opset_version=17,
        dynamo=False,  # the TorchScript exporter needs no onnxscript and gives a plain static graph
        input_names=["image"],
        output_names=["logits", "features"],
        dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}},
        do_constant_folding=True,
    )
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    path.write_bytes(buf.getvalue())
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xn = normalise(check_x, trained.mean, trained.std)
    with torch.no_grad():
        t_logits, t_feats = trained.exported(xn)
    o_logits, o_feats = session.run(["logits", "features"], {"image": xn.numpy()})
    diff = {
        "logits": float(np.abs(o_logits - t_logits.numpy()).max()),
        "features": float(np.abs(o_feats - t_feats.numpy()).max()),
    }
    if max(diff.values()) > 1e-4:
        raise RuntimeError(f"onnxruntime differs from torch by {diff}")
    return diff


def rounded(obj: Any, digits: int = 4) -> Any:
    if isinstance(obj, float):
        return round(obj, digits) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def created_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return when.date().isoformat()


def write_fixture(path: Path, images: np.ndarray, labels: np.ndarray, probs: np.ndarray, spec: Spec) -> None:
    """A few images with the training-time calibrated probabilities, for tests without /work/shared."""
    rng = np.random.default_rng(SEED)
    picks: list[int] = []
    per_class = max(1, FIXTURE_SIZE // len(spec.classes))
    for k in range(len(spec.classes)):
        idx = np.flatnonzero(labels == k)
        picks.extend(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    rest = np.setdiff1d(np.arange(len(labels)), picks)
    picks.extend(rng.choice(rest, size=FIXTURE_SIZE - len(picks), replace=False).tolist())
    sel = np.sort(np.asarray(picks))
    score = probs[sel][:, list(spec.positive_classes)].sum(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        val_images=images[sel],
        val_labels=labels[sel].reshape(-1, 1).astype(np.uint8),
        probabilities=probs[sel],
        score=score,
    )


# ---------------------------------------------------------------- main


def hyperparameters(spec: Spec) -> dict[str, Any]:
    """The recipe as recorded in the JSON; later fields only where they differ from their default."""
    defaults = {f.name: f.default for f in fields(Spec) if f.default is not MISSING}
    return {
        k: v
        for k, v in asdict(spec).items()
        if k not in ("title", "classes", "version") and not (k in defaults and v == defaults[k])
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=sorted(SPECS))
    ap.add_argument("--data", required=True, type=Path, help="MedMNIST .npz, or the nih1000_64px folder")
    ap.add_argument("--out", required=True, type=Path, help="models folder (gets <task>.onnx, <task>.json)")
    ap.add_argument("--card-dir", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--fixture-dir", type=Path, default=REPO / "tests" / "imaging" / "fixtures")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, help="override the task's epochs (quick experiments only)")
    ap.add_argument("--seeds", type=int, help="override the task's number of ensembled seeds")
    args = ap.parse_args(argv)
    spec = SPECS[args.task]
    overrides = {k: v for k, v in {"epochs": args.epochs, "seeds": args.seeds}.items() if v is not None}
    spec = Spec(**{**asdict(spec), **overrides}) if overrides else spec

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    wall0, cpu0 = time.time(), time.process_time()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / f"{spec.task}.onnx"
    meta_path = args.out / f"{spec.task}.json"

    cv: dict[str, Any] | None = None
    if spec.task == "cxr-abnormal":
        data = load_nih(args.data)
        assert data.groups is not None
        data_sha = sha256_file(args.data / "labels.csv")
        x, y, groups = to_tensor(data.images), data.labels, data.groups
        log(f"NIH subset: {len(y)} images, {len(np.unique(groups))} patients, {int(y.sum())} abnormal")
        cv = cross_validate(spec, x, y, groups)
        fit_idx, tune_idx = grouped_holdout(y, groups, SEED)
        trained = train_recipe(spec, x, y, fit_idx, tune_idx)
        report_images, report_labels = data.images[tune_idx], y[tune_idx]
        _, report_probs = calibrated(trained, x[tune_idx])
        val_metrics = None
        split_text = (
            f"{len(fit_idx)} fit / {len(tune_idx)} tune images "
            f"({len(np.unique(groups[fit_idx]))} / {len(np.unique(groups[tune_idx]))} patients)"
        )
    else:
        train, val = load_medmnist(args.data, "train"), load_medmnist(args.data, "val")
        data_sha = sha256_file(args.data)
        x, y = to_tensor(train.images), train.labels
        fit_idx, tune_idx = stratified_holdout(y, SEED)
        trained = train_recipe(spec, x, y, fit_idx, tune_idx)
        x_val = to_tensor(val.images)
        val_logits, val_probs = calibrated(trained, x_val)
        val_metrics = metrics(val.labels, val_probs, spec.positive_classes, trained.threshold)
        val_metrics["auc_ci95"] = bootstrap_auc(spec, val.labels, val_probs)
        val_metrics["nll_uncalibrated"] = nll_of(softmax(val_logits), val.labels)
        val_metrics["nll_calibrated"] = nll_of(val_probs, val.labels)
        val_metrics["members_auc"] = [
            task_auc(
                spec,
                val.labels,
                forward_all(m, normalise(x_val, trained.mean, trained.std)).numpy().astype(np.float64),
            )
            for m in trained.exported.members
        ]
        report_images, report_labels, report_probs = val.images, val.labels, val_probs
        split_text = f"{len(fit_idx)} fit / {len(tune_idx)} tune images of the official train split"
        log(f"{spec.task} val: {rounded(val_metrics)}")

    check_x = to_tensor(report_images)
    diff = export_onnx(spec, trained, onnx_path, check_x)
    weight, bias = trained.exported.head()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "task": spec.task,
        "model_name": f"tianfu-imaging-{spec.task}",
        "version": spec.version,
        "created": created_date(),
        "title": spec.title,
        "kind": spec.kind,
        "classes": list(spec.classes),
        "positive_classes": list(spec.positive_classes),
        "positive_name": spec.positive_name,
        "intended_use": "research / decision support (triage) only; not for clinical use; no medical device",
        "onnx": {
            "file": onnx_path.name,
            "sha256": sha256_file(onnx_path),
            "bytes": onnx_path.stat().st_size,
            "opset": 17,
            "inputs": {"image": f"float32 (N, {spec.channels}, {spec.size}, {spec.size}), normalised"},
            "outputs": {
                "logits": f"float32 (N, {len(spec.classes)}), averaged over {spec.seeds} member(s)"
                + (" and 2 views (image, mirror image)" if spec.tta_hflip else ""),
                "features": "float32 (N, F, h, w): last conv feature maps, members concatenated"
                + (" (each member: image, then mirror image's maps mirrored back)" if spec.tta_hflip else ""),
            },
            "max_abs_diff_vs_torch": diff,
        },
        "input": {
            "channels": spec.channels,
            "height": spec.size,
            "width": spec.size,
            "value_scale": "display values to [0, 1] (uint8 / 255), area resize, (x - mean) / std by channel",
            "mean": [float(v) for v in trained.mean],
            "std": [float(v) for v in trained.std],
        },
        "head": {"weight": weight.tolist(), "bias": bias.tolist()},
        "calibration": {
            "method": "temperature scaling of the softmax, NLL-fitted on the tune split",
            "temperature": trained.temperature,
        },
        "operating_point": {
            "threshold": trained.threshold,
            "applies_to": f"calibrated P({spec.positive_name})",
            "chosen_on": "tune split",
            "rule": f"highest threshold with sensitivity >= {spec.target_sensitivity} on tune",
            "target_sensitivity": spec.target_sensitivity,
        },
        "cam": {
            "vector": "mean head weight of the positive classes minus that of the other classes",
            "scale": trained.cam_scale,
            "scale_rule": "P95 over tune images of max ReLU(CAM); heatmap = clip(CAM / scale, 0, 1)",
        },
        "metrics": {"tune": rounded(trained.tune_metrics)},
        "training": {
            "command": "python training/imaging/train.py "
            + shlex.join(sys.argv[1:] if argv is None else argv),
            "data_sha256": data_sha,
            "split": split_text,
            "architecture": f"SmallResNet {list(spec.widths)}, stem stride {spec.stem_stride}, GAP + linear",
            "parameters": sum(p.numel() for p in trained.exported.parameters()),
            "hyperparameters": hyperparameters(spec),
            "seeds": [r["seed"] for r in trained.runs],
            "best_epochs": [r["best_epoch"] for r in trained.runs],
            "member_seconds": [r["seconds"] for r in trained.runs],
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "scikit_learn": sklearn.__version__,
            "python": platform.python_version(),
            "threads": args.threads,
        },
    }
    if val_metrics is not None:
        meta["metrics"]["val"] = rounded(val_metrics)
    if cv is not None:
        meta["metrics"]["cv"] = rounded(cv)
    meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    # The serving code, on raw uint8 images, must give the training-time calibrated probabilities.
    served = ImagingModel.load(spec.task, args.out).predict_proba(report_images)
    serving_diff = float(np.abs(served - report_probs).max())
    if serving_diff > 1e-4:
        raise RuntimeError(f"serving probabilities differ from training by {serving_diff}")
    meta["checks"] = {"serving_vs_training_max_abs_diff": serving_diff, "n_images": len(report_images)}
    meta["training"]["wall_seconds"] = round(time.time() - wall0, 1)
    meta["training"]["cpu_seconds"] = round(time.process_time() - cpu0, 1)
    meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    write_fixture(
        args.fixture_dir / f"model_{spec.task}.npz", report_images, report_labels, report_probs, spec
    )
    write_card(spec, meta, args.card_dir / f"MODEL_CARD_{spec.task}.md")
    seconds = meta["training"]["wall_seconds"]
    log(f"{spec.task}: wrote {onnx_path} ({onnx_path.stat().st_size} B) in {seconds} s")
    return 0


def cross_validate(spec: Spec, x: torch.Tensor, y: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Patient-grouped, label-stratified k-fold CV of the whole recipe (incl. calibration and threshold)."""
    splitter = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=SEED)
    oof = np.zeros((len(y), len(spec.classes)))
    flagged = np.zeros(len(y), dtype=bool)
    folds = []
    for fold, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        inner_fit, inner_tune = grouped_holdout(y[train_idx], groups[train_idx], SEED + fold)
        trained = train_recipe(spec, x, y, train_idx[inner_fit], train_idx[inner_tune])
        _, probs = calibrated(trained, x[test_idx])
        oof[test_idx] = probs
        m = metrics(y[test_idx], probs, spec.positive_classes, trained.threshold)
        flagged[test_idx] = probs[:, list(spec.positive_classes)].sum(axis=1) >= trained.threshold
        m["patients"] = len(np.unique(groups[test_idx]))
        folds.append(m)
        log(f"fold {fold + 1}/{N_FOLDS}: {rounded(m)}")
    is_pos = np.isin(y, spec.positive_classes)
    aucs = np.array([f["auc"] for f in folds])
    return {
        "protocol": f"{N_FOLDS}-fold StratifiedGroupKFold by nih_patient_id (seed {SEED}); in each fold "
        "15 % of the training patients choose epoch, temperature and threshold",
        "folds": folds,
        "auc_mean": float(aucs.mean()),
        "auc_sd": float(aucs.std(ddof=1)),
        "auc_pooled": roc_auc(is_pos, oof[:, list(spec.positive_classes)].sum(axis=1)),
        "auc_pooled_ci95_patient_bootstrap": bootstrap_auc(spec, y, oof, groups),
        "accuracy_pooled": float((oof.argmax(axis=1) == y).mean()),
        "sensitivity_pooled": float((flagged & is_pos).sum() / is_pos.sum()),
        "specificity_pooled": float((~flagged & ~is_pos).sum() / (~is_pos).sum()),
    }


# ---------------------------------------------------------------- model card


def write_card(spec: Spec, meta: dict[str, Any], path: Path) -> None:
    from card import render  # local module next to this script; keeps the prose out of the training code

    path.write_text(render(spec.task, meta), encoding="utf-8")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
