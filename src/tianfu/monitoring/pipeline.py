"""The scoring and alarm worker: device reports in; NEWS2, sepsis risk, alarms, storage and live updates out.

One pipeline serves a set of bus partitions (all of them in ``tianfu serve``; a share each in scaled-out
``tianfu worker`` processes). Per report it finds the bed and patient, updates the bed's current vital
signs, scores NEWS2, feeds the alarm engine, and publishes the bed's new state for central stations.
Writes are buffered and committed together at the end of each bus batch, before the batch is
acknowledged (in process, where nothing is acknowledged, at most every COMMIT_EVERY_S): what is
acknowledged is stored, so a worker that dies loses nothing, and a report that comes again is recognised by
its message id. The alarm engine's state is saved every half minute; an alarm the database already shows
as active is never raised a second time, even by a worker that restarted from an older save.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, String, Table, bindparam, func, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tianfu.core.audit.service import SYSTEM_ACTOR
from tianfu.core.bus import Event, EventBus, Subscription
from tianfu.core.db import Base, UTCDateTime, utcnow
from tianfu.core.kernel import Kernel
from tianfu.core.model_outputs import service as model_outputs
from tianfu.core.patients.models import Encounter, Location, Patient
from tianfu.monitoring import devices
from tianfu.monitoring.ai import MODEL_NAME as SEPSIS_MODEL
from tianfu.monitoring.ai import SUMMARY_COLUMNS as SEPSIS_DRIFT_INPUTS
from tianfu.monitoring.ai import TASK as SEPSIS_TASK
from tianfu.monitoring.alarms import (
    Acknowledge,
    AlarmEngine,
    AlarmEvent,
    ConfigureBed,
    EndMonitoring,
    EventKind,
    News2Scored,
    PauseAudio,
    Population,
    Tick,
    VitalSamples,
    condition_category,
)
from tianfu.monitoring.ingest.report import REPORT_SUBJECT, DeviceReport, iso, partition_of
from tianfu.monitoring.scores import MewsResult, News2Result, QsofaResult, early_warning_scores
from tianfu.monitoring.sepsis import OnlineFeatureExtractor, SepsisModel
from tianfu.monitoring.settings import MonitoringSettings
from tianfu.monitoring.tables import (
    AlarmEpisode,
    EngineSnapshot,
    MonitoringDevice,
    MonitoringProfile,
    NursingObservation,
)
from tianfu.monitoring.tables import AlarmEvent as StoredEvent
from tianfu.monitoring.tables import (
    VitalSample as StoredSample,
)
from tianfu.monitoring.vitals import TO_ENGINE, Measurement, Parameter, Validity, current_vital_set

log = logging.getLogger(__name__)

COMMAND_SUBJECT = "tianfu.monitoring.command"  # .p<partition>
BED_SUBJECT = "tianfu.monitoring.bed"  # .<ward id>: a bed's live state
ALARM_SUBJECT = "tianfu.monitoring.alarm"  # .<event kind>
DEVICE_SUBJECT = "tianfu.monitoring.device"  # .assigned: a device moved to another bed (or none)
STORED_PARAMETERS = (
    "heart_rate",
    "pulse_rate",
    "spo2",
    "respiratory_rate",
    "systolic_bp",
    "diastolic_bp",
    "mean_bp",
    "temperature",
    "etco2",
)
PHYSIONET_COLUMNS = {
    "heart_rate": "HR",
    "spo2": "O2Sat",
    "temperature": "Temp",
    "systolic_bp": "SBP",
    "mean_bp": "MAP",
    "diastolic_bp": "DBP",
    "respiratory_rate": "Resp",
    "etco2": "EtCO2",
}
# Device assignments and admissions announce themselves on the bus and clear the cache at once; the time
# limit only bounds how long a missed announcement could mislead.
PLACEMENT_TTL_S = 300.0
SEEN_EVERY_S = 60.0  # how often a device's "last seen" is written
MODEL_CHECK_S = 30.0  # how often the registry is asked which sepsis model version is active
SNAPSHOT_EVERY_S = 30.0  # a restarted worker resumes from the last save
SNAPSHOT_BEDS_PER_TURN = 500
_HOUR = timedelta(hours=1)
# Reports are scored in batches gathered over this long: one wake-up per batch, not per report.
LINGER_S = 0.01
COMMIT_EVERY_S = 0.2  # in-process bus: how often buffered writes are committed under load
CLOSED_HOURS_PER_COMMIT = 40  # sepsis scoring and storing, under 0.5 ms each: 5,000 beds' in 25 s
HOURS_SCORED_PER_TURN = 10  # of the event loop: about 3 ms
BED_PUBLISH_S = 0.1  # a ward's changed beds are published together, this long after the first change


class RecentIds:
    """The last ``size`` message ids of a bed, so that a report sent again is recognised at once."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def add(self, message_id: str) -> bool:
        """Remember the id; False when it was already there."""
        if message_id in self._ids:
            return False
        self._ids.add(message_id)
        self._order.append(message_id)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return True


@dataclass
class SepsisTracker:
    """The patient's hourly record, fed to the sepsis model as each hour completes."""

    extractor: OnlineFeatureExtractor = field(default_factory=OnlineFeatureExtractor)
    hour: datetime | None = None
    sums: dict[str, list[float]] = field(default_factory=dict)  # parameter → [sum, count]
    risk: float | None = None
    alarm: bool = False
    contributions: list[dict[str, Any]] = field(default_factory=list)
    hours_seen: int = 0


@dataclass
class BedState:
    bed_id: str
    ward_id: str | None
    device_pk: str
    device_identifier: str
    patient_id: str | None
    encounter_id: str | None
    encounter_start: datetime | None = None
    patient: dict[str, Any] = field(default_factory=dict)  # display: name, mrn, gender, age
    bed_name: str = ""
    population: Population = Population.ADULT
    spo2_scale: int | None = None
    limits: dict[str, float | None] = field(default_factory=dict)
    latest: dict[str, tuple[float, datetime]] = field(default_factory=dict)  # raw values as received
    measurements: dict[Parameter, Measurement] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)  # parameter → sensor_off / implausible
    news2: News2Result | None = None
    mews: MewsResult | None = None  # shown beside NEWS2; neither raises alarms
    qsofa: QsofaResult | None = None
    news2_fed: tuple[int, bool] | None = None
    scores_shown: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(("news2", "mews", "qsofa")))
    last_stored: datetime | None = None
    shown: dict[str, list[Any]] = field(default_factory=dict)  # parameter → [value, ISO time] for stations
    recent_ids: RecentIds = field(default_factory=lambda: RecentIds(512))
    sepsis: SepsisTracker | None = None
    history_pending: bool = False  # the patient's past hours are still to be fed to the sepsis tracker
    seq: int = 0
    configured: bool = False


@dataclass
class _Placed:
    device_pk: str
    bed_id: str | None
    ward_id: str | None
    patient_id: str | None
    encounter_id: str | None
    fetched: float
    seen_written: float = -math.inf  # never


class Pipeline:
    def __init__(
        self,
        kernel: Kernel,
        settings: MonitoringSettings,
        *,
        partitions: Sequence[int] | None = None,
        model: SepsisModel | None = None,
        model_version: str = "",
        model_source: Callable[[], tuple[SepsisModel | None, str]] | None = None,
    ) -> None:
        self.kernel = kernel
        self.settings = settings
        self.bus: EventBus = kernel.bus
        self.partitions = list(partitions if partitions is not None else range(settings.partitions))
        self.snapshot_key = "monitoring:" + ",".join(map(str, self.partitions))
        # Each distinct set of partitions needs its own copy of admissions and order changes.
        self._consumer_suffix = "p" + "-".join(map(str, self.partitions))
        self.engine = AlarmEngine()
        self.model = model
        self.model_version = model_version
        # Where the AI platform's active sepsis version comes from; checked again every MODEL_CHECK_S.
        self.model_source = model_source
        self._model_watch: asyncio.Task[None] | None = None
        self.beds: dict[str, BedState] = {}  # by bed id
        self._placements: dict[str, _Placed] = {}  # by device identifier
        self._episode_ids: dict[str, str] = {}  # engine episode id → stored episode id
        self._active_by_condition: dict[tuple[str, str], str] = {}  # (bed, condition) → stored episode id
        self._pending: _PendingWrites = _PendingWrites()
        self._closed_hours: list[tuple[BedState, SepsisTracker, dict[str, float], datetime]] = []
        self._unassociated_stored: dict[str, datetime] = {}
        self._commit_lock = asyncio.Lock()  # device → when its last row was kept
        self._subscriptions: list[Subscription] = []
        self._ticker: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._history_loader: asyncio.Task[None] | None = None
        self._background_commit: asyncio.Task[None] | None = None
        self._last_snapshot = time.monotonic()
        self._last_commit = 0.0
        self._changed_beds: dict[str, BedState] = {}  # by bed id: changed since the last publication
        self._bed_publication: asyncio.TimerHandle | None = None
        self._publications: set[asyncio.Future[None]] = set()
        self.processed = 0
        self.duplicates = 0

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.model_source is not None:
            self.model, self.model_version = await asyncio.to_thread(self.model_source)
            self._model_watch = asyncio.create_task(self._follow_model(), name="monitoring-model-watch")
        await asyncio.to_thread(self._restore)
        await asyncio.to_thread(self._preload)
        self._history_loader = asyncio.create_task(self._load_histories(), name="monitoring-histories")
        for p in self.partitions:
            self._subscriptions.append(
                await self.bus.subscribe(
                    f"{REPORT_SUBJECT}.p{p}",
                    f"monitoring-report-p{p}",
                    self.on_report,
                    on_batch_end=self._end_batch,
                    linger_s=LINGER_S,
                )
            )
            self._subscriptions.append(
                await self.bus.subscribe(
                    f"{COMMAND_SUBJECT}.p{p}",
                    f"monitoring-command-p{p}",
                    self.on_command,
                    on_batch_end=self._end_batch,
                )
            )
        self._subscriptions.append(
            await self.bus.subscribe(
                "tianfu.encounter.*", f"monitoring-encounters-{self._consumer_suffix}", self.on_encounter
            )
        )
        self._subscriptions.append(
            await self.bus.subscribe(
                DEVICE_SUBJECT + ".*", f"monitoring-devices-{self._consumer_suffix}", self.on_device_changed
            )
        )
        self._subscriptions.append(
            await self.bus.subscribe(
                "tianfu.monitoring.patient.*",
                f"monitoring-patients-{self._consumer_suffix}",
                self.on_patient_changed,
            )
        )
        self._ticker = asyncio.create_task(self._tick_forever(), name="monitoring-tick")
        self._refresher = asyncio.create_task(self._refresh_placements(), name="monitoring-placements")

    async def _follow_model(self) -> None:
        """An admin's switch of the sepsis model version (or off) reaches every worker within a minute."""
        assert self.model_source is not None
        while True:
            await asyncio.sleep(MODEL_CHECK_S)
            try:
                model, version = await asyncio.to_thread(self.model_source)
            except Exception:  # keep scoring with the loaded version; try again next time
                log.exception("could not read the active sepsis model")
                continue
            if version != self.model_version:
                log.info("sepsis model %s -> %s", self.model_version or "off", version or "off")
                self.model, self.model_version = model, version

    async def stop(self) -> None:
        for task in (self._ticker, self._refresher, self._history_loader, self._model_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for subscription in self._subscriptions:
            await subscription.stop()
        self._publish_changed_beds()
        await asyncio.gather(*self._publications)
        self._pending.snapshot = self.engine.to_dict()
        await self.commit()
        while self._closed_hours:
            await self.commit()

    def _restore(self) -> None:
        with self.kernel.sessions() as session:
            saved = session.get(EngineSnapshot, self.snapshot_key)
            if saved is not None:
                try:
                    self.engine = AlarmEngine.from_dict(saved.state)
                except ValueError:
                    log.warning("alarm-engine snapshot %s is unreadable; starting fresh", self.snapshot_key)
            for episode in session.scalars(select(AlarmEpisode).where(AlarmEpisode.state != "cleared")):
                if episode.bed_id:
                    self._active_by_condition[(episode.bed_id, episode.condition)] = episode.id
                if episode.engine_episode_id:
                    self._episode_ids[episode.engine_episode_id] = episode.id

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                outputs = self.engine.process(Tick(utcnow()))
                self._handle_alarm_events(outputs)
                if time.monotonic() - self._last_snapshot > SNAPSHOT_EVERY_S:
                    self._pending.snapshot = await self._snapshot()
                    self._last_snapshot = time.monotonic()
                if self._pending.dirty or self._closed_hours:
                    await self.commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitoring tick failed")

    async def _snapshot(self) -> dict[str, Any]:
        """The alarm engine's state, SNAPSHOT_BEDS_PER_TURN beds per turn of the event loop (5,000 beds at
        once held every report up for about 0.2 s)."""
        bed_ids = self.engine.bed_ids()
        taken: dict[str, Any] = {}
        for start in range(0, len(bed_ids), SNAPSHOT_BEDS_PER_TURN):
            taken.update(self.engine.beds_to_dict(bed_ids[start : start + SNAPSHOT_BEDS_PER_TURN]))
            await asyncio.sleep(0)
        return self.engine.to_dict(taken)

    # --- reports -------------------------------------------------------------------------------------

    async def on_report(self, event: Event) -> None:
        report = DeviceReport.from_data(event.data)
        await self.process(report)

    async def process(self, report: DeviceReport) -> None:
        placed = await self._placement(report)
        if placed.bed_id is None:
            self._store_unassociated(placed, report)
            return
        bed = self.beds.get(placed.bed_id)
        if bed is None or bed.patient_id != placed.patient_id or bed.device_pk != placed.device_pk:
            bed = await asyncio.to_thread(self._open_bed, placed, report.device_id)
            self.beds[placed.bed_id] = bed
        if not bed.recent_ids.add(f"{report.device_id}/{report.message_id}"):
            self.duplicates += 1
            return
        self.processed += 1
        outputs: list[AlarmEvent] = []
        if not bed.configured:
            outputs += self.engine.process(
                ConfigureBed(
                    report.received_at, bed.bed_id, population=bed.population, limit_overrides=bed.limits
                )
            )
            bed.configured = True
        measurements = report.measurements
        has_heart_rate = "heart_rate" in [m.parameter for m in measurements]
        measured: datetime | None = None  # the newest observation of the report
        flags = bed.flags
        moments: dict[datetime, dict[Parameter, float]] = {}  # the alarm engine's input, by observation time
        hourly: list[tuple[str, float, datetime]] = []  # what the hourly record for the sepsis model takes
        for m in measurements:
            at = m.observed_at
            if measured is None or at > measured:
                measured = at
            bed.latest[m.parameter] = (m.value, at)
            bed.shown[m.parameter] = [round(m.value, 1), iso(at)]
            parameter = TO_ENGINE.get(m.parameter)
            if parameter is None and m.parameter == "pulse_rate" and not has_heart_rate:
                parameter = Parameter.PULSE  # no ECG: the oximeter's pulse rate stands in
            if parameter is None:
                continue
            measurement = Measurement.trusted(parameter, m.value, at)
            validity = measurement.validity
            if validity is Validity.VALID:
                if flags:
                    flags.pop(m.parameter, None)
            else:
                flags[m.parameter] = validity.value
            bed.measurements[parameter] = measurement
            moment = moments.get(at)
            if moment is None:
                moment = moments[at] = {}
            moment[parameter] = m.value
            if validity is Validity.VALID and m.parameter in PHYSIONET_COLUMNS:
                hourly.append((m.parameter, m.value, at))
        if hourly and bed.sepsis is not None:
            self._add_to_hour(bed, bed.sepsis, hourly)
        for at in sorted(moments):  # one evaluation per moment, not per value
            outputs += self.engine.process(VitalSamples(at, bed.bed_id, tuple(moments[at].items())))
        for name, (value, at) in report.charted.items():
            self._apply_charted(bed, name, value, datetime.fromisoformat(at))
        # Score as of now (or the report's own time, if a device clock runs ahead): a value charted a
        # moment ago counts, one older than its maximum age does not.
        now = utcnow()
        outputs += self._score(bed, now if measured is None or measured < now else measured)
        self._handle_alarm_events(outputs)
        self._maybe_store(bed, placed, report, measured or report.received_at)
        self._bed_changed(bed)

    def _apply_charted(self, bed: BedState, name: str, value: Any, at: datetime) -> None:
        if name == "consciousness":
            bed.measurements[Parameter.CONSCIOUSNESS] = Measurement(Parameter.CONSCIOUSNESS, str(value), at)
        elif name == "on_oxygen":
            bed.measurements[Parameter.ON_OXYGEN] = Measurement(Parameter.ON_OXYGEN, bool(value), at)

    def _score(self, bed: BedState, now: datetime) -> list[AlarmEvent]:
        current = current_vital_set(bed.measurements.values(), now, spo2_scale=bed.spo2_scale)
        scored = early_warning_scores(current)
        if scored[0] is not bed.news2:  # equal sets share one result: its JSON is built once
            bed.news2, bed.mews, bed.qsofa = scored
            bed.scores_shown = _scores_shown(*scored)
        score = scored[0]
        fed = (score.total, score.red_score)
        if fed == bed.news2_fed:
            return []
        bed.news2_fed = fed
        return self.engine.process(News2Scored(now, bed.bed_id, score.total, score.red_score))

    # --- the patient's hourly record and the sepsis model ---------------------------------------------

    def _add_to_hour(
        self, bed: BedState, tracker: SepsisTracker, values: list[tuple[str, float, datetime]]
    ) -> None:
        for parameter, value, at in values:
            if tracker.hour is None or not tracker.hour <= at < tracker.hour + _HOUR:
                hour = at.replace(minute=0, second=0, microsecond=0)
                if tracker.hour is None:
                    tracker.hour = hour
                elif hour > tracker.hour:
                    self._close_hour(bed, tracker)
                    tracker.hour = hour
            total = tracker.sums.get(parameter)
            if total is None:
                total = tracker.sums[parameter] = [0.0, 0.0]
            total[0] += value
            total[1] += 1

    def _close_hour(self, bed: BedState, tracker: SepsisTracker) -> None:
        means = {p: s / n for p, (s, n) in tracker.sums.items() if n}
        tracker.sums = {}
        if not means or tracker.hour is None:
            return
        # Scored a few at a time at the next commits: at the top of the hour every bed closes one, and
        # scoring thousands in a row would hold up every report for seconds.
        self._closed_hours.append((bed, tracker, means, tracker.hour))

    async def _score_closed_hours(
        self, closed: Sequence[tuple[BedState, SepsisTracker, dict[str, float], datetime]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Each closed hour's sepsis risk and hourly row, HOURS_SCORED_PER_TURN at a time on the event loop.

        Not in a worker thread: a thread that computes holds the interpreter lock, and the event loop then
        waits up to a switch interval (5 ms) for it after every socket call. At the top of the hour that
        held reports up for more than a second at 5,000 beds.
        """
        samples, outputs = [], []
        for index, (bed, tracker, means, hour) in enumerate(closed):
            if index and index % HOURS_SCORED_PER_TURN == 0:
                await asyncio.sleep(0)
            try:
                output = self._score_hour(bed, tracker, means, hour)
            except Exception:  # the hour's row is still stored, without a risk
                log.exception("could not score the hour from %s of bed %s", hour.isoformat(), bed.bed_id)
                output = None
            if output is not None:
                outputs.append(output)
            samples.append(self._sample_row(bed, means, hour, "hour", sepsis=tracker.risk))
        return samples, outputs

    def _score_hour(
        self,
        bed: BedState,
        tracker: SepsisTracker,
        means: dict[str, float],
        hour: datetime,
        *,
        predict: bool = True,
    ) -> dict[str, Any] | None:
        """Feed an hour to the patient's tracker; with ``predict``, score it and return the AI platform's
        record of what the model said, and on what."""
        row: dict[str, object] = {PHYSIONET_COLUMNS[p]: v for p, v in means.items() if p in PHYSIONET_COLUMNS}
        if "HR" not in row and "pulse_rate" in means:
            row["HR"] = means["pulse_rate"]
        age = bed.patient.get("age_years")
        row["Age"] = float(age) if age is not None else float("nan")
        gender = bed.patient.get("gender")
        row["Gender"] = 1.0 if gender == "male" else 0.0 if gender == "female" else float("nan")
        if bed.encounter_start is not None:
            row["ICULOS"] = max(1.0, (hour - bed.encounter_start).total_seconds() / 3600 + 1)
            row["HospAdmTime"] = 0.0  # the stay began on this unit: no earlier time in hospital
        features = tracker.extractor.update(row)
        tracker.hours_seen += 1
        if self.model is None or not predict:
            return None
        explanation = self.model.explain(features, top_k=4)
        tracker.risk = explanation.probability
        tracker.alarm = self.model.alarm(explanation.probability)
        tracker.contributions = [
            {
                "signal": c.name,
                "value": None if c.value != c.value else round(c.value, 2),
                "contribution": round(c.contribution, 3),
            }
            for c in explanation.top
        ]
        if bed.patient_id is None:
            return None
        return {
            "patient_id": bed.patient_id,
            "hour": hour,
            "version": self.model_version,
            "risk": tracker.risk,
            "alarm": tracker.alarm,
            "contributions": tracker.contributions,
            "inputs": {
                k: (None if v != v else round(float(v), 2))
                for k in SEPSIS_DRIFT_INPUTS
                if isinstance(v := row.get(k), float | int)
            },
        }

    # --- alarms ----------------------------------------------------------------------------------------

    def _handle_alarm_events(self, outputs: Iterable[AlarmEvent]) -> None:
        touched: set[str] = set()
        for output in outputs:
            stored = self._stored_episode(output)
            if stored is None:
                continue
            self._pending.events.append((stored, output))
            touched.add(output.bed)
            if output.kind is EventKind.CLEARED:
                self._active_by_condition.pop((output.bed, output.condition), None)
            if output.kind in {EventKind.RAISED, EventKind.ESCALATED, EventKind.CLEARED}:
                self._pending.published.append(output)
        for bed_id in touched:
            bed = self.beds.get(bed_id)
            if bed is not None:
                self._bed_changed(bed)

    def _stored_episode(self, output: AlarmEvent) -> str | None:
        stored = self._episode_ids.get(output.episode_id)
        if stored is not None:  # a raise seen again is a worker replaying what it had already stored
            return None if output.kind is EventKind.RAISED else stored
        if output.kind is not EventKind.RAISED:
            return None  # an episode raised before a restart from an older save: nothing to attach to
        active = self._active_by_condition.get((output.bed, output.condition))
        if active is not None:  # already raised and stored (a worker that restarted re-raises it)
            self._episode_ids[output.episode_id] = active
            return None
        stored = hashlib.sha256(f"{output.episode_id}|{output.at.isoformat()}".encode()).hexdigest()[:32]
        self._episode_ids[output.episode_id] = stored
        self._active_by_condition[(output.bed, output.condition)] = stored
        return stored

    async def on_command(self, event: Event) -> None:
        data = event.data
        stored = data["episode_id"]
        engine_id = next((e for e, s in self._episode_ids.items() if s == stored), None)
        if engine_id is None:
            log.warning("command for an alarm this worker does not hold: %s", stored)
            return
        at = datetime.fromisoformat(data["at"])
        if data["action"] == "acknowledge":
            outputs = self.engine.process(Acknowledge(at, engine_id, data["user_id"]))
        elif data["action"] == "pause":
            outputs = self.engine.process(
                PauseAudio(at, engine_id, data["user_id"], timedelta(seconds=int(data.get("seconds", 120))))
            )
        else:
            return
        self._handle_alarm_events(outputs)

    async def on_patient_changed(self, event: Event) -> None:
        """Monitoring orders changed: reopen the patient's bed with the new population, limits and scale."""
        patient_id = event.data.get("patient_id")
        for bed in list(self.beds.values()):
            if bed.patient_id != patient_id:
                continue
            placed = _Placed(bed.device_pk, bed.bed_id, bed.ward_id, bed.patient_id, bed.encounter_id, 0.0)
            fresh = await asyncio.to_thread(self._open_bed, placed, bed.device_identifier)
            fresh.latest, fresh.measurements, fresh.flags = bed.latest, bed.measurements, bed.flags
            fresh.shown = bed.shown
            fresh.recent_ids, fresh.seq, fresh.last_stored = bed.recent_ids, bed.seq, bed.last_stored
            fresh.sepsis = bed.sepsis or fresh.sepsis  # the hour in progress goes on
            self.beds[bed.bed_id] = fresh
            outputs = self.engine.process(
                ConfigureBed(
                    utcnow(),
                    bed.bed_id,
                    population=fresh.population,
                    limit_overrides=fresh.limits,
                    user="system:orders",
                )
            )
            fresh.configured = True
            outputs += self._score(fresh, utcnow())
            self._handle_alarm_events(outputs)
            self._bed_changed(fresh)

    async def on_device_changed(self, event: Event) -> None:
        self._placements.pop(event.data.get("identifier", ""), None)

    async def on_encounter(self, event: Event) -> None:
        """Admission, transfer or discharge: the bed's patient changes; monitoring of the old stay ends."""
        bed_id = event.data.get("bed_id")
        self._placements.clear()
        for bed in list(self.beds.values()):
            if bed.encounter_id == event.data.get("encounter_id") or bed.bed_id == bed_id:
                outputs = self.engine.process(EndMonitoring(utcnow(), bed.bed_id, "system:adt"))
                self._handle_alarm_events(outputs)
                self.beds.pop(bed.bed_id, None)

    # --- places, patients, storage ------------------------------------------------------------------

    async def _placement(self, report: DeviceReport) -> _Placed:
        cached = self._placements.get(report.device_id)
        now = time.monotonic()
        if cached is not None and now - cached.fetched < PLACEMENT_TTL_S:
            if now - cached.seen_written > SEEN_EVERY_S:
                # Written at once the first time, then at the device's own moment of the minute (_phase)
                first = cached.seen_written == _NEVER
                cached.seen_written = now - SEEN_EVERY_S * _phase(report.device_id) if first else now
                self._pending.seen[cached.device_pk] = (report.received_at, report.source)
            return cached
        placed = await asyncio.to_thread(self._lookup, report)
        placed.seen_written = placed.fetched  # the lookup wrote it
        self._placements[report.device_id] = placed
        return placed

    def _lookup(self, report: DeviceReport) -> _Placed:
        with self.kernel.sessions() as session:
            if report.device_id.startswith("manual:"):  # charted by staff, no bedside device
                patient_id = report.device_id.split(":", 1)[1]
                device = devices.find_or_register(
                    session, report.device_id, source=report.source, seen_at=report.received_at, kind="manual"
                )
                encounter = session.scalar(
                    select(Encounter).where(
                        Encounter.patient_id == patient_id, Encounter.status == "in-progress"
                    )
                )
                bed_id = encounter.bed_id if encounter else None
                device.bed_id = bed_id
                session.commit()
                bed = session.get(Location, bed_id) if bed_id else None
                return _Placed(
                    device.id,
                    bed_id,
                    bed.parent_id if bed else None,
                    patient_id if bed_id else None,
                    encounter.id if encounter and bed_id else None,
                    time.monotonic(),
                )
            device = devices.find_or_register(
                session, report.device_id, source=report.source, seen_at=report.received_at
            )
            place = devices.placement(session, device)
            session.commit()
            return _Placed(
                device.id, place.bed_id, place.ward_id, place.patient_id, place.encounter_id, time.monotonic()
            )

    def _open_bed(self, placed: _Placed, identifier: str) -> BedState:
        with self.kernel.sessions() as session:
            bed = self._open_beds(session, [(placed, identifier)])[0]
        tracker = self._sepsis_histories([bed]).get(bed.bed_id)
        if tracker is not None:
            bed.sepsis = tracker
        bed.history_pending = False
        return bed

    def _preload(self) -> None:
        """Place every assigned device of this worker's partitions and open its bed, in a few queries:
        after a start or a restart, thousands of beds are back on the station within seconds."""
        with self.kernel.sessions() as session:
            placements = self._assigned_devices(session)
            self._placements.update(placements)
            opening = [(placed, identifier) for identifier, placed in placements.items()]
            for index in range(0, len(opening), 500):
                for bed in self._open_beds(session, opening[index : index + 500]):
                    self.beds[bed.bed_id] = bed
        log.info("monitoring worker %s: %d beds ready", self.snapshot_key, len(self.beds))

    async def _refresh_placements(self) -> None:
        """Check every cached placement against the database in one query, every PLACEMENT_TTL_S / 2.
        Assignments and admissions announce themselves on the bus and clear the cache at once; this only
        bounds how long a missed announcement could mislead, without a lookup per device on the report path
        (at 5,000 devices, 17 a second, each holding up the reports behind it)."""
        while True:
            await asyncio.sleep(PLACEMENT_TTL_S / 2)
            try:
                await self.refresh_placements()
            except Exception:  # the entries age; their devices are looked up one by one meanwhile
                log.exception("could not refresh device placements")

    async def refresh_placements(self) -> None:
        """Renew the cached placements the database confirms and drop those it contradicts (looked up at the
        device's next report); the rest (devices at no bed) age and are looked up one by one."""
        fresh = await asyncio.to_thread(self._assigned_devices_now)
        now = time.monotonic()
        for identifier, cached in list(self._placements.items()):
            placed = fresh.get(identifier)
            if placed is None:
                continue
            if _where(cached) == _where(placed):
                cached.fetched = now
            else:
                del self._placements[identifier]

    def _assigned_devices_now(self) -> dict[str, _Placed]:
        with self.kernel.sessions() as session:
            return self._assigned_devices(session)

    def _assigned_devices(self, session: Session) -> dict[str, _Placed]:
        """This worker's devices that are assigned to a bed, and each bed's patient, by device identifier."""
        rows = session.execute(
            select(
                MonitoringDevice.id,
                MonitoringDevice.identifier,
                MonitoringDevice.bed_id,
                Location.parent_id,
            )
            .join(Location, Location.id == MonitoringDevice.bed_id)
            .where(MonitoringDevice.active.is_(True))
        ).all()
        mine = [r for r in rows if partition_of(r.identifier, self.settings.partitions) in self.partitions]
        stays = {
            e.bed_id: e
            for e in session.execute(
                select(Encounter.bed_id, Encounter.patient_id, Encounter.id).where(
                    Encounter.status == "in-progress",
                    Encounter.bed_id.in_({r.bed_id for r in mine}) if len(mine) < 30_000 else true(),
                )
            )
        }
        now = time.monotonic()
        placements = {}
        for row in mine:
            stay = stays.get(row.bed_id)
            placements[row.identifier] = _Placed(
                row.id,
                row.bed_id,
                row.parent_id,
                stay.patient_id if stay else None,
                stay.id if stay else None,
                fetched=now,
            )
        return placements

    def _open_beds(self, session: Session, placements: Sequence[tuple[_Placed, str]]) -> list[BedState]:
        """The live state of each bed: its patient, monitoring orders, charted observations, and the last
        72 hours of hourly record for the sepsis model. Bulk queries, whatever the number of beds."""
        bed_ids = [p.bed_id for p, _ in placements if p.bed_id]
        patient_ids = [p.patient_id for p, _ in placements if p.patient_id]
        encounter_ids = [p.encounter_id for p, _ in placements if p.encounter_id]
        names = dict(
            session.execute(select(Location.id, Location.name).where(Location.id.in_(bed_ids))).all()
        )
        patients = {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))}
        starts = dict(
            session.execute(
                select(Encounter.id, Encounter.period_start).where(Encounter.id.in_(encounter_ids))
            ).all()
        )
        profiles = {
            p.patient_id: p
            for p in session.scalars(
                select(MonitoringProfile).where(MonitoringProfile.patient_id.in_(patient_ids))
            )
        }
        charted: dict[tuple[str, str], NursingObservation] = {}
        for observation in session.scalars(
            select(NursingObservation)
            .where(NursingObservation.patient_id.in_(patient_ids))
            .order_by(NursingObservation.observed_at)
        ):
            charted[(observation.patient_id, observation.kind)] = observation  # the latest wins
        opened = []
        for placed, identifier in placements:
            assert placed.bed_id is not None
            state = BedState(
                bed_id=placed.bed_id,
                ward_id=placed.ward_id,
                device_pk=placed.device_pk,
                device_identifier=identifier,
                patient_id=placed.patient_id,
                encounter_id=placed.encounter_id,
                bed_name=names.get(placed.bed_id, ""),
            )
            opened.append(state)
            if placed.patient_id is None:
                continue
            patient = patients.get(placed.patient_id)
            state.encounter_start = starts.get(placed.encounter_id) if placed.encounter_id else None
            age = _age(patient.birth_date) if patient and patient.birth_date else None
            state.patient = {
                "id": placed.patient_id,
                "name": patient.name if patient else "",
                "mrn": patient.mrn if patient else "",
                "gender": patient.gender if patient else "",
                "age_years": age,
            }
            profile = profiles.get(placed.patient_id)
            if profile is not None:
                state.population = Population(profile.population)
                state.spo2_scale = profile.spo2_scale if profile.spo2_scale == 2 else None
                state.limits = dict(profile.limits)
            elif age is not None and age < 16:
                state.population = Population.PAEDIATRIC
            consciousness = charted.get((placed.patient_id, "consciousness"))
            if consciousness is not None:
                self._apply_charted(state, "consciousness", consciousness.value, consciousness.observed_at)
            oxygen = charted.get((placed.patient_id, "oxygen"))
            if oxygen is not None:
                self._apply_charted(state, "on_oxygen", oxygen.value == "oxygen", oxygen.observed_at)
            state.sepsis = SepsisTracker()
            state.history_pending = True
        return opened

    def _sepsis_histories(self, beds: Sequence[BedState]) -> dict[str, SepsisTracker]:
        """Each patient's tracker fed with the last 72 hours of hourly record (in a worker thread: it reads
        the beds but changes none of them)."""
        by_patient = {b.patient_id: b for b in beds if b.patient_id}
        history: dict[str, list[Any]] = {}
        columns = [getattr(StoredSample, p) for p in PHYSIONET_COLUMNS]
        with self.kernel.sessions() as session:
            for row in session.execute(
                select(StoredSample.patient_id, StoredSample.observed_at, *columns)
                .where(
                    StoredSample.patient_id.in_(list(by_patient)),
                    StoredSample.resolution == "hour",
                    StoredSample.observed_at >= utcnow() - timedelta(hours=72),
                )
                .order_by(StoredSample.observed_at)
            ):
                history.setdefault(row.patient_id, []).append(row)
        trackers = {}
        for patient_id, rows in history.items():
            bed = by_patient[patient_id]
            tracker = SepsisTracker()
            for index, row in enumerate(rows):
                means = {p: getattr(row, p) for p in PHYSIONET_COLUMNS if getattr(row, p) is not None}
                if means:  # features need every hour; the model only the last
                    output = self._score_hour(
                        bed, tracker, means, row.observed_at, predict=index == len(rows) - 1
                    )
                    if output is not None:
                        self._pending.model_outputs.append(output)
            trackers[bed.bed_id] = tracker
        return trackers

    async def _load_histories(self) -> None:
        """Give opened beds their patients' past hours, a few hundred at a time, while reports flow."""
        pending = [b for b in self.beds.values() if b.history_pending]
        for index in range(0, len(pending), 200):
            chunk = pending[index : index + 200]
            trackers = await asyncio.to_thread(self._sepsis_histories, chunk)
            for old in chunk:
                bed = self.beds.get(old.bed_id)
                if bed is not old:
                    continue  # reopened meanwhile (a transfer): it loaded its own history
                bed.history_pending = False
                fresh = trackers.get(bed.bed_id)
                if fresh is not None and bed.sepsis is not None and bed.sepsis.hours_seen == 0:
                    fresh.hour, fresh.sums = bed.sepsis.hour, bed.sepsis.sums  # keep the hour in progress
                    bed.sepsis = fresh

    def _maybe_store(self, bed: BedState, placed: _Placed, report: DeviceReport, measured: datetime) -> None:
        """At most one row per sampling interval, at the time the values were measured."""
        if (
            bed.last_stored is not None
            and abs((measured - bed.last_stored).total_seconds()) < self.settings.sample_interval_s
        ):
            return
        first = bed.last_stored is None
        bed.last_stored = measured
        if first:  # the next rows at the bed's own moment of the interval (see _phase)
            bed.last_stored -= timedelta(seconds=self.settings.sample_interval_s * _phase(bed.bed_id))
        values = {p: v for p, (v, _) in bed.latest.items() if p in STORED_PARAMETERS}
        row = self._sample_row(
            bed,
            values,
            measured,
            "minute",
            sepsis=bed.sepsis.risk if bed.sepsis else None,
            source=report.source,
        )
        if report.unmapped:
            row["flags"] = {**row["flags"], "unmapped": [u.code for u in report.unmapped][:20]}
        self._pending.samples.append(row)

    def _sample_row(
        self,
        bed: BedState,
        values: dict[str, float],
        at: datetime,
        resolution: str,
        *,
        sepsis: float | None = None,
        source: str = "",
    ) -> dict[str, Any]:
        row: dict[str, Any] = {p: values.get(p) for p in STORED_PARAMETERS}
        row.update(
            resolution=resolution,
            observed_at=at,
            device_id=bed.device_pk,
            bed_id=bed.bed_id,
            patient_id=bed.patient_id,
            news2=bed.news2.total if bed.news2 else None,
            news2_partial=bed.news2.partial if bed.news2 else False,
            sepsis_risk=sepsis,
            source=source,
            flags=dict(bed.flags),
        )
        return row

    def _store_unassociated(self, placed: _Placed, report: DeviceReport) -> None:
        """Data from a device at no bed (or a bed without a patient) is kept, marked as unassociated."""
        last = self._unassociated_stored.get(placed.device_pk)
        now = max((m.observed_at for m in report.measurements), default=report.received_at)
        if last is not None and (now - last).total_seconds() < self.settings.sample_interval_s:
            return
        self._unassociated_stored[placed.device_pk] = now
        values = {m.parameter: m.value for m in report.measurements if m.parameter in STORED_PARAMETERS}
        row: dict[str, Any] = {p: values.get(p) for p in STORED_PARAMETERS}
        row.update(
            resolution="minute",
            observed_at=now,
            device_id=placed.device_pk,
            bed_id=placed.bed_id,
            patient_id=None,
            news2=None,
            news2_partial=False,
            sepsis_risk=None,
            source=report.source,
            flags={"unassociated": True},
        )
        self._pending.samples.append(row)

    def _bed_changed(self, bed: BedState) -> None:
        """Publish the bed's new state with the other changes of its ward, within BED_PUBLISH_S."""
        bed.seq += 1
        self._changed_beds[bed.bed_id] = bed
        if self._bed_publication is None:
            loop = asyncio.get_running_loop()
            self._bed_publication = loop.call_later(BED_PUBLISH_S, self._publish_changed_beds)

    def _publish_changed_beds(self) -> None:
        """One event per ward with its beds' new states: at thousands of reports a second, one event per
        report cost the bus and the central stations' live view more than the scoring."""
        if self._bed_publication is not None:
            self._bed_publication.cancel()
            self._bed_publication = None
        changed, self._changed_beds = self._changed_beds, {}
        wards: dict[str, list[dict[str, Any]]] = {}
        updated_at = utcnow().isoformat()
        for bed in changed.values():
            wards.setdefault(bed.ward_id or "none", []).append(self._bed_state(bed, updated_at))
        for ward, states in wards.items():
            subject, data = f"{BED_SUBJECT}.{ward}", {"beds": states}
            if not self.bus.publish_nowait(subject, data):
                publication = asyncio.ensure_future(self._publish(subject, data))
                self._publications.add(publication)
                publication.add_done_callback(self._publications.discard)

    async def _publish(self, subject: str, data: dict[str, Any]) -> None:
        try:
            await self.bus.publish(subject, data)
        except Exception:  # the next change of these beds shows them again
            log.exception("could not publish bed states on %s", subject)

    def _bed_state(self, bed: BedState, updated_at: str) -> dict[str, Any]:
        alarms = [
            {
                "id": self._episode_ids.get(a.episode_id, a.episode_id),
                "condition": a.condition,
                "category": condition_category(a.condition),
                "priority": a.priority.value,
                "raised_at": a.raised_at.isoformat(),
                "tier": a.tier,
                "latched": a.latched,
                "acknowledged": a.acknowledged_by is not None,
                "paused_until": a.paused_until.isoformat() if a.paused_until else None,
            }
            for a in self.engine.active_alarms(bed.bed_id)
        ]
        return {
            "bed_id": bed.bed_id,
            "ward_id": bed.ward_id,
            "bed_name": bed.bed_name,
            "seq": bed.seq,
            "device": bed.device_identifier,
            "patient": bed.patient or None,
            "vitals": dict(bed.shown),
            "flags": dict(bed.flags),
            **bed.scores_shown,
            "alarms": alarms,
            "sepsis": {"risk": bed.sepsis.risk, "alarm": bed.sepsis.alarm, "top": bed.sepsis.contributions}
            if bed.sepsis and bed.sepsis.risk is not None
            else None,
            "updated_at": updated_at,
        }

    # --- committing ------------------------------------------------------------------------------------

    async def _end_batch(self) -> None:
        """JetStream acknowledges a batch when this returns, so its writes must be stored by then. The
        in-process bus acknowledges to no one: there batches are committed together, at most every
        COMMIT_EVERY_S, beside the scoring that goes on (each transaction costs as much as hundreds of
        rows, and under load a batch ends hundreds of times a second)."""
        if self.bus.durable:
            await self.commit()
        elif self._background_commit is None or self._background_commit.done():
            self._background_commit = asyncio.create_task(
                self._commit_in_background(), name="monitoring-commit"
            )

    async def _commit_in_background(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._last_commit + COMMIT_EVERY_S - time.monotonic()))
            await self.commit()
        except Exception:  # the rows wait for the next commit
            log.exception("monitoring commit failed")

    async def commit(self) -> None:
        async with self._commit_lock:  # one commit at a time, in order
            await self._commit()

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        # A few dozen closed hours per commit: at the top of the hour every bed closes one, and scoring
        # thousands at once held the reports up for seconds.
        closed = self._closed_hours[:CLOSED_HOURS_PER_COMMIT]
        del self._closed_hours[:CLOSED_HOURS_PER_COMMIT]
        if closed:
            samples, outputs = await self._score_closed_hours(closed)
            self._pending.samples += samples
            self._pending.model_outputs += outputs
        pending, self._pending = self._pending, _PendingWrites()
        for output in pending.published:
            await self.bus.publish(f"{ALARM_SUBJECT}.{output.kind.value}", output.to_dict())
        if pending.has_rows:
            try:
                await asyncio.to_thread(self._write, pending)
            except Exception:
                # Keep the rows for the next commit (stored rows are idempotent: nothing doubles).
                self._pending.samples[:0] = pending.samples
                self._pending.events[:0] = pending.events
                self._pending.model_outputs[:0] = pending.model_outputs
                self._pending.seen = pending.seen | self._pending.seen
                self._pending.snapshot = self._pending.snapshot or pending.snapshot
                raise

    def _write(self, pending: _PendingWrites) -> None:
        """One transaction, one executemany per statement: an alarm storm of thousands of raises and
        clears a second costs a few statements, not a few per alarm."""
        with self.kernel.sessions() as session, session.begin():
            insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert  # type: ignore[union-attr]
            if pending.seen:
                devices = _table(MonitoringDevice)
                session.execute(
                    update(devices)
                    .where(devices.c.id == bindparam("device_pk"))
                    .values(last_seen_at=bindparam("seen"), last_source=bindparam("source")),
                    [
                        {"device_pk": pk, "seen": seen, "source": source}
                        for pk, (seen, source) in pending.seen.items()
                    ],
                )
            if pending.samples:
                session.execute(insert(_table(StoredSample)).on_conflict_do_nothing(), pending.samples)
            if pending.events:
                self._write_events(session, insert, pending.events)
            if pending.model_outputs:
                self._write_model_outputs(session, pending.model_outputs)
            if pending.snapshot is not None:
                statement = insert(EngineSnapshot).values(
                    partition_key=self.snapshot_key, state=pending.snapshot, saved_at=utcnow()
                )
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["partition_key"],
                        set_={"state": pending.snapshot, "saved_at": utcnow()},
                    )
                )

    def _write_model_outputs(self, session: Session, risks: list[dict[str, Any]]) -> None:
        model_outputs.record_outputs(
            session,
            self.kernel.audit,
            actor=SYSTEM_ACTOR,
            outputs=[
                model_outputs.NewOutput(
                    module="monitoring",
                    task=SEPSIS_TASK,
                    model_name=SEPSIS_MODEL,
                    model_version=risk["version"],
                    input_ref=f"monitoring/sepsis/{risk['patient_id']}/{risk['hour'].isoformat()}",
                    output={
                        "risk": risk["risk"],
                        "alarm": risk["alarm"],
                        "contributions": risk["contributions"],
                    },
                    label="sepsis risk" if risk["alarm"] else "no alarm",
                    score=risk["risk"],
                    patient_id=risk["patient_id"],
                    input_features=risk["inputs"],
                )
                for risk in risks
            ],
        )

    def _write_events(self, session: Session, insert: Any, events: Sequence[tuple[str, AlarmEvent]]) -> None:
        """Store alarm events in order: new episodes first, then each touched episode's changes folded
        into one row update (its events' changes applied in order), then the event history."""
        raised: list[dict[str, Any]] = []
        changes: dict[str, dict[str, Any]] = {}  # stored episode → folded update
        history: list[dict[str, Any]] = []
        for stored, output in events:
            user_id = output.user if output.user and not output.user.startswith("system:") else None
            kind = output.kind
            if kind is EventKind.RAISED:
                bed = self.beds.get(output.bed)
                raised.append(
                    {
                        "id": stored,
                        "engine_episode_id": output.episode_id,
                        "bed_id": output.bed,
                        "patient_id": bed.patient_id if bed else None,
                        "device_id": bed.device_pk if bed else None,
                        "condition": output.condition,
                        "kind": condition_category(output.condition),
                        "priority": output.priority.value,
                        "state": "active",
                        "message": output.detail or "",
                        "value": output.value,
                        "raised_at": output.at,
                        "escalation_level": 0,
                        "latching": output.priority.value == "high",
                    }
                )
            elif kind in _EPISODE_CHANGES:
                change = changes.setdefault(
                    stored,
                    {
                        "episode": stored,
                        "new_state": None,
                        "acknowledged_at": None,
                        "acknowledged_by_id": None,
                        "cleared_at": None,
                        "escalations": 0,
                    },
                )
                if kind is EventKind.ESCALATED:
                    change["escalations"] += 1
                else:
                    change["new_state"] = _EPISODE_CHANGES[kind]
                if kind is EventKind.ACKNOWLEDGED:
                    change["acknowledged_at"], change["acknowledged_by_id"] = output.at, user_id
                elif kind is EventKind.CLEARED:
                    change["cleared_at"] = output.at
            details = output.to_dict()
            history.append(
                {
                    "episode_id": stored,
                    "event": kind.value,
                    "at": output.at,
                    "user_id": user_id,
                    "detail": {k: v for k, v in details.items() if k in _EVENT_DETAIL_KEYS},
                    "dedup_key": f"{stored}|{kind.value}|{output.at.isoformat()}",
                }
            )
        if raised:
            session.execute(insert(_table(AlarmEpisode)).on_conflict_do_nothing(), raised)
        if changes:
            episodes = _table(AlarmEpisode)
            c = episodes.c
            session.execute(
                update(episodes)
                .where(c.id == bindparam("episode"))
                .values(
                    state=func.coalesce(bindparam("new_state", type_=String), c.state),
                    acknowledged_at=func.coalesce(
                        bindparam("acknowledged_at", type_=UTCDateTime()), c.acknowledged_at
                    ),
                    acknowledged_by_id=func.coalesce(
                        bindparam("acknowledged_by_id", type_=String), c.acknowledged_by_id
                    ),
                    cleared_at=func.coalesce(bindparam("cleared_at", type_=UTCDateTime()), c.cleared_at),
                    escalation_level=c.escalation_level + bindparam("escalations", type_=Integer),
                ),
                list(changes.values()),
            )
        session.execute(insert(_table(StoredEvent)).on_conflict_do_nothing(), history)


#: The state an episode's row takes on each kind of event (an escalation raises its level instead).
_EPISODE_CHANGES: dict[EventKind, str | None] = {
    EventKind.ACKNOWLEDGED: "acknowledged",
    EventKind.ESCALATED: None,
    EventKind.PAUSED: "paused",
    EventKind.CLEARED: "cleared",
}
_EVENT_DETAIL_KEYS = frozenset({"tier", "value", "until", "detail", "priority"})


def _table(model: type[Base]) -> Table:
    """The model's table, for Core executemany (the ORM's bulk paths cost far more per row)."""
    return cast(Table, model.__table__)


@dataclass
class _PendingWrites:
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, AlarmEvent]] = field(default_factory=list)
    published: list[AlarmEvent] = field(default_factory=list)
    seen: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None
    model_outputs: list[dict[str, Any]] = field(default_factory=list)  # hourly sepsis risks

    @property
    def has_rows(self) -> bool:
        return bool(
            self.samples or self.events or self.seen or self.snapshot is not None or self.model_outputs
        )

    @property
    def dirty(self) -> bool:
        return self.has_rows or bool(self.published)


def _scores_shown(news2: News2Result, mews: MewsResult, qsofa: QsofaResult) -> dict[str, Any]:
    return {
        "news2": news2.to_json(),
        "mews": {"total": mews.total, "missing": list(mews.missing)},
        "qsofa": {"total": qsofa.total, "missing": list(qsofa.missing)},
    }


_NEVER = -math.inf


def _where(placed: _Placed) -> tuple[str | None, ...]:
    return placed.device_pk, placed.bed_id, placed.ward_id, placed.patient_id, placed.encounter_id


def _phase(key: str) -> float:
    """A fixed fraction in [0, 1) per key, to spread periodic work: beds and devices that started together
    (all of them, after a restart) would otherwise store, write or look up in the same second, every time."""
    return zlib.crc32(key.encode()) / 2**32


def _age(born: date) -> int:
    today = datetime.now(UTC).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
