"""Serve the imaging models shipped in ``tianfu/imaging/models`` (numpy + onnxruntime, no torch).

Each task ships ``<task>.onnx`` and ``<task>.json``, both written by ``training/imaging/train.py``:

- the ONNX graph takes ``image`` float32 (N, C, H, W), already scaled to [0, 1] and normalised with the
  JSON's per-channel ``mean``/``std``, and returns ``logits`` (N, K) and ``features`` (N, F, h, w), the
  last convolutional feature maps;
- the JSON holds the classes, the softmax temperature (calibration), the screening threshold, the
  linear head (``logits = head.weight @ mean_hw(features) + head.bias``) and the training metrics.

Because the head is linear on globally averaged features, the class activation map
``CAM = sum_k v_k * features_k`` is exact: its spatial mean plus a constant is the contrast of
logits it explains (no occlusion or gradient approximation needed). ``v`` contrasts the mean
head weight of the positive classes with that of the other classes, so the heatmap shows where
the evidence *for* the screening finding lies.

Decision support only: these are research models trained on public 28x28 / 64x64 data, not a
medical device (see the model cards in ``training/imaging``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

MODELS_DIR = Path(__file__).resolve().parent / "models"
FORMAT = "tianfu-imaging-model/1"
BATCH = 256  # rows per onnxruntime call: bounds memory for large batches, no effect on results

FloatArray = npt.NDArray[np.float32]
Images = Sequence[npt.ArrayLike] | npt.NDArray[Any]  # an (N, H, W[, 3]) array or images of mixed sizes
F64Array = npt.NDArray[np.float64]
# ITU-R BT.601 luma, the usual RGB → grey weights (e.g. a colour-exported radiograph).
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Finding:
    """One image's result.

    ``probability`` is the calibrated probability of the positive class for binary tasks (the value
    the threshold applies to) and of the predicted grade for ``retina``; ``score`` is always the
    value compared with ``threshold`` (for ``retina`` P(grade >= 2), i.e. referable retinopathy).
    ``label`` follows ``positive`` for binary tasks and is the most probable grade for ``retina``.
    ``heatmap`` is float32 in [0, 1] with the height and width of the image given to ``predict``.
    """

    task: str
    model_version: str
    label: str
    probability: float
    probabilities: dict[str, float]
    positive: bool
    threshold: float
    heatmap: FloatArray = field(repr=False, compare=False)
    score: float


def tasks(models_dir: Path | None = None) -> list[str]:
    """Tasks with a shipped model (a ``<task>.json`` next to its ``<task>.onnx``)."""
    root = models_dir or MODELS_DIR
    return sorted(p.stem for p in root.glob("*.json") if p.with_suffix(".onnx").is_file())


def to_unit_range(image: npt.ArrayLike, value_range: tuple[float, float] | None = None) -> F64Array:
    """Map display values to [0, 1] as the models were trained (uint8 / 255).

    ``value_range`` (lo, hi) wins when given: pass ``(0, 2**BitsStored - 1)`` for windowed DICOM
    pixels. Otherwise uint8 uses 0..255, other non-negative integers 0..2**b - 1 with b the bit depth
    their maximum needs (at least 8, so 12-bit data in uint16 is not squashed into the dark end),
    floats already in [0, 1] are kept, and anything else is min-max scaled.
    """
    a = np.asarray(image)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"image must be a real numeric array, got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError("image is empty")
    # Checked and measured on the input itself: a full-size radiograph is 3.6 million pixels, and every
    # float64 pass over it costs milliseconds (the min and max of a float32 array are exact in float64).
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError("image contains NaN or infinite values")
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
    elif a.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    elif np.issubdtype(a.dtype, np.integer) and int(a.min()) >= 0:
        lo, hi = 0.0, float(2 ** max(8, int(a.max()).bit_length()) - 1)
    else:
        mn, mx = float(a.min()), float(a.max())
        if mn >= 0.0 and mx <= 1.0:
            kept: F64Array = a.astype(np.float64)  # already display values (what display_array returns)
            return kept
        lo, hi = mn, mx
    x = a.astype(np.float64)
    if hi <= lo:
        return np.zeros_like(x)
    out: F64Array = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return out


@functools.lru_cache(maxsize=64)
def _area_matrix(n_in: int, n_out: int) -> F64Array:
    """Row i averages the input pixels covered by output pixel i, weighted by overlap (box filter).

    Downsampling by area is the anti-aliased resize (what OpenCV calls INTER_AREA); 28 -> 28 is the
    identity, so MedMNIST-sized inputs reach the network unchanged.
    """
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    j = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.minimum(edges[1:, None], j + 1.0) - np.maximum(edges[:-1, None], j)
    m: F64Array = np.clip(overlap, 0.0, None) / scale
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=64)
def _linear_matrix(n_in: int, n_out: int) -> F64Array:
    """Bilinear interpolation weights with pixel-centre alignment (align_corners=False)."""
    src = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    m.setflags(write=False)
    return m


def resize_area(image: F64Array, height: int, width: int) -> F64Array:
    """Resize an (H, W) or (H, W, C) float image to (height, width[, C]) by area averaging."""
    a_h = _area_matrix(image.shape[0], height)
    a_w = _area_matrix(image.shape[1], width)
    if image.ndim == 2:
        out: F64Array = a_h @ image @ a_w.T
        return out
    # Per channel: two small matrix products (a single 3-operand einsum would loop naively).
    return np.stack([a_h @ image[:, :, c] @ a_w.T for c in range(image.shape[2])], axis=2)


def _to_channels(x: F64Array, channels: int) -> F64Array:
    """(H, W) or (H, W, 1|3|4) → (H, W, channels); grey → RGB by copying, RGB → grey by luma."""
    if x.ndim == 2:
        x = x[:, :, None]
    elif x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected a 2-D grey or H×W×3 (channel-last) image, got shape {x.shape}")
    if x.shape[2] == 4:
        x = x[:, :, :3]  # alpha carries no image content
    if channels == 1 and x.shape[2] == 3:
        grey: F64Array = (x @ _LUMA)[:, :, None]
        return grey
    if channels == 3 and x.shape[2] == 1:
        return np.repeat(x, 3, axis=2)
    return x


def _softmax(z: F64Array) -> F64Array:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: F64Array = e / e.sum(axis=1, keepdims=True)
    return out


class ImagingModel:
    """A loaded task model; use :meth:`load` (cached)."""

    def __init__(self, meta: dict[str, Any], session: ort.InferenceSession) -> None:
        if meta.get("format") != FORMAT:
            raise ValueError(f"unsupported model metadata format {meta.get('format')!r}, expected {FORMAT}")
        self.meta = meta
        self.task = str(meta["task"])
        self.name = str(meta["model_name"])
        self.version = str(meta["version"])
        self.sha256 = str(meta["onnx"]["sha256"])
        self.kind = str(meta["kind"])
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        inp = meta["input"]
        self.channels = int(inp["channels"])
        self.height = int(inp["height"])
        self.width = int(inp["width"])
        self._mean = np.asarray(inp["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
        self._std = np.asarray(inp["std"], dtype=np.float64).reshape(1, -1, 1, 1)
        self.temperature = float(meta["calibration"]["temperature"])
        self.threshold = float(meta["operating_point"]["threshold"])
        self.positive_classes: tuple[int, ...] = tuple(int(i) for i in meta["positive_classes"])
        weight = np.asarray(meta["head"]["weight"], dtype=np.float64)
        is_pos = np.zeros(len(self.classes), dtype=bool)
        is_pos[list(self.positive_classes)] = True
        self._cam_vector = weight[is_pos].mean(axis=0) - weight[~is_pos].mean(axis=0)
        self._cam_scale = float(meta["cam"]["scale"])
        self._session = session

    @classmethod
    def load(cls, task: str, models_dir: Path | None = None) -> ImagingModel:
        """Load (once per process) the model of ``task``; the ONNX file must match its recorded sha256."""
        root = (models_dir or MODELS_DIR).resolve()
        meta_path = root / f"{task}.json"
        if not meta_path.is_file():
            raise KeyError(
                f"no imaging model for task {task!r}; available: {', '.join(tasks(root)) or 'none'}"
            )
        return load_file(meta_path)

    @property
    def model_version(self) -> str:
        return self.version

    def preprocess(self, images: Images, value_range: tuple[float, float] | None = None) -> FloatArray:
        """Images of any size and dtype → the network input (N, C, H, W), float32, normalised."""
        out = np.empty((len(images), self.channels, self.height, self.width), dtype=np.float64)
        for i, image in enumerate(images):
            x = _to_channels(to_unit_range(image, value_range), self.channels)
            out[i] = resize_area(x, self.height, self.width).transpose(2, 0, 1)
        return ((out - self._mean) / self._std).astype(np.float32)

    def run(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Raw network outputs (logits, features) for a preprocessed batch."""
        logits, features = [], []
        for start in range(0, len(x), BATCH):
            lo, fe = self._session.run(["logits", "features"], {"image": x[start : start + BATCH]})
            logits.append(lo)
            features.append(fe)
        return np.concatenate(logits), np.concatenate(features)

    def calibrate(self, logits: npt.NDArray[np.floating[Any]]) -> F64Array:
        """Temperature-scaled softmax: calibrated class probabilities (N, K)."""
        return _softmax(np.asarray(logits, dtype=np.float64) / self.temperature)

    def score(self, probabilities: F64Array) -> F64Array:
        """The screening score the threshold applies to: summed probability of the positive classes."""
        out: F64Array = probabilities[:, list(self.positive_classes)].sum(axis=1)
        return out

    def predict_proba(self, images: Images, value_range: tuple[float, float] | None = None) -> F64Array:
        """Calibrated class probabilities (N, K) without heatmaps (the fast path for evaluation)."""
        logits, _ = self.run(self.preprocess(images, value_range))
        return self.calibrate(logits)

    def heatmap(self, features: FloatArray, height: int, width: int) -> FloatArray:
        """Class activation map for the positive finding, bilinearly upsampled to (height, width).

        Scaled by a constant fixed at training time (not per image), so a negative image shows a
        faint or empty map instead of its weakest evidence stretched to full brightness.
        """
        cam = np.einsum("f,fhw->hw", self._cam_vector, features.astype(np.float64))
        cam = np.maximum(cam, 0.0) / self._cam_scale
        up = (_linear_matrix(cam.shape[0], height) @ cam) @ _linear_matrix(cam.shape[1], width).T
        np.clip(up, 0.0, 1.0, out=up)  # in place: the map is as large as the image
        out: FloatArray = up.astype(np.float32)
        return out

    def predict_batch(self, images: Images, value_range: tuple[float, float] | None = None) -> list[Finding]:
        """Findings for a batch: an (N, H, W[, 3]) array or a sequence of images of different sizes."""
        arrays = [np.asarray(im) for im in images]
        logits, features = self.run(self.preprocess(arrays, value_range))
        probs = self.calibrate(logits)
        scores = self.score(probs)
        findings = []
        for i, image in enumerate(arrays):
            positive = bool(scores[i] >= self.threshold)
            if self.kind == "binary":
                pos = self.positive_classes[0]
                label = self.classes[pos] if positive else self.classes[1 - pos]
                probability = float(scores[i])
            else:
                k = int(np.argmax(probs[i]))
                label, probability = self.classes[k], float(probs[i, k])
            findings.append(
                Finding(
                    task=self.task,
                    model_version=self.version,
                    label=label,
                    probability=probability,
                    probabilities={c: float(p) for c, p in zip(self.classes, probs[i], strict=True)},
                    positive=positive,
                    threshold=self.threshold,
                    heatmap=self.heatmap(features[i], image.shape[0], image.shape[1]),
                    score=float(scores[i]),
                )
            )
        return findings

    def predict(self, image: npt.ArrayLike, value_range: tuple[float, float] | None = None) -> Finding:
        """One image: 2-D grey or H×W×3, any size and dtype (see :func:`to_unit_range` for intensities)."""
        return self.predict_batch([np.asarray(image)], value_range)[0]


def load_file(meta_path: Path) -> ImagingModel:
    """The model a metadata file describes (its ONNX file beside it), loaded once per process per file:
    a shipped task model and a registry version read through the same cache."""
    return _load_cached(str(meta_path.resolve()))


@functools.lru_cache(maxsize=32)
def _load_cached(meta_path: str) -> ImagingModel:
    path = Path(meta_path)
    meta = json.loads(path.read_text(encoding="utf-8"))
    blob = (path.parent / meta["onnx"]["file"]).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta["onnx"]["sha256"]:
        raise ValueError(
            f"{path.name}: ONNX file sha256 {digest} differs from the metadata's {meta['onnx']['sha256']}"
        )
    options = ort.SessionOptions()
    # Small CNNs: more than a few threads only adds synchronisation; keep the rest for the web app.
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.log_severity_level = 3
    session = ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
    return ImagingModel(meta, session)
