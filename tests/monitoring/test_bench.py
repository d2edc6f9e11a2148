"""`tianfu bench monitoring` end to end, tiny: the harness must keep measuring what it says it measures."""

from __future__ import annotations

import gc

import pytest

from tianfu.monitoring import bench
from tianfu.monitoring.settings import get_monitoring_settings

BENCH_ENV = ("TIANFU_DEMO", "TIANFU_DATABASE_URL", "TIANFU_VAR_DIR", "TIANFU_HL7_PORT", "TIANFU_HL7_HOST")


def test_bench_drives_monitors_through_to_a_central_station_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*BENCH_ENV, "TIANFU_DEMO_FEED"):
        # The run sets them. setenv first so that monkeypatch records each one and removes it afterwards
        # (delenv of an unset name records nothing, and TIANFU_DEMO=1 leaked into later tests).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    # The server runs in this process: late in a full run its heap is large, and a full garbage
    # collection would pause it for seconds. Frozen objects are not scanned.
    gc.collect()
    gc.freeze()
    try:
        result = bench.run(beds=12, rate=2.0, seconds=3, warmup=1, top_of_hour_at=1.0)
    finally:
        gc.unfreeze()
        get_monitoring_settings.cache_clear()
    assert result["reports_refused"] == 0
    # Every monitor's reports got through in the window (how many is the benchmark's business: a loaded
    # CI machine once let through only one each).
    assert result["reports_acked"] >= 12
    assert result["update_latency_ms"]["n"] > 0  # the station client saw beds change
    assert result["alarm_latency_ms"]["n"] > 0  # a third of the beds raise a blood-pressure alarm
    assert 0 < result["update_latency_ms"]["p50"] <= result["update_latency_ms"]["p99"]
    assert len(result["update_latency_ms"]["p99_by_minute"]) == 1  # three seconds: one partial minute
    assert result["server_cpu_cores"] > 0
    assert result["hours_closed_at_top_of_hour"] == 12  # every bed's hour, scored while the reports went on
    assert result["parser"]["tianfu_reader_msgs_per_s"] > 0


def test_p99_by_minute_places_a_stall_in_its_minute() -> None:
    latencies = [0.1] * 300 + [5.0] * 3 + [0.1] * 300
    sent = [i * 0.2 for i in range(603)]  # a send every 0.2 s; the stall at 60.0-60.4 s
    assert bench._p99_by_minute(latencies, sent) == [100.0, 5000.0, 100.0]
