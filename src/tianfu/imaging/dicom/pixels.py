"""From a DICOM data set to an image a person (or a model) can look at, following PS3.3 C.11 / C.7.6.3.

The grayscale pipeline is: decode the stored values (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000
and RLE through pydicom's plugins: pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pyjpegls) → Modality
LUT (Modality LUT Sequence, else Rescale Slope/Intercept) → VOI (an explicit window if the caller gives
one, else the first VOI LUT, else the first Window Center/Width, else a robust 0.5–99.5 percentile
window) → MONOCHROME1 inversion. Colour images (RGB, YBR_* converted to RGB, PALETTE COLOR through its
lookup table) pass through, scaled to 0..1.

Multi-frame objects: only one frame is rendered, the first unless ``frame`` says otherwise; a cine loop
or a volume is not composed here.

Everything here is pure: no database, no files. :class:`PixelDataError` is the only exception raised for
bad input.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.utils import pixel_array

FloatImage = npt.NDArray[np.float32]
ByteImage = npt.NDArray[np.uint8]

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Enough samples for a stable percentile; a 1955×1841 CR is subsampled to about this many.
_PERCENTILE_SAMPLES = 1_000_000


class PixelDataError(ValueError):
    """The object's pixel data cannot be rendered: absent, in an unsupported encoding, or corrupt."""


@dataclass(frozen=True)
class Window:
    """A VOI window in modality units (after rescale), PS3.3 C.11.2.1.2."""

    center: float
    width: float
    function: str = "LINEAR"  # LINEAR | LINEAR_EXACT | SIGMOID


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def decode_frame(ds: Dataset, frame: int = 0) -> npt.NDArray[Any]:
    """The stored values of one frame (colour already converted to RGB by pydicom)."""
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise PixelDataError("the object has no pixel data")
    frames = number_of_frames(ds)
    if not 0 <= frame < frames:
        raise PixelDataError(f"frame {frame} does not exist (the object has {frames})")
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        array: npt.NDArray[Any] = pixel_array(ds, index=frame)
    except Exception as exc:  # pydicom raises many types for unsupported or damaged data
        name = getattr(syntax, "name", str(syntax or "unknown transfer syntax"))
        raise PixelDataError(f"cannot decode the pixel data ({name}): {exc}") from exc
    return array


def display_array(ds: Dataset, *, frame: int = 0, window: Window | None = None) -> FloatImage:
    """One frame in display values 0..1 (0 = black): shape (rows, columns), or (rows, columns, 3) in
    colour."""
    stored = decode_frame(ds, frame)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    try:
        if photometric == "PALETTE COLOR":
            return _palette(stored, ds)
        if stored.ndim == 3:
            return _colour(stored, ds)
        if stored.ndim != 2:
            raise PixelDataError(f"unexpected pixel array shape {stored.shape}")
        return _grayscale(stored, ds, window, photometric)
    except PixelDataError:
        raise
    except Exception as exc:  # a broken LUT or window value is corrupt input, not a bug here
        raise PixelDataError(f"cannot apply the object's lookup tables: {exc}") from exc


def render(ds: Dataset, *, frame: int = 0, window: Window | None = None) -> ByteImage:
    """One frame as 8-bit display values, ready for :func:`to_png`."""
    return to_uint8(display_array(ds, frame=frame, window=window))


def to_uint8(image: npt.NDArray[Any]) -> ByteImage:
    """Display values 0..1 to 0..255 (NaN, from a broken LUT, becomes black)."""
    clipped = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0), 0.0, 1.0)
    result: ByteImage = np.rint(clipped * 255.0).astype(np.uint8)
    return result


# --- grayscale ---------------------------------------------------------------------------------------------


def _grayscale(stored: npt.NDArray[Any], ds: Dataset, window: Window | None, photometric: str) -> FloatImage:
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if window is not None:
        shown = apply_window(values, window)
    elif "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        shown = _voi_lut(values, ds)
    elif (first := dataset_window(ds)) is not None:
        shown = apply_window(values, first)
    else:
        shown = auto_window(values, _padding_mask(stored, ds))
    # MONOCHROME1 shows low values bright. A Presentation LUT Shape of INVERSE says the same (DX requires it
    # alongside MONOCHROME1), so either one inverts, never both.
    inverse = str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    if photometric == "MONOCHROME1" or inverse:
        shown = np.subtract(1.0, shown, out=shown)  # every branch above returned a new array
    return shown.astype(np.float32)


def dataset_window(ds: Dataset) -> Window | None:
    """The first Window Center/Width pair of the object (several may be offered), if usable."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    return Window(center, width, function)


def _first(value: Any) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        result = float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None
    return result if result is not None and np.isfinite(result) else None


def apply_window(values: npt.NDArray[Any], window: Window) -> npt.NDArray[np.float64]:
    """PS3.3 C.11.2.1.2: map modality values through a window onto 0..1."""
    x = np.asarray(values, dtype=np.float64)
    c, w = window.center, window.width
    function = window.function.upper()
    if function == "SIGMOID":
        if w <= 0:
            raise PixelDataError("a SIGMOID window needs a width above 0")
        return np.asarray(1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - c) / w, -700, 700))), dtype=np.float64)
    if function == "LINEAR_EXACT":
        if w <= 0:
            raise PixelDataError("a LINEAR_EXACT window needs a width above 0")
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if w < 1:
        raise PixelDataError("a LINEAR window needs a width of at least 1")
    if w == 1:  # the standard's formula divides by w - 1: a width of 1 is a threshold
        return (x > c - 0.5).astype(np.float64)
    # The same arithmetic as clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1), in one array instead of four (a
    # full-size radiograph is 3.6 million pixels).
    shown = x - (c - 0.5)
    shown /= w - 1
    shown += 0.5
    return np.clip(shown, 0.0, 1.0, out=shown)


def auto_window(
    values: npt.NDArray[Any], ignore: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float64]:
    """A window from the 0.5th to the 99.5th percentile: robust to a few hot pixels and to collimator
    borders, unlike plain min/max."""
    x = np.asarray(values, dtype=np.float64)
    sample = (x if ignore is None else x[~ignore]).ravel()
    if sample.size == 0:
        return np.zeros_like(x)
    sample = sample[:: max(sample.size // _PERCENTILE_SAMPLES, 1)]
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if high <= low:  # a flat image: show it black rather than divide by zero
        return np.zeros_like(x)
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def _padding_mask(stored: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[np.bool_] | None:
    """Pixels marked as padding (outside the exposed area) do not count for the automatic window."""
    padding = ds.get("PixelPaddingValue")
    if padding is None or isinstance(padding, bytes):
        return None
    mask: npt.NDArray[np.bool_] = stored == int(padding)
    return mask if mask.any() and not mask.all() else None


def _voi_lut(values: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[np.float64]:
    """The first VOI LUT, its output scaled by the bit depth its descriptor declares (or by its largest
    entry when the descriptor understates it, which some writers do)."""
    item = ds.VOILUTSequence[0]
    bits = int(item.LUTDescriptor[2])
    indices = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
    out = np.asarray(apply_voi(indices, ds, index=0), dtype=np.float64)
    top = max(float(2**bits - 1), float(out.max(initial=0.0)))
    return np.clip(out / top, 0.0, 1.0) if top > 0 else np.zeros_like(out)


# --- colour ------------------------------------------------------------------------------------------------


def _colour(stored: npt.NDArray[Any], ds: Dataset) -> FloatImage:
    if stored.shape[-1] != 3:
        raise PixelDataError(f"unexpected colour array shape {stored.shape}")
    bits = int(ds.get("BitsStored") or 8)
    top = float(2 ** min(max(bits, 1), 32) - 1)
    scaled: FloatImage = np.clip(stored.astype(np.float32) / np.float32(top), 0.0, 1.0)
    return scaled


def _palette(stored: npt.NDArray[Any], ds: Dataset) -> FloatImage:
    rgb = np.asarray(apply_color_lut(stored, ds))
    bits = int(ds.get("RedPaletteColorLookupTableDescriptor", [0, 0, 16])[2])
    top = max(float(2**bits - 1), float(rgb.max(initial=0)))
    return np.clip(rgb.astype(np.float32) / np.float32(top), 0.0, 1.0) if top > 0 else rgb.astype(np.float32)


# --- PNG ---------------------------------------------------------------------------------------------------


def to_png(image: npt.NDArray[Any], *, level: int = 6) -> bytes:
    """A PNG (RFC 2083) of a 2-D grayscale or (rows, columns, 3) RGB image.

    uint8 and uint16 arrays are written at their own bit depth; floating-point arrays are taken as display
    values 0..1. Written with zlib directly, so rendering needs no imaging library.
    """
    array = np.asarray(image)
    if array.dtype.kind == "f":
        array = to_uint8(array)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype not in (np.uint8, np.uint16):
        raise PixelDataError(f"to_png takes uint8, uint16 or float arrays, not {array.dtype}")
    if array.ndim == 2:
        colour_type = 0
    elif array.ndim == 3 and array.shape[2] == 3:
        colour_type = 2
    else:
        raise PixelDataError(f"to_png takes (rows, columns) or (rows, columns, 3) arrays, not {array.shape}")
    rows, columns = array.shape[:2]
    if rows == 0 or columns == 0:
        raise PixelDataError("cannot write an empty image")
    depth = 16 if array.dtype == np.uint16 else 8
    # PNG stores samples big-endian, row by row.
    raw = np.ascontiguousarray(array.astype(">u2") if depth == 16 else array).view(np.uint8)
    raw = raw.reshape(rows, -1)
    # Filter type 2 ("Up", the difference from the row above) on every row: radiographs change slowly from
    # row to row, so this compresses much better than unfiltered rows, and numpy computes it in one step.
    filtered = raw.copy()
    filtered[1:] -= raw[:-1]
    scanlines = np.empty((rows, filtered.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 0] = 2
    scanlines[:, 1:] = filtered
    header = struct.pack(">IIBBBBB", columns, rows, depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), level)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )
