"""`tianfu bench consult` end to end, tiny: a few users and requests, no timing asserted."""

from __future__ import annotations

import os
import random
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from tianfu.consult import bench
from tianfu.consult.tables import Consultation, ConsultMessage, OpinionVersion
from tianfu.core.db import utcnow
from tianfu.core.plugins import case_packet


def test_network_has_every_state_and_case_data(tmp_path: Path) -> None:
    from tianfu.core.db import make_engine, make_session_factory

    url = f"sqlite:///{tmp_path / 'net.db'}"
    users = bench.build_network(
        url,
        tmp_path,
        physicians=2,
        consultants=2,
        consultations=12,
        secret_key="test-secret-key-long-enough-0123456789abcdef",
        rng=random.Random(1),
    )
    assert {u.role for u in users} == {"physician", "consultant"}
    assert all(u.consultations for u in users)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            statuses = set(session.scalars(select(Consultation.status)))
            assert {"requested", "received", "accepted", "in-progress", "completed"} <= statuses
            assert session.scalar(select(func.count()).select_from(ConsultMessage)) >= 6 * 5 // 3
            assert session.scalar(select(func.count()).select_from(OpinionVersion)) == 2
            # The case packet has something from every module that contributes to it.
            patient_id = session.scalars(select(Consultation.patient_id)).first()
            assert patient_id is not None
            since = utcnow() - timedelta(hours=24)
            assert {s.module for s in case_packet(session, patient_id, since)} == {
                "monitoring",
                "triage",
                "imaging",
            }
    finally:
        engine.dispose()


def test_a_tiny_run_measures_every_endpoint_without_errors() -> None:
    # On PostgreSQL when the suite runs there: the bench creates (and drops) a database of its own.
    url = os.environ.get("TIANFU_TEST_DATABASE_URL", "")
    postgres = url if url.startswith("postgresql") else None
    result = bench.run(
        users=4, consultations=12, seconds=2.0, warmup=0.5, think=0.05, max_inflight=2, postgres=postgres
    )
    assert result["database"] == ("PostgreSQL" if postgres else "SQLite")
    assert result["errors"] == 0, result["error_kinds"]
    assert result["requests"] > 0
    assert set(result["endpoints"]) == set(bench.ENDPOINTS)
    measured = [e for e in result["endpoints"].values() if e["n"]]
    assert measured
    assert all(e["p50_ms"] <= e["p95_ms"] <= e["p99_ms"] for e in measured)
