"""Monitoring's settings (``TIANFU_*`` environment variables, like the kernel's)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MonitoringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIANFU_", env_file=".env", extra="ignore")

    hl7_host: str = Field(
        "127.0.0.1", description="Address of the HL7 MLLP listener (0.0.0.0 for the ward network)."
    )
    hl7_port: int = Field(2575, ge=0, le=65535, description="Port of the HL7 MLLP listener; 0 turns it off.")
    hl7_processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Read, parse and acknowledge HL7 messages in this many child processes of `tianfu serve` "
        "(in-process bus only; 0: in the server's own process). One lets a 2-core server take about 5,000 "
        "monitors at 1 Hz.",
    )
    mqtt_url: str = Field("", description="mqtt://host:1883 to take wearables' data; empty turns MQTT off.")
    sample_interval_s: int = Field(
        60, ge=0, description="Store at most one vital-sign row per bed this often (0: every report)."
    )
    minute_retention_days: int = Field(
        7, ge=1, description="Keep per-minute rows this long; hourly means stay."
    )
    hourly_retention_days: int = Field(400, ge=1, description="Keep hourly means this long.")
    partitions: int = Field(
        8, ge=1, le=256, description="Bus partitions of the vital-sign stream (by device)."
    )
    pipeline: Literal["serve", "worker"] = Field(
        "serve",
        description="serve: tianfu serve scores and alarms; worker: `tianfu monitor worker` processes do.",
    )
    demo_feed: bool = Field(
        True, description="In demo mode, play the demo ward's recordings into the listener."
    )


@lru_cache
def get_monitoring_settings() -> MonitoringSettings:
    return MonitoringSettings()
