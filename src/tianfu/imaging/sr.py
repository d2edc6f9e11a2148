"""The AI's findings as a DICOM Structured Report (TID 1500 Measurement Report, written with highdicom),
stored next to the source images so that PACS and DICOM viewers show them (imaging.md IMG-03, §2.2 step 4).

One Comprehensive SR per source image that has findings. Each finding is one measurement group with:

- the finding (a private ``99TIANFU`` code per task) as a qualitative evaluation, present or absent at the
  model's operating threshold;
- the model's score as a numeric measurement in ``{probability}`` (UCUM), referencing the source image;
- the algorithm (``imaging-<task>``, the model version, the threshold) as its algorithm identification.

The report is complete but unverified: an AI suggestion is never the signed opinion. A radiologist's
review, when there is one, is recorded as a text item of its group. The observer is a device (the Tianfu
imaging AI), and the series description says "AI — not for diagnosis".

Beside each SR, every finding with a heatmap is also written as a Secondary Capture
(:mod:`tianfu.imaging.sc`): the image with the heatmap and an "AI — not for diagnosis" caption burned in,
for viewers that cannot show SR. Both are stored and indexed alike.

The stored SR and SC raise ``tianfu.imaging.instance_stored`` like any instance; the analyser leaves them
alone because no model reads modality SR or OT (:func:`tianfu.imaging.findings.tasks_for`), so nothing loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from tianfu import __version__
from tianfu.imaging import sc
from tianfu.imaging.dicom.store import ParsedInstance, dicom_store, encode_dataset, store_instance
from tianfu.imaging.findings import SYSTEM, ImagingFinding
from tianfu.imaging.tables import ImagingInstance, ImagingStudy

if TYPE_CHECKING:
    from tianfu.core.kernel import Kernel

# The instance source recorded for results written here; store.Source and tables.INSTANCE_SOURCES should
# list it (the column takes any short string, so it works before they do).
AI_SOURCE: Final = "ai"
SERIES_DESCRIPTION = "AI — not for diagnosis"
MANUFACTURER = "Tianfu"
TIANFU_SCHEME = "99TIANFU"  # private coding scheme (PS3.16 8.2: "99" prefix) until tasks map to SNOMED/RadLex
PROBABILITY = hd.sr.CodedConcept(value="{probability}", scheme_designator="UCUM", meaning="probability")
# The imaging AI as a device observer: one fixed UID, so every report names the same device.
DEVICE_UID = generate_uid(entropy_srcs=["tianfu", "imaging-ai", "device"])


def finding_code(task: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=task[:16], scheme_designator=TIANFU_SCHEME, meaning=task)


def probability_code(task: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(
        value=f"{task[:10]}-prob", scheme_designator=TIANFU_SCHEME, meaning=f"{task}, AI probability"
    )


def series_uid_for(study_uid: str) -> str:
    """All AI reports of a study go into one series, the same on every run."""
    return str(generate_uid(entropy_srcs=[study_uid, "tianfu-ai-sr"]))


def report_uid_for(source_sop_uid: str, findings: Sequence[ImagingFinding]) -> str:
    """Fixed by the findings and their review: writing the same result again finds the stored copy, while
    a later review makes a new report (an SR is never changed under its UID)."""
    parts = sorted(
        f"{f.id}:{f.task}:{f.model_version}:{f.score}:{f.review}:{f.reviewed_label}" for f in findings
    )
    return str(generate_uid(entropy_srcs=[source_sop_uid, "tianfu-ai-sr", *parts]))


def _group(
    source: Dataset, finding: ImagingFinding, index: int
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = hd.sr.AlgorithmIdentification(
        name=f"tianfu imaging-{finding.task}",
        version=finding.model_version or "unknown",
        parameters=[f"threshold={finding.threshold:g}"],
        manufacturer=MANUFACTURER,
    )
    image = hd.sr.SourceImageForMeasurement.from_source_image(source)
    measurement = hd.sr.Measurement(
        name=probability_code(finding.task),
        value=float(finding.score),
        unit=PROBABILITY,
        algorithm_id=algorithm,
        referenced_images=[image],
    )
    evaluation = hd.sr.QualitativeEvaluation(
        name=finding_code(finding.task), value=codes.SCT.Present if finding.positive else codes.SCT.Absent
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(entropy_srcs=[str(source.SOPInstanceUID), finding.id]),
            identifier=f"{finding.task} #{index}",
        ),
        finding_type=finding_code(finding.task),
        algorithm_id=algorithm,
        measurements=[measurement],
        qualitative_evaluations=[evaluation],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    if finding.review:
        # TID 1501 allows no review item, so the radiologist's word is a plain text comment of the group.
        verdict = "confirmed" if finding.review == "confirmed" else f"corrected to {finding.reviewed_label}"
        text = f"Radiologist review: {verdict}" + (
            f" ({finding.review_comment})" if finding.review_comment else ""
        )
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=text[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def structured_report(
    source: Dataset, findings: Sequence[ImagingFinding], *, series_number: int = 990
) -> Dataset:
    """A TID 1500 Comprehensive SR of one source image's findings: same patient and study, new series."""
    if not findings:
        raise ValueError("no findings to report")
    models = sorted({f"imaging-{f.task} {f.model_version}" for f in findings})
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID,
            name="Tianfu imaging AI",
            manufacturer_name=MANUFACTURER,
            model_name=", ".join(models)[:64],
            serial_number=__version__,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept(
            value="ai-triage", scheme_designator=TIANFU_SCHEME, meaning="AI imaging triage"
        ),
        imaging_measurements=[_group(source, f, i) for i, f in enumerate(findings, start=1)],
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_uid_for(str(source.StudyInstanceUID)),
        series_number=series_number,
        sop_instance_uid=report_uid_for(str(source.SOPInstanceUID), findings),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # PRELIMINARY: not a signed report
        is_verified=False,
    )
    sr.SeriesDescription = SERIES_DESCRIPTION
    # UTF-8, because the series description and the patient's name (often Chinese) need more than Latin-1.
    sr.SpecificCharacterSet = "ISO_IR 192"
    return sr


def write_result(session: Session, kernel: Kernel, study_id: str) -> list[str]:
    """Store an SR for each of the study's images that has findings, and a heatmap SC for each finding with
    a heatmap; the SOP Instance UIDs, in the caller's transaction (the caller commits). Running it again
    stores nothing new unless a finding changed."""
    organization_id, wanted = _wanted(session, kernel, study_id)
    return _store(session, kernel, organization_id, wanted)


def store_result(kernel: Kernel, study_id: str) -> list[str]:
    """:func:`write_result` in two short transactions of its own, the reports and captures built and
    encoded between them: on SQLite a transaction holds the one write lock, and a report takes tens of
    milliseconds to build (a capture, which decodes the image, a few hundred) that no other writer (nor,
    with BEGIN IMMEDIATE, reader) should wait for."""
    with kernel.sessions() as session, session.begin():
        organization_id, wanted = _wanted(session, kernel, study_id)
    for pending in wanted:
        if not pending.stored:
            pending.build()
    with kernel.sessions() as session, session.begin():
        return _store(session, kernel, organization_id, wanted)


class _Pending(Protocol):
    """An instance to write back (an SR or an SC): its UID, whether it is stored, and how to encode it
    (None: it cannot be made, and is left out)."""

    uid: str
    stored: bool

    def build(self) -> ParsedInstance | None: ...


class _Report:
    """The report of one source image: its UID, fixed by the findings; built when it is not stored yet."""

    def __init__(self, uid: str, source: Dataset, findings: Sequence[ImagingFinding], stored: bool) -> None:
        self.uid, self.source, self.findings, self.stored = uid, source, findings, stored
        self.encoded: ParsedInstance | None = None

    def build(self) -> ParsedInstance | None:
        if self.encoded is None:
            self.encoded = encode_dataset(structured_report(self.source, self.findings))
        return self.encoded


def _wanted(session: Session, kernel: Kernel, study_id: str) -> tuple[str, list[_Pending]]:
    """The study's institution, and a report for each of its images that has findings, followed by a
    capture for each of those findings that has a heatmap."""
    study = session.get(ImagingStudy, study_id)
    if study is None:
        raise ValueError(f"no study {study_id}")
    findings = session.scalars(
        select(ImagingFinding)
        .where(ImagingFinding.study_id == study_id)
        .order_by(ImagingFinding.instance_id, ImagingFinding.task)
    ).all()
    by_instance: dict[str, list[ImagingFinding]] = {}
    for finding in findings:
        by_instance.setdefault(finding.instance_id, []).append(finding)
    store = dicom_store(kernel)
    wanted: list[_Pending] = []
    captures: list[_Pending] = []
    for instance_id, found in by_instance.items():
        instance = session.get(ImagingInstance, instance_id)
        if instance is None:
            continue
        # Pixels are not needed to reference an image; leaving them out keeps large studies cheap. The
        # captures decode them later, outside the transaction.
        source_path = store.path(instance.storage_path)
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        uid = report_uid_for(str(source.SOPInstanceUID), found)
        wanted.append(_Report(uid, source, found, _is_stored(session, uid)))
        for finding in found:
            if not finding.heatmap_path:
                continue
            uid = sc.capture_uid_for(str(source.SOPInstanceUID), finding)
            heatmap = store.root / Path(finding.heatmap_path)
            number = len(captures) + 1
            captures.append(sc.Capture(uid, source_path, heatmap, finding, number, _is_stored(session, uid)))
    return study.organization_id, wanted + captures


def _is_stored(session: Session, sop_instance_uid: str) -> bool:
    return (
        session.scalar(select(ImagingInstance.id).where(ImagingInstance.sop_instance_uid == sop_instance_uid))
        is not None
    )


def _store(session: Session, kernel: Kernel, organization_id: str, wanted: Sequence[_Pending]) -> list[str]:
    written: list[str] = []
    for pending in wanted:
        if pending.stored or _is_stored(session, pending.uid):
            written.append(pending.uid)
            continue
        encoded = pending.build()
        if encoded is None:
            continue
        result = store_instance(
            session,
            dicom_store(kernel),
            encoded,
            audit=kernel.audit,
            actor=SYSTEM,
            source=AI_SOURCE,
            organization_id=organization_id,
        )
        written.append(result.sop_instance_uid)
    return written
