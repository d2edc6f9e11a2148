"""The audit trail is append-only and tamper-evident."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from tianfu.core.audit.models import AuditChainHead, AuditPatientLink, AuditRecord
from tianfu.core.audit.service import (
    Actor,
    AuditEntry,
    AuditLog,
    canonical_payload,
    chain_hash,
    head_mac,
)
from tianfu.core.kernel import Kernel

ACTOR = Actor(user_id="u1", username="nurse.wang", role="nurse", client_ip="10.0.0.7")


def _append(kernel: Kernel, n: int, patient: str = "p-1") -> None:
    with kernel.sessions() as session:
        for i in range(n):
            kernel.audit.record(
                session,
                actor=ACTOR,
                action="patient.read",
                action_type="R",
                resource_type="Patient",
                resource_id=patient,
                patient_ids=[patient],
                purpose="TREAT",
                detail={"i": i},
            )
        session.commit()


def _disable_guards(session: Session) -> None:
    """What an attacker with database access would do first: switch the append-only triggers off."""
    if session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        session.execute(text("SET session_replication_role = replica"))
    else:
        for name in (
            "audit_record_no_update",
            "audit_record_no_delete",
            "audit_patient_link_no_update",
            "audit_patient_link_no_delete",
        ):
            session.execute(text(f"DROP TRIGGER IF EXISTS {name}"))


def test_demo_database_chain_is_intact(kernel: Kernel, db: Session) -> None:
    result = kernel.audit.verify(db)
    assert result.ok, result.problems
    assert result.checked > 10  # the demo seed created accounts, each audited


def test_records_chain_to_each_other(kernel: Kernel, db: Session) -> None:
    _append(kernel, 3)
    rows = db.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(3)).all()
    newest, middle, oldest = rows
    assert newest.prev_hash == middle.hash
    assert middle.prev_hash == oldest.hash
    assert newest.seq == middle.seq + 1
    head = db.get(AuditChainHead, 1)
    assert head is not None
    assert head.last_seq == newest.seq
    assert head.last_hash == newest.hash
    assert (
        db.scalar(
            select(func.count()).select_from(AuditPatientLink).where(AuditPatientLink.seq == newest.seq)
        )
        == 1
    )


def test_records_appended_together_chain_like_records_appended_one_by_one(
    kernel: Kernel, db: Session
) -> None:
    _append(kernel, 1)
    entries = [
        AuditEntry(
            actor=ACTOR,
            action="ai_output.create",
            action_type="C",
            resource_type="ModelOutput",
            resource_id=f"out-{i}",
            patient_ids=[f"p-{i}", f"p-{i}", ""],  # repeated and empty ids are dropped, as by record()
            purpose="TREAT",
            detail={"i": i},
        )
        for i in range(3)
    ]
    seqs = kernel.audit.record_many(db, entries)
    db.commit()
    _append(kernel, 1)  # and the chain goes on after them
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    rows = db.scalars(select(AuditRecord).where(AuditRecord.seq.in_(seqs)).order_by(AuditRecord.seq)).all()
    assert [r.resource_id for r in rows] == ["out-0", "out-1", "out-2"]
    assert rows[1].patient_ids == ["p-1"]
    assert rows[2].detail == {"i": 2}
    assert db.scalars(select(AuditPatientLink.patient_id).where(AuditPatientLink.seq == seqs[2])).all() == [
        "p-2"
    ]
    result = kernel.audit.verify(db)
    assert result.ok, result.problems
    assert kernel.audit.record_many(db, []) == []
    with pytest.raises(ValueError, match="action_type"):
        kernel.audit.record_many(db, [AuditEntry(actor=ACTOR, action="x", action_type="Z")])


def test_database_refuses_update_and_delete(kernel: Kernel, db: Session) -> None:
    seq = db.scalar(select(func.max(AuditRecord.seq)))
    with pytest.raises(DatabaseError, match="append-only"):
        db.execute(update(AuditRecord).where(AuditRecord.seq == seq).values(actor_username="someone-else"))
    db.rollback()
    with pytest.raises(DatabaseError, match="append-only"):
        db.execute(delete(AuditRecord).where(AuditRecord.seq == seq))
    db.rollback()


def test_editing_a_record_is_detected(kernel: Kernel, db: Session) -> None:
    _append(kernel, 5)
    _disable_guards(db)
    target = db.scalar(select(func.max(AuditRecord.seq))) - 2
    db.execute(update(AuditRecord).where(AuditRecord.seq == target).values(actor_username="innocent"))
    db.commit()
    result = kernel.audit.verify(db)
    assert not result.ok
    assert any(f"record {target}: content does not match" in p for p in result.problems)


def test_deleting_a_middle_record_is_detected(kernel: Kernel, db: Session) -> None:
    _append(kernel, 5)
    _disable_guards(db)
    target = db.scalar(select(func.max(AuditRecord.seq))) - 2
    db.execute(delete(AuditPatientLink).where(AuditPatientLink.seq == target))
    db.execute(delete(AuditRecord).where(AuditRecord.seq == target))
    db.commit()
    result = kernel.audit.verify(db)
    assert not result.ok
    assert any("missing" in p for p in result.problems)
    assert any(f"record {target + 1}: link to the previous record is broken" in p for p in result.problems)


def test_deleting_the_newest_records_is_detected(kernel: Kernel, db: Session) -> None:
    _append(kernel, 3)
    _disable_guards(db)
    newest = db.scalar(select(func.max(AuditRecord.seq)))
    db.execute(delete(AuditPatientLink).where(AuditPatientLink.seq == newest))
    db.execute(delete(AuditRecord).where(AuditRecord.seq == newest))
    db.commit()
    result = kernel.audit.verify(db)
    assert not result.ok
    assert any("newest records were deleted" in p for p in result.problems)


def test_rewriting_the_chain_without_the_key_is_detected(kernel: Kernel, db: Session) -> None:
    """An attacker who edits a record and recomputes hashes with a guessed key still fails verification."""
    _append(kernel, 2)
    _disable_guards(db)
    forger = AuditLog(b"guessed-key")
    records = db.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
    prev = "0" * 64
    for record in records:
        record.prev_hash = prev
        record.hash = chain_hash(b"guessed-key", prev, record)
        prev = record.hash
    head = db.get(AuditChainHead, 1)
    assert head is not None
    head.last_hash = prev
    head.mac = head_mac(b"guessed-key", head.last_seq, prev)
    db.commit()
    assert forger.verify(db).ok  # consistent under the forger's key ...
    assert not kernel.audit.verify(db).ok  # ... but not under the platform's key


def test_hiding_an_access_from_the_patient_index_is_detected(kernel: Kernel, db: Session) -> None:
    _append(kernel, 1, patient="p-hidden")
    _disable_guards(db)
    db.execute(delete(AuditPatientLink).where(AuditPatientLink.patient_id == "p-hidden"))
    db.commit()
    result = kernel.audit.verify(db)
    assert any("patient index does not match" in p for p in result.problems)


def test_canonical_payload_is_stable_and_covers_every_field(kernel: Kernel, db: Session) -> None:
    _append(kernel, 1)
    record = db.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).one()
    payload = canonical_payload(record)
    assert payload == canonical_payload(record)
    for field in ("nurse.wang", "10.0.0.7", "patient.read", "TREAT", '"i":0'):
        assert field.encode() in payload


def test_invalid_action_type_is_refused(kernel: Kernel, db: Session) -> None:
    with pytest.raises(ValueError, match="action_type"):
        kernel.audit.record(db, actor=ACTOR, action="x.y", action_type="Z")


def test_deleting_the_newest_records_and_moving_the_head_back_is_detected(
    kernel: Kernel, db: Session
) -> None:
    _append(kernel, 3)
    _disable_guards(db)
    newest = db.scalar(select(func.max(AuditRecord.seq)))
    survivor = db.get(AuditRecord, newest - 1)
    assert survivor is not None
    db.execute(delete(AuditPatientLink).where(AuditPatientLink.seq == newest))
    db.execute(delete(AuditRecord).where(AuditRecord.seq == newest))
    head = db.get(AuditChainHead, 1)
    assert head is not None
    head.last_seq, head.last_hash = survivor.seq, survivor.hash  # consistent, but without a valid MAC
    db.commit()
    result = kernel.audit.verify(db)
    assert result.problems == [
        "chain head is not authentic: it was edited (newest records may have been removed)"
    ]


def test_checkpoints_reveal_a_rollback_to_an_earlier_copy(kernel: Kernel, db: Session) -> None:
    """Restoring an older copy of records and head is consistent in itself; an exported checkpoint is not."""
    old_head = db.get(AuditChainHead, 1)
    assert old_head is not None
    saved = (old_head.last_seq, old_head.last_hash, old_head.mac)
    db.commit()
    _append(kernel, 2)
    checkpoint = kernel.audit.checkpoint(db)
    db.commit()
    assert kernel.audit.check_checkpoints(db, [checkpoint]) == []
    _disable_guards(db)
    db.execute(delete(AuditPatientLink).where(AuditPatientLink.seq > saved[0]))
    db.execute(delete(AuditRecord).where(AuditRecord.seq > saved[0]))
    head = db.get(AuditChainHead, 1)
    assert head is not None
    head.last_seq, head.last_hash, head.mac = saved
    db.commit()
    assert kernel.audit.verify(db).ok  # the rolled-back copy is self-consistent ...
    problems = kernel.audit.check_checkpoints(db, [checkpoint])
    assert problems == [
        f"record {checkpoint['seq']}, present at checkpoint {checkpoint['taken_at']}, is gone"
    ]
    forged = checkpoint | {"hash": "f" * 64}
    assert kernel.audit.check_checkpoints(db, [forged]) == [
        f"checkpoint for record {checkpoint['seq']} is not authentic"
    ]
