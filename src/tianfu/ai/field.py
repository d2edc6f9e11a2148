"""Field performance: how a model does in use, from its recorded outputs and clinicians' verdicts.

Two questions per model and time window: do clinicians agree with it (volume and agreement per version
and per day or week, the cases they disagreed with), and do its inputs still look like its training data
(population stability index per reference feature). The pure functions at the top do the arithmetic;
:func:`field_summary` queries the database and :func:`alerts` turns a summary into warnings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from tianfu.core.i18n import N_
from tianfu.core.model_outputs.models import ModelFeedback, ModelOutput
from tianfu.core.model_registry.manifest import FeatureReference

Bucket = Literal["day", "week"]
DriftLevel = Literal["stable", "moderate", "major"]

PSI_EPSILON = 1e-4  # stands in for an empty share, so that the logarithm stays finite
# Below this the index is mostly sampling noise: with k bins and n values an unchanged distribution
# still scores about (k - 1) / n, e.g. 0.2 for 10 bins and 40 values, 0.05 at 200.
MIN_VALUES_FOR_PSI = 200
MODERATE_DRIFT_PSI = 0.1
MAJOR_DRIFT_PSI = 0.25
DRIFT_ROW_CAP = 20_000  # drift reads JSON per row; the most recent rows are plenty and keep a page fast
DISAGREEMENT_CASE_LIMIT = 50
WILSON_Z_95 = 1.959963984540054

VERDICT_CREDIT = {"agree": 1.0, "partial": 0.5, "disagree": 0.0}  # as in usage_by_model


# --- pure arithmetic -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecentDistribution:
    """Observed shares in the reference's bins (or categories); ``other`` holds unknown categories."""

    fractions: tuple[float, ...]
    other: float
    n: int  # observations counted: list elements count one each


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(values: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list | tuple):
            flat.extend(item for item in value if item is not None)
        elif value is not None:
            flat.append(value)
    return flat


def _check_reference(reference: FeatureReference) -> None:
    bins = len(reference.fractions)
    if reference.edges:
        if len(reference.edges) != bins + 1 or bins == 0:
            raise ValueError(f"reference {reference.name!r}: needs one more edge than fractions")
    elif len(reference.categories) != bins or bins == 0:
        raise ValueError(f"reference {reference.name!r}: needs one fraction per category")


def recent_distribution(reference: FeatureReference, values: Sequence[Any]) -> RecentDistribution:
    """Count values into the reference's bins: numbers by its edges (outliers in the end bins),
    anything else by category name. A list value (symptoms) counts each element; None is skipped."""
    _check_reference(reference)
    flat = _flatten(values)
    bins = len(reference.fractions)
    counts = np.zeros(bins, dtype=np.float64)
    other = 0
    if reference.edges:
        numbers = np.array([v for v in flat if _is_number(v)], dtype=np.float64)
        index = np.searchsorted(np.asarray(reference.edges, dtype=np.float64), numbers, side="right") - 1
        counts = np.bincount(np.clip(index, 0, bins - 1), minlength=bins).astype(np.float64)
        n = len(numbers)
    else:
        position = {category: i for i, category in enumerate(reference.categories)}
        for value in flat:
            i = position.get(str(value))
            if i is None:
                other += 1
            else:
                counts[i] += 1
        n = len(flat)
    if n == 0:
        return RecentDistribution(tuple(0.0 for _ in range(bins)), 0.0, 0)
    return RecentDistribution(tuple(float(c) / n for c in counts), other / n, n)


def psi_of(reference: FeatureReference, recent: RecentDistribution) -> float:
    """PSI = sum((actual - expected) * ln(actual / expected)); unknown categories meet an epsilon share."""
    expected = np.asarray(reference.fractions, dtype=np.float64)
    total = expected.sum()
    if total > 0:
        expected = expected / total  # rounded fractions in a metadata file need not sum to exactly 1
    actual = np.asarray(recent.fractions, dtype=np.float64)
    if not reference.edges:
        expected = np.append(expected, 0.0)
        actual = np.append(actual, recent.other)
    expected = np.maximum(expected, PSI_EPSILON)
    actual = np.maximum(actual, PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def population_stability_index(
    reference: FeatureReference,
    values: Sequence[float | str | list[Any] | None],
    *,
    min_values: int = MIN_VALUES_FOR_PSI,
) -> float | None:
    """How far recent values have moved from the training distribution; None below ``min_values``."""
    recent = recent_distribution(reference, values)
    if recent.n < min_values:
        return None
    return psi_of(reference, recent)


def drift_level(psi: float) -> DriftLevel:
    """The usual reading of PSI: under 0.1 stable, 0.1 to 0.25 moderate, over 0.25 major."""
    if psi < MODERATE_DRIFT_PSI:
        return "stable"
    if psi <= MAJOR_DRIFT_PSI:
        return "moderate"
    return "major"


def wilson_interval(successes: float, n: int, z: float = WILSON_Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (successes may be fractional: a partial agreement is half)."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class VerdictCount(NamedTuple):
    """How many outputs of one version on one UTC day carry one latest verdict (None: not reviewed)."""

    day: date
    version: str
    verdict: str | None
    outputs: int


@dataclass(frozen=True)
class SeriesPoint:
    start: date  # the bucket's first day (a Monday for weeks)
    outputs: int
    by_version: Mapping[str, int]
    reviewed: int
    agreed: float

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.reviewed if self.reviewed else None


def bucket_start(day: date, bucket: Bucket) -> date:
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def agreement_series(
    counts: Iterable[VerdictCount], *, first_day: date, last_day: date, bucket: Bucket = "day"
) -> list[SeriesPoint]:
    """Volume and agreement per day or ISO week from first_day to last_day inclusive, empty buckets
    included so that a chart's time axis has no gaps. Partial agreement counts half."""
    step = timedelta(days=7 if bucket == "week" else 1)
    starts: list[date] = []
    start = bucket_start(first_day, bucket)
    while start <= last_day:
        starts.append(start)
        start += step
    outputs = dict.fromkeys(starts, 0)
    reviewed = dict.fromkeys(starts, 0)
    agreed = dict.fromkeys(starts, 0.0)
    by_version: dict[date, dict[str, int]] = {s: {} for s in starts}
    for row in counts:
        key = bucket_start(row.day, bucket)
        if key not in outputs:
            continue
        outputs[key] += row.outputs
        by_version[key][row.version] = by_version[key].get(row.version, 0) + row.outputs
        if row.verdict is not None:
            reviewed[key] += row.outputs
            agreed[key] += row.outputs * VERDICT_CREDIT.get(row.verdict, 0.0)
    return [
        SeriesPoint(s, outputs[s], dict(sorted(by_version[s].items())), reviewed[s], agreed[s])
        for s in starts
    ]


# --- the summary -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionVolume:
    version: str
    outputs: int
    reviewed: int
    agreed: float

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.reviewed if self.reviewed else None


@dataclass(frozen=True)
class DisagreementCase:
    output_id: str
    created_at: datetime
    version: str
    label: str
    score: float | None
    verdict: str  # disagree or partial
    corrected_label: str
    comment: str
    patient_id: str | None
    reviewed_at: datetime


@dataclass(frozen=True)
class FeatureDrift:
    reference: FeatureReference
    recent: RecentDistribution
    psi: float | None  # None: too few values in the window to say

    @property
    def name(self) -> str:
        return self.reference.name

    @property
    def n(self) -> int:
        return self.recent.n

    @property
    def level(self) -> DriftLevel | None:
        return None if self.psi is None else drift_level(self.psi)


@dataclass(frozen=True)
class FieldSummary:
    model_name: str
    since: datetime
    until: datetime
    bucket: Bucket
    versions: tuple[VersionVolume, ...]
    series: tuple[SeriesPoint, ...]
    disagreements: tuple[DisagreementCase, ...]  # most recent first, at most DISAGREEMENT_CASE_LIMIT
    drift: tuple[FeatureDrift, ...]
    drift_rows: int  # outputs whose input_features were read for drift
    drift_capped: bool  # True when the window held more than DRIFT_ROW_CAP outputs

    @property
    def outputs(self) -> int:
        return sum(v.outputs for v in self.versions)

    @property
    def reviewed(self) -> int:
        return sum(v.reviewed for v in self.versions)

    @property
    def agreed(self) -> float:
        return sum(v.agreed for v in self.versions)

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.reviewed if self.reviewed else None

    @property
    def agreement_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.agreed, self.reviewed)

    def to_json(self) -> dict[str, Any]:
        interval = self.agreement_interval
        return {
            "model_name": self.model_name,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "bucket": self.bucket,
            "outputs": self.outputs,
            "reviewed": self.reviewed,
            "agreement_rate": self.agreement_rate,
            "agreement_interval": list(interval) if interval else None,
            "versions": [
                {
                    "version": v.version,
                    "outputs": v.outputs,
                    "reviewed": v.reviewed,
                    "agreement_rate": v.agreement_rate,
                }
                for v in self.versions
            ],
            "series": [
                {
                    "start": p.start.isoformat(),
                    "outputs": p.outputs,
                    "by_version": dict(p.by_version),
                    "reviewed": p.reviewed,
                    "agreement_rate": p.agreement_rate,
                }
                for p in self.series
            ],
            "disagreements": [
                {
                    "output_id": c.output_id,
                    "created_at": c.created_at.isoformat(),
                    "version": c.version,
                    "label": c.label,
                    "score": c.score,
                    "verdict": c.verdict,
                    "corrected_label": c.corrected_label,
                    "comment": c.comment,
                    "patient_id": c.patient_id,
                    "reviewed_at": c.reviewed_at.isoformat(),
                }
                for c in self.disagreements
            ],
            "drift": [
                {
                    "name": d.name,
                    "psi": d.psi,
                    "level": d.level,
                    "n": d.n,
                    "edges": list(d.reference.edges),
                    "categories": list(d.reference.categories),
                    "reference": list(d.reference.fractions),
                    "recent": list(d.recent.fractions),
                    "recent_other": d.recent.other,
                }
                for d in self.drift
            ],
            "drift_rows": self.drift_rows,
            "drift_capped": self.drift_capped,
        }


def _utc_day(session: Session, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a UTCDateTime column, computed in the database."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return func.date(column)  # stored as naive UTC text
    if dialect == "postgresql":
        # A plain date() would use the connection's TimeZone setting, not UTC.
        return func.date(func.timezone("UTC", column))
    raise NotImplementedError(f"field summary does not support {dialect}")


def _as_date(value: date | str) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value  # SQLite returns text


def _drift(
    session: Session,
    in_window: ColumnElement[bool],
    reference: Sequence[FeatureReference],
    min_values: int = MIN_VALUES_FOR_PSI,
) -> tuple[tuple[FeatureDrift, ...], int, bool]:
    """Drift per reference feature, the number of outputs read, and whether the cap cut the window."""
    if not reference:
        return (), 0, False
    # Only the most recent DRIFT_ROW_CAP outputs: plenty for a stable PSI, and it bounds the JSON parsed.
    features = session.scalars(
        select(ModelOutput.input_features)
        .where(in_window)
        .order_by(ModelOutput.created_at.desc())
        .limit(DRIFT_ROW_CAP + 1)
    ).all()
    capped = len(features) > DRIFT_ROW_CAP
    features = features[:DRIFT_ROW_CAP]
    drift = []
    for ref in reference:
        recent = recent_distribution(ref, [f.get(ref.name) for f in features if f])
        psi = psi_of(ref, recent) if recent.n >= min_values else None
        drift.append(FeatureDrift(ref, recent, psi))
    return tuple(drift), len(features), capped


def field_summary(
    session: Session,
    model_name: str,
    *,
    since: datetime,
    until: datetime,
    reference: Sequence[FeatureReference],
    bucket: Bucket = "day",
    min_drift_values: int = MIN_VALUES_FOR_PSI,
) -> FieldSummary:
    """Volume, agreement, disagreement cases and input drift of one model's outputs created in
    [since, until). A verdict counts whenever it was given (its latest one per output); the cases for
    review are those whose latest verdict is disagree or partial."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if until <= since:
        raise ValueError("until must be after since")
    in_window = (
        (ModelOutput.model_name == model_name)
        & (ModelOutput.created_at >= since)
        & (ModelOutput.created_at < until)
    )
    # Only the latest verdict on each output counts; ranking (not max(created_at)) survives equal times.
    ranked = (
        select(
            ModelFeedback.output_id,
            ModelFeedback.verdict,
            ModelFeedback.corrected_label,
            ModelFeedback.comment,
            ModelFeedback.created_at.label("reviewed_at"),
            func.row_number()
            .over(
                partition_by=ModelFeedback.output_id,
                order_by=(ModelFeedback.created_at.desc(), ModelFeedback.id.desc()),
            )
            .label("rank"),
        )
        .where(ModelFeedback.output_id.in_(select(ModelOutput.id).where(in_window)))
        .subquery()
    )
    latest = select(ranked).where(ranked.c.rank == 1).subquery()

    day = _utc_day(session, ModelOutput.created_at).label("day")
    counts = [
        VerdictCount(_as_date(row.day), row.model_version, row.verdict, int(row.n))
        for row in session.execute(
            select(day, ModelOutput.model_version, latest.c.verdict, func.count().label("n"))
            .outerjoin(latest, latest.c.output_id == ModelOutput.id)
            .where(in_window)
            .group_by(day, ModelOutput.model_version, latest.c.verdict)
        )
    ]
    versions: dict[str, list[float]] = {}
    for row in counts:
        totals = versions.setdefault(row.version, [0, 0, 0.0])
        totals[0] += row.outputs
        if row.verdict is not None:
            totals[1] += row.outputs
            totals[2] += row.outputs * VERDICT_CREDIT.get(row.verdict, 0.0)
    last_moment = until - timedelta(microseconds=1)  # until is exclusive
    series = agreement_series(
        counts,
        first_day=since.astimezone(UTC).date(),
        last_day=last_moment.astimezone(UTC).date(),
        bucket=bucket,
    )

    disagreements = tuple(
        DisagreementCase(
            output_id=row.id,
            created_at=row.created_at,
            version=row.model_version,
            label=row.label,
            score=row.score,
            verdict=row.verdict,
            corrected_label=row.corrected_label,
            comment=row.comment,
            patient_id=row.patient_id,
            reviewed_at=row.reviewed_at,
        )
        for row in session.execute(
            select(
                ModelOutput.id,
                ModelOutput.created_at,
                ModelOutput.model_version,
                ModelOutput.label,
                ModelOutput.score,
                ModelOutput.patient_id,
                latest.c.verdict,
                latest.c.corrected_label,
                latest.c.comment,
                latest.c.reviewed_at,
            )
            .join(latest, latest.c.output_id == ModelOutput.id)
            .where(in_window, latest.c.verdict != "agree")
            .order_by(ModelOutput.created_at.desc(), ModelOutput.id)
            .limit(DISAGREEMENT_CASE_LIMIT)
        )
    )

    drift, drift_rows, drift_capped = _drift(session, in_window, reference, min_drift_values)
    return FieldSummary(
        model_name=model_name,
        since=since,
        until=until,
        bucket=bucket,
        versions=tuple(
            VersionVolume(version, int(t[0]), int(t[1]), float(t[2]))
            for version, t in sorted(versions.items())
        ),
        series=tuple(series),
        disagreements=disagreements,
        drift=drift,
        drift_rows=drift_rows,
        drift_capped=drift_capped,
    )


# --- alerts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldAlert:
    """A warning for the model's page; ``message`` is an English msgid, formatted with ``variables``."""

    kind: Literal["agreement", "drift"]
    message: str
    value: float
    threshold: float
    feature: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)


def alerts(
    summary: FieldSummary, *, min_agreement: float, max_psi: float, min_reviewed: int
) -> list[FieldAlert]:
    """Agreement below ``min_agreement`` (only once ``min_reviewed`` outputs were reviewed, so that a
    handful of verdicts cannot raise it) and each feature whose PSI exceeds ``max_psi``."""
    found: list[FieldAlert] = []
    rate = summary.agreement_rate
    if rate is not None and summary.reviewed >= min_reviewed and rate < min_agreement:
        found.append(
            FieldAlert(
                kind="agreement",
                message=N_(
                    "Clinicians agreed with %(rate)s of %(reviewed)s reviewed outputs, below the target of "
                    "%(threshold)s."
                ),
                value=rate,
                threshold=min_agreement,
                variables={
                    "rate": f"{rate:.0%}",
                    "reviewed": str(summary.reviewed),
                    "threshold": f"{min_agreement:.0%}",
                },
            )
        )
    for drift in summary.drift:
        if drift.psi is not None and drift.psi > max_psi:
            found.append(
                FieldAlert(
                    kind="drift",
                    message=N_(
                        "The input %(feature)s has moved away from the training data "
                        "(PSI %(psi)s, limit %(threshold)s)."
                    ),
                    value=drift.psi,
                    threshold=max_psi,
                    feature=drift.name,
                    variables={
                        "feature": drift.name,
                        "psi": f"{drift.psi:.2f}",
                        "threshold": f"{max_psi:.2f}",
                    },
                )
            )
    return found
