"""Pixel rendering: decoding, rescale, windows and LUTs, MONOCHROME1, colour, frames, PNG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tianfu.imaging.dicom import pixels
from tianfu.imaging.dicom.pixels import PixelDataError, Window

FIXTURES = Path(__file__).parent / "fixtures"
CXR_JPEG = FIXTURES / "cxr_jpeg_baseline.dcm"


def sample_file(name: str) -> Path:
    """A pydicom or pydicom-data test file, found offline; skips when the package providing it is absent."""
    found = get_testdata_file(name, download=False)  # never fetch anything at test time
    if found is None:
        pytest.skip(f"{name} is not installed locally (pip install pydicom-data)")
    return Path(str(found))


def read(name: str) -> Dataset:
    return pydicom.dcmread(sample_file(name))


def grayscale(values: Any, **attributes: Any) -> Dataset:
    """A small uncompressed grayscale image with the given stored values and attributes."""
    array = np.asarray(values, dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = array.astype("<u2").tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def read_png(data: bytes) -> np.ndarray:
    """A minimal PNG reader for what :func:`pixels.to_png` writes (checks signature, CRCs, filters)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + chunk) & 0xFFFFFFFF == crc
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    assert kind == b"IEND"
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert interlace == 0
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    assert set(np.unique(raw[:, 0])) <= {0, 2}
    rows = raw[:, 1:].copy()
    for i in range(1, height):  # undo "Up" (filter 2)
        if raw[i, 0] == 2:
            rows[i] = rows[i] + rows[i - 1]
    channels = 3 if colour == 2 else 1
    image = rows.view(">u2").astype(np.uint16) if depth == 16 else rows
    return image.reshape(height, width, channels) if channels == 3 else image.reshape(height, width)


# --- decoding ----------------------------------------------------------------------------------------------


def test_a_monochrome1_cr_shows_bones_bright_and_lungs_dark() -> None:
    ds = read("RG1_UNCR.dcm")  # 1955×1841, 15 bits, MONOCHROME1, window 15000/30000
    image = pixels.render(ds)
    assert image.shape == (1955, 1841)
    assert image.dtype == np.uint8
    h, w = image.shape
    lungs = image[int(h * 0.3) : int(h * 0.55), int(w * 0.2) : int(w * 0.35)].mean()
    mediastinum = image[int(h * 0.3) : int(h * 0.55), int(w * 0.47) : int(w * 0.53)].mean()
    assert lungs + 40 < mediastinum  # read as MONOCHROME2 it would be the other way round
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert np.abs(pixels.render(ds).astype(int) + image.astype(int) - 255).max() <= 1


def test_monochrome1_inverts_exactly() -> None:
    values = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100
    plain = pixels.display_array(grayscale(values, WindowCenter=750, WindowWidth=1501))
    inverted = pixels.display_array(
        grayscale(values, WindowCenter=750, WindowWidth=1501, PhotometricInterpretation="MONOCHROME1")
    )
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)
    assert plain[0, 0] == pytest.approx(0.0, abs=1e-3)
    assert plain[3, 3] == 1.0


def test_rescale_then_window_in_hounsfield_units() -> None:
    # Stored 0, 512, 1024, 1536 at slope 2 and intercept -1024 are -1024, 0, 1024, 2048 HU.
    ds = grayscale(
        [[0, 512, 1024, 1536]],
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=2048,
        VOILUTFunction="LINEAR_EXACT",
    )
    np.testing.assert_allclose(pixels.display_array(ds)[0], [0.0, 0.5, 1.0, 1.0])


def test_the_first_of_several_windows_is_used_with_the_standards_linear_formula() -> None:
    hu = np.array([[-200, -160, 40, 239, 240, 1000]])
    ds = grayscale(
        hu + 1024, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=[40, 300], WindowWidth=[400, 1500]
    )
    shown = pixels.display_array(ds)[0]
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 → 0; x > c - 0.5 + (w-1)/2 → 1; else linear.
    expected = np.clip((hu[0] - (40 - 0.5)) / (400 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    assert shown[0] == 0.0
    assert shown[-1] == 1.0


def test_a_window_given_by_the_caller_overrides_the_objects() -> None:
    ds = grayscale([[0, 100, 200]], WindowCenter=100, WindowWidth=10)
    shown = pixels.display_array(ds, window=Window(100, 200, "LINEAR_EXACT"))
    np.testing.assert_allclose(shown[0], [0.0, 0.5, 1.0])
    assert pixels.apply_window(np.array([0.0]), Window(0, 4, "SIGMOID"))[0] == pytest.approx(0.5)
    with pytest.raises(PixelDataError):
        pixels.apply_window(np.array([0.0]), Window(0, 0.5))


def test_without_a_window_a_percentile_window_ignores_hot_pixels() -> None:
    values = np.tile(np.arange(100, dtype=np.uint16), (100, 1))
    values[0, 0] = 65535  # one hot pixel would flatten a min/max window
    shown = pixels.display_array(grayscale(values))
    assert shown[50, 50] == pytest.approx(0.5, abs=0.02)
    assert shown[0, 0] == 1.0
    assert pixels.display_array(grayscale(np.full((4, 4), 7))).max() == 0.0  # flat: black, no division by 0


def test_a_voi_lut_sequence_is_applied() -> None:
    ds = read("vlut_04.dcm")  # 8-bit image through a 256-entry, 16-bit VOI LUT
    shown = pixels.display_array(ds)
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)
    stored = ds.pixel_array
    np.testing.assert_allclose(shown, lut[stored] / 65535.0, atol=1e-6)


def test_jpeg_2000_lossless_decodes_to_the_uncompressed_values() -> None:
    compressed, plain = read("MR_small_jp2klossless.dcm"), read("MR_small.dcm")
    np.testing.assert_array_equal(pixels.decode_frame(compressed), pixels.decode_frame(plain))
    np.testing.assert_array_equal(pixels.render(compressed), pixels.render(plain))


def test_jpeg_baseline_and_extended_decode() -> None:
    cxr = pydicom.dcmread(CXR_JPEG)
    image = pixels.render(cxr)
    assert image.shape == (1024, 1024)
    assert 40 < image.mean() < 200
    extended = pixels.render(read("JPGExtended.dcm"))  # 12-bit JPEG, process 2 & 4
    assert extended.shape == (1024, 256)
    assert extended.max() == 255


def test_colour_passes_through_and_palettes_are_looked_up() -> None:
    ds = read("SC_rgb.dcm")
    shown = pixels.render(ds)
    assert shown.shape == (100, 100, 3)
    np.testing.assert_array_equal(shown, ds.pixel_array)
    assert pixels.render(read("SC_rgb_jpeg_dcmtk.dcm")).shape == (100, 100, 3)  # YBR JPEG → RGB
    assert pixels.render(read("OBXXXX1A_rle.dcm")).shape == (600, 800, 3)  # PALETTE COLOR, RLE


def test_multi_frame_objects_render_the_first_frame_unless_asked() -> None:
    ds = read("SC_rgb_2frame.dcm")
    frames = ds.pixel_array
    np.testing.assert_array_equal(pixels.render(ds), frames[0])
    np.testing.assert_array_equal(pixels.render(ds, frame=1), frames[1])
    with pytest.raises(PixelDataError, match="frame 2 does not exist"):
        pixels.render(ds, frame=2)


def test_unrenderable_objects_raise_pixel_data_error() -> None:
    with pytest.raises(PixelDataError, match="no pixel data"):
        pixels.render(read("rtplan.dcm"))
    # A damaged JPEG stream (libjpeg: "misplaced marker segment").
    with pytest.raises(PixelDataError, match="cannot decode"):
        pixels.render(read("JPEG-lossy.dcm"))
    broken = grayscale(np.zeros((4, 4)))
    broken.PixelData = b"\x00" * 7  # shorter than 4×4 16-bit samples
    with pytest.raises(PixelDataError):
        pixels.render(broken)


# --- PNG ---------------------------------------------------------------------------------------------------


def test_png_round_trips_grayscale_colour_and_16_bit() -> None:
    rng = np.random.default_rng(7)
    gray = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    for image in (gray, rgb, deep):
        np.testing.assert_array_equal(read_png(pixels.to_png(image)), image)
    np.testing.assert_array_equal(read_png(pixels.to_png(np.array([[0.0, 0.5, 1.0]]))), [[0, 128, 255]])


def test_png_of_a_real_radiograph() -> None:
    image = pixels.render(pydicom.dcmread(CXR_JPEG))
    png = pixels.to_png(image)
    assert len(png) < image.size  # compressed
    np.testing.assert_array_equal(read_png(png), image)


def test_png_refuses_what_it_cannot_write() -> None:
    with pytest.raises(PixelDataError):
        pixels.to_png(np.zeros((2, 2, 4), dtype=np.uint8))
    with pytest.raises(PixelDataError):
        pixels.to_png(np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(PixelDataError):
        pixels.to_png(np.zeros((0, 5), dtype=np.uint8))
