"""The AI's heatmap burned into a DICOM Secondary Capture image, for viewers and PACS that cannot show SR.

One SC per finding that has a heatmap: the source image as displayed (its window, MONOCHROME1 inverted),
in RGB, with the model's class-activation heatmap blended over it as a colour map (more opaque where the
model looked hardest) and one line of text burned in at the top::

    AI — not for diagnosis / 非诊断用途 | pneumonia p=0.87 | model 1.3.0

Same patient and study as the source, in a series of its own ("AI heatmap"), Modality OT, so no model reads
it again (:func:`tianfu.imaging.findings.tasks_for`). The text is in the pixels, so Burned In Annotation
is YES. It is written by :func:`tianfu.imaging.sr.store_result` beside the SR, stored and indexed the same
way; this module only builds it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tianfu.imaging.dicom import pixels
from tianfu.imaging.dicom.store import ParsedInstance, encode_dataset
from tianfu.imaging.findings import ImagingFinding

log = logging.getLogger(__name__)

SERIES_DESCRIPTION: Final = "AI heatmap"
SERIES_NUMBER: Final = 991  # beside the SR series (990)
MANUFACTURER: Final = "Tianfu"
NOT_FOR_DIAGNOSIS: Final = "AI — not for diagnosis"
NOT_FOR_DIAGNOSIS_ZH: Final = "非诊断用途"
# The heatmap's weight at its hottest; where the model did not look, the image shows unchanged.
OVERLAY_OPACITY: Final = 0.5
# Fonts with the Chinese glyphs, searched in this order; without one the line is in English only.
CJK_FONT_PATTERNS: Final = (
    "NotoSansCJK*",
    "NotoSansSC*",
    "SourceHanSans*",
    "wqy-microhei*",
    "wqy-zenhei*",
    "DroidSansFallback*",
    "NotoSerifCJK*",
)
FONT_DIRS: Final = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")
# Patient and study attributes copied from the source as they are (highdicom would re-check and reformat).
_COPIED: Final = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "PatientOrientation",
    "Laterality",
    "BodyPartExamined",
)

RGBImage = npt.NDArray[np.uint8]


def series_uid_for(study_uid: str) -> str:
    """All heatmap captures of a study go into one series, the same on every run."""
    return str(generate_uid(entropy_srcs=[study_uid, "tianfu-ai-sc"]))


def capture_uid_for(source_sop_uid: str, finding: ImagingFinding) -> str:
    """Fixed by the finding: writing the same result again finds the stored copy."""
    return str(
        generate_uid(
            entropy_srcs=[
                source_sop_uid,
                "tianfu-ai-sc",
                str(finding.id),
                finding.task,
                finding.model_version,
                repr(float(finding.probability)),
                finding.heatmap_path or "",
            ]
        )
    )


def caption(finding: ImagingFinding, *, chinese: bool = True) -> str:
    warning = f"{NOT_FOR_DIAGNOSIS} / {NOT_FOR_DIAGNOSIS_ZH}" if chinese else NOT_FOR_DIAGNOSIS
    version = finding.model_version or "unknown"
    return f"{warning} | {finding.task} p={float(finding.probability):.2f} | model {version}"


# --- pixels ------------------------------------------------------------------------------------------------


def colour_map(heat: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The "jet" colour map (blue, cyan, yellow, red) of values 0..1: shape (..., 3)."""
    h = np.clip(heat, 0.0, 1.0)[..., None] * np.float32(4.0)
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)  # red, green, blue peak at 3/4, 1/2, 1/4
    result: npt.NDArray[np.float32] = np.clip(np.float32(1.5) - np.abs(h - centres), 0.0, 1.0)
    return result


def blend(display: npt.NDArray[np.float32], heat: npt.NDArray[np.uint8]) -> RGBImage:
    """The displayed image (0..1, grayscale or RGB) with the heatmap (0..255, same size) over it, in RGB."""
    # Per heatmap level: the overlay's weight, and its colour already multiplied by it. Looking these up
    # for 256 levels costs a third of computing them per pixel (a radiograph has millions).
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    weight = levels * np.float32(OVERLAY_OPACITY)
    tint = colour_map(levels) * weight[:, None]
    base = np.nan_to_num(display, nan=0.0)  # NaN comes from a broken LUT: black, as pixels.to_uint8 does
    if base.ndim == 2:
        base = base[..., None]
    mixed = tint[heat]
    mixed += base * (np.float32(1.0) - weight[heat])[..., None]
    mixed *= np.float32(255.0)
    np.clip(mixed, 0.0, 255.0, out=mixed)
    return np.rint(mixed, out=mixed).astype(np.uint8)


def load_heatmap(path: Path, rows: int, columns: int) -> npt.NDArray[np.uint8]:
    """The heatmap PNG (0..255), resized to the image if the model wrote it at another size."""
    with Image.open(path) as png:
        gray = png.convert("L")
        if gray.size != (columns, rows):
            gray = gray.resize((columns, rows), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8)


@functools.cache
def cjk_font_file() -> tuple[Path, int] | None:
    """A font file with Chinese glyphs and the face index of its Simplified Chinese face, if any."""
    for pattern in CJK_FONT_PATTERNS:
        for root in FONT_DIRS:
            if not root.is_dir():
                continue
            for path in sorted(root.rglob(pattern)):
                if path.suffix.lower() in {".ttc", ".otc"}:
                    return path, _simplified_chinese_face(path)
                if path.suffix.lower() in {".ttf", ".otf"}:
                    return path, 0
    return None


def _simplified_chinese_face(path: Path) -> int:
    for index in range(10):  # a collection holds a few faces (JP, KR, SC, TC, HK)
        try:
            family, _ = ImageFont.truetype(str(path), 12, index=index).getname()
        except OSError:
            break
        if family and family.endswith(" SC"):
            return index
    return 0


def _font(size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """A font of about this pixel size, and whether it has Chinese glyphs."""
    found = cjk_font_file()
    if found is not None:
        try:
            return ImageFont.truetype(str(found[0]), size, index=found[1]), True
        except OSError:
            log.warning("cannot load the font %s; the heatmap caption is in English only", found[0])
    return ImageFont.load_default(size=size), False


def burn_in(image: RGBImage, finding: ImagingFinding) -> RGBImage:
    """The caption on a black band across the top, scaled to fit the width."""
    rows, columns = image.shape[:2]
    size = max(10, rows // 40)
    font, chinese = _font(size)
    text = caption(finding, chinese=chinese)
    canvas = Image.fromarray(image, mode="RGB")
    draw = ImageDraw.Draw(canvas)
    left, _, right, bottom = draw.textbbox((0, 0), text, font=font)
    if right - left > columns * 0.96 and size > 8:  # a narrow image: a smaller font rather than cut text
        size = max(8, int(size * columns * 0.96 / (right - left)))
        font, chinese = _font(size)
        text = caption(finding, chinese=chinese)
        left, _, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, size // 4)
    draw.rectangle((0, 0, columns, bottom + 2 * margin), fill=(0, 0, 0))
    draw.text((margin - left, margin), text, font=font, fill=(255, 255, 255))
    return np.asarray(canvas, dtype=np.uint8)


def overlay_image(source: Dataset, heatmap: Path, finding: ImagingFinding) -> RGBImage:
    """The first frame as displayed, the heatmap over it and the caption burned in."""
    display = pixels.display_array(source)
    heat = load_heatmap(heatmap, display.shape[0], display.shape[1])
    return burn_in(blend(display, heat), finding)


# --- the DICOM object --------------------------------------------------------------------------------------


def _lossy(source: Dataset) -> bool:
    """Whether the source has been lossy-compressed at some point (a derived image inherits that)."""
    if str(source.get("LossyImageCompression", "")) == "01":
        return True
    syntax = getattr(getattr(source, "file_meta", None), "TransferSyntaxUID", None)
    return syntax is not None and syntax.is_compressed and not _is_lossless(str(syntax))


def _is_lossless(syntax: str) -> bool:
    lossless = {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.1.99",  # Deflated
    }
    return syntax in lossless


def secondary_capture(
    source: Dataset,
    image: RGBImage,
    finding: ImagingFinding,
    *,
    instance_number: int = 1,
) -> Dataset:
    """An SC image of ``image`` (the overlay of ``source``): same patient and study, the heatmap series."""
    sc = hd.sc.SCImage(
        pixel_array=image,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=series_uid_for(str(source.StudyInstanceUID)),
        series_number=SERIES_NUMBER,
        sop_instance_uid=capture_uid_for(str(source.SOPInstanceUID), finding),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        # highdicom insists on an orientation here; the source's own (Type 2, maybe empty) replaces it below.
        patient_orientation=("L", "F"),
    )
    sc.PatientOrientation = []
    for keyword in _COPIED:
        if keyword in source:
            value = source[keyword].value
            setattr(sc, keyword, str(value) if source[keyword].VR == "PN" else value)
    # UTF-8, because the caption and the patient's name (often Chinese) need more than Latin-1.
    sc.SpecificCharacterSet = "ISO_IR 192"
    sc.SeriesDescription = SERIES_DESCRIPTION
    sc.ConversionType = "WSD"  # made on a workstation from a stored image, not digitised film
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = caption(finding)
    sc.DerivationDescription = (
        f"AI heatmap of tianfu imaging-{finding.task} {finding.model_version or 'unknown'} "
        "blended over the source image; not for diagnosis"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    if _lossy(source):
        sc.LossyImageCompression = "01"
    return sc


@dataclass
class Capture:
    """The heatmap capture of one finding: its UID, fixed by the finding; built when it is not stored yet.

    Built outside any transaction (decoding the source and blending take a fraction of a second). A capture
    that cannot be built (its heatmap is gone, the pixels cannot be read) is logged and left out: it is a
    convenience beside the SR, and the next run of :func:`tianfu.imaging.sr.store_result` tries again.
    """

    uid: str
    source_path: Path
    heatmap_path: Path
    finding: ImagingFinding
    instance_number: int
    stored: bool
    encoded: ParsedInstance | None = None
    failed: bool = False

    def build(self) -> ParsedInstance | None:
        if self.encoded is None and not self.failed:
            try:
                source = pydicom.dcmread(self.source_path)
                image = overlay_image(source, self.heatmap_path, self.finding)
                self.encoded = encode_dataset(
                    secondary_capture(source, image, self.finding, instance_number=self.instance_number)
                )
            except (OSError, ValueError) as exc:  # PixelDataError is a ValueError
                log.warning("no heatmap capture for finding %s: %s", self.finding.id, exc)
                self.failed = True
        return self.encoded
