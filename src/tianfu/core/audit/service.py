"""Append to and verify the audit chain.

Each record's hash is HMAC-SHA256(key, previous hash || canonical JSON of the record). Editing a
record breaks its own hash; deleting one breaks the sequence and the next record's link; deleting the
newest ones disagrees with the chain head, whose own MAC cannot be recomputed without the key; and
without the key nobody can forge a consistent chain. What the database alone cannot show is a roll-back
of the whole database (records and head) to an earlier copy: for that, export checkpoints regularly
(``tianfu audit checkpoint``) to storage the database administrators cannot rewrite, and verify against
them (``tianfu audit verify --checkpoints FILE``).
Appends take a row lock on the chain head (PostgreSQL) or run inside SQLite's single write lock, in
the same transaction as the change they describe, so an audited write and its record commit together.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.orm import Session

from tianfu.core.audit.models import GENESIS_HASH, AuditChainHead, AuditPatientLink, AuditRecord
from tianfu.core.db import utcnow

# FHIR AuditEvent.outcome codes.
OUTCOME_SUCCESS = 0
OUTCOME_MINOR_FAILURE = 4  # e.g. access denied, bad password
OUTCOME_SERIOUS_FAILURE = 8
OUTCOME_MAJOR_FAILURE = 12


@dataclass(frozen=True)
class Actor:
    """Who did it. ``user_id`` is None for the system itself and for unknown users at login."""

    user_id: str | None
    username: str
    role: str
    client_ip: str = ""


SYSTEM_ACTOR = Actor(user_id=None, username="system", role="system")


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_payload(record: AuditRecord) -> bytes:
    body = {
        "seq": record.seq,
        "recorded_at": _iso(record.recorded_at),
        "actor_user_id": record.actor_user_id,
        "actor_username": record.actor_username,
        "actor_role": record.actor_role,
        "client_ip": record.client_ip,
        "action": record.action,
        "action_type": record.action_type,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
        "patient_ids": list(record.patient_ids),
        "purpose": record.purpose,
        "outcome": record.outcome,
        "outcome_desc": record.outcome_desc,
        "detail": record.detail,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(key: bytes, prev_hash: str, record: AuditRecord) -> str:
    return hmac.new(key, prev_hash.encode() + canonical_payload(record), hashlib.sha256).hexdigest()


def head_mac(key: bytes, last_seq: int, last_hash: str) -> str:
    return hmac.new(key, f"head:{last_seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()


def checkpoint_mac(key: bytes, seq: int, record_hash: str) -> str:
    return hmac.new(key, f"checkpoint:{seq}:{record_hash}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One record for :meth:`AuditLog.record_many`: the arguments of :meth:`AuditLog.record`."""

    actor: Actor
    action: str
    action_type: str
    resource_type: str = ""
    resource_id: str = ""
    patient_ids: Sequence[str] = ()
    purpose: str = ""
    outcome: int = OUTCOME_SUCCESS
    outcome_desc: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


_RECORD_COLUMNS = tuple(c.key for c in AuditRecord.__table__.columns if c.key != "hash")


def _check(entry: AuditEntry) -> None:
    if entry.action_type not in {"C", "R", "U", "D", "E"}:
        raise ValueError(f"action_type must be one of C R U D E, not {entry.action_type!r}")


def _new_record(entry: AuditEntry, seq: int, prev_hash: str) -> AuditRecord:
    """The record of ``entry`` at ``seq`` after ``prev_hash``, not yet hashed."""
    return AuditRecord(
        seq=seq,
        recorded_at=utcnow(),
        actor_user_id=entry.actor.user_id,
        actor_username=entry.actor.username,
        actor_role=entry.actor.role,
        client_ip=entry.actor.client_ip[:64],
        action=entry.action,
        action_type=entry.action_type,
        resource_type=entry.resource_type,
        resource_id=entry.resource_id[:128],
        patient_ids=list(dict.fromkeys(p for p in entry.patient_ids if p)),
        purpose=entry.purpose,
        outcome=entry.outcome,
        outcome_desc=entry.outcome_desc,
        detail=entry.detail,
        prev_hash=prev_hash,
    )


def _columns(record: AuditRecord) -> dict[str, Any]:
    return {key: getattr(record, key) for key in _RECORD_COLUMNS}


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    last_seq: int
    problems: list[str] = field(default_factory=list)


class AuditLog:
    """The kernel's audit service; one instance per process, holding the chain key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def record(
        self,
        session: Session,
        *,
        actor: Actor,
        action: str,
        action_type: str,
        outcome: int = OUTCOME_SUCCESS,
        outcome_desc: str = "",
        resource_type: str = "",
        resource_id: str = "",
        patient_ids: Iterable[str] = (),
        purpose: str = "",
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record in the caller's transaction (the caller commits)."""
        entry = AuditEntry(
            actor=actor,
            action=action,
            action_type=action_type,
            resource_type=resource_type,
            resource_id=resource_id,
            patient_ids=tuple(patient_ids),
            purpose=purpose,
            outcome=outcome,
            outcome_desc=outcome_desc,
            detail=detail or {},
        )
        _check(entry)
        head = session.execute(
            select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
        ).scalar_one()
        record = _new_record(entry, head.last_seq + 1, head.last_hash)
        record.hash = chain_hash(self._key, head.last_hash, record)
        session.add(record)
        session.flush()  # the record first: with no relationship() the unit of work would not order links
        session.add_all(AuditPatientLink(patient_id=p, seq=record.seq) for p in record.patient_ids)
        head.last_seq = record.seq
        head.last_hash = record.hash
        head.mac = head_mac(self._key, record.seq, record.hash)
        session.flush()
        return record

    def record_many(self, session: Session, entries: Sequence[AuditEntry]) -> list[int]:
        """Append one record per entry, in order, in the caller's transaction; their sequence numbers.

        The same records as :meth:`record` one by one, written with one executemany per table: a system
        job that writes thousands of rows at once (the hourly sepsis scores of every monitored bed) would
        otherwise spend most of its time in per-record round trips.
        """
        if not entries:
            return []
        head = session.execute(
            select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
        ).scalar_one()
        records: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        seq, last_hash = head.last_seq, head.last_hash
        for entry in entries:
            _check(entry)
            seq += 1
            record = _new_record(entry, seq, last_hash)
            last_hash = chain_hash(self._key, last_hash, record)
            records.append({**_columns(record), "hash": last_hash})
            links.extend({"patient_id": p, "seq": seq} for p in record.patient_ids)
        session.execute(insert(AuditRecord), records)
        if links:
            session.execute(insert(AuditPatientLink), links)
        head.last_seq, head.last_hash = seq, last_hash
        head.mac = head_mac(self._key, seq, last_hash)
        session.flush()
        return [r["seq"] for r in records]

    def checkpoint(self, session: Session) -> dict[str, Any]:
        """The newest record's sequence number and hash, authenticated, for storage outside the database."""
        head = _current_head(session)
        if head is None or head.last_seq == 0:
            raise ValueError("the audit chain is empty")
        return {
            "seq": head.last_seq,
            "hash": head.last_hash,
            "taken_at": _iso(utcnow()),
            "mac": checkpoint_mac(self._key, head.last_seq, head.last_hash),
        }

    def check_checkpoints(self, session: Session, checkpoints: Iterable[dict[str, Any]]) -> list[str]:
        """Problems found comparing the chain with earlier exported checkpoints (empty: consistent)."""
        problems = []
        for point in checkpoints:
            seq, expected = int(point["seq"]), str(point["hash"])
            if not hmac.compare_digest(str(point.get("mac", "")), checkpoint_mac(self._key, seq, expected)):
                problems.append(f"checkpoint for record {seq} is not authentic")
                continue
            record_hash = session.scalar(select(AuditRecord.hash).where(AuditRecord.seq == seq))
            if record_hash is None:
                problems.append(f"record {seq}, present at checkpoint {point.get('taken_at')}, is gone")
            elif record_hash != expected:
                problems.append(f"record {seq} differs from checkpoint {point.get('taken_at')}")
        return problems

    def verify(self, session: Session, *, batch: int = 2000) -> VerifyResult:
        head = _current_head(session)
        if head is None:
            return VerifyResult(ok=False, checked=0, last_seq=0, problems=["the chain head row is missing"])
        problems: list[str] = []
        expected_seq = 1
        prev_hash = GENESIS_HASH
        checked = 0
        for records in _record_batches(session, batch):
            links = _links_by_seq(session, records[0].seq, records[-1].seq)
            for record in records:
                checked += 1
                if record.seq != expected_seq:
                    problems.append(f"records {expected_seq}..{record.seq - 1} are missing")
                if record.prev_hash != prev_hash:
                    problems.append(f"record {record.seq}: link to the previous record is broken")
                if not hmac.compare_digest(record.hash, chain_hash(self._key, record.prev_hash, record)):
                    problems.append(f"record {record.seq}: content does not match its hash (edited)")
                if sorted(links.get(record.seq, [])) != sorted(record.patient_ids):
                    problems.append(f"record {record.seq}: patient index does not match the record")
                expected_seq = record.seq + 1
                prev_hash = record.hash
            if len(problems) > 100:
                problems.append("stopped after 100 problems")
                break
        last_seq = expected_seq - 1
        if head.last_seq != last_seq or head.last_hash != prev_hash:
            problems.append(
                f"chain head says record {head.last_seq} is the newest, found {last_seq}: "
                "newest records were deleted or the head was edited"
            )
        if head.last_seq > 0 and not hmac.compare_digest(
            head.mac, head_mac(self._key, head.last_seq, head.last_hash)
        ):
            problems.append(
                "chain head is not authentic: it was edited (newest records may have been removed)"
            )
        return VerifyResult(ok=not problems, checked=checked, last_seq=last_seq, problems=problems)


def _current_head(session: Session) -> AuditChainHead | None:
    return session.scalars(
        select(AuditChainHead).where(AuditChainHead.id == 1).execution_options(populate_existing=True)
    ).one_or_none()


def _record_batches(session: Session, batch: int) -> Iterator[Sequence[AuditRecord]]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditRecord).where(AuditRecord.seq > last).order_by(AuditRecord.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].seq
        session.expunge_all()


def _links_by_seq(session: Session, first: int, last: int) -> dict[int, list[str]]:
    links: dict[int, list[str]] = {}
    rows = session.execute(
        select(AuditPatientLink.seq, AuditPatientLink.patient_id).where(
            AuditPatientLink.seq.between(first, last)
        )
    )
    for seq, patient_id in rows:
        links.setdefault(seq, []).append(patient_id)
    return links


def search(
    *,
    patient_id: str | None = None,
    actor_username: str | None = None,
    action_prefix: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    outcome_failed: bool | None = None,
    purpose: str | None = None,
) -> Select[AuditRecord]:
    query = select(AuditRecord)
    if patient_id:
        query = query.join(AuditPatientLink, AuditPatientLink.seq == AuditRecord.seq).where(
            AuditPatientLink.patient_id == patient_id
        )
    if actor_username:
        query = query.where(AuditRecord.actor_username == actor_username)
    if action_prefix:
        query = query.where(AuditRecord.action.startswith(action_prefix))
    if since:
        query = query.where(AuditRecord.recorded_at >= since)
    if until:
        query = query.where(AuditRecord.recorded_at < until)
    if outcome_failed is True:
        query = query.where(AuditRecord.outcome != OUTCOME_SUCCESS)
    elif outcome_failed is False:
        query = query.where(AuditRecord.outcome == OUTCOME_SUCCESS)
    if purpose:
        query = query.where(AuditRecord.purpose == purpose)
    return query.order_by(AuditRecord.seq.desc())


def count(session: Session, query: Select[AuditRecord]) -> int:
    return session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0


def hourly_activity(session: Session, since: datetime) -> Sequence[tuple[datetime, int, int]]:
    """(hour, total, failures) since a time, for the auditor's activity chart."""
    rows = session.execute(
        select(AuditRecord.recorded_at, AuditRecord.outcome).where(AuditRecord.recorded_at >= since)
    ).all()
    buckets: dict[datetime, list[int]] = {}
    for ts, outcome in rows:
        hour = ts.replace(minute=0, second=0, microsecond=0)
        bucket = buckets.setdefault(hour, [0, 0])
        bucket[0] += 1
        bucket[1] += outcome != OUTCOME_SUCCESS
    return [(hour, total, failed) for hour, (total, failed) in sorted(buckets.items())]
