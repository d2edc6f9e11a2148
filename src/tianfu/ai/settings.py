"""Thresholds of field-performance alerts, from TIANFU_AI_* variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIANFU_AI_", env_file=".env", extra="ignore")

    agreement_alert_below: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Alert when clinicians agree with fewer than this share of reviewed outputs.",
    )
    drift_alert_psi: float = Field(
        0.25, gt=0, description="Alert when an input's population stability index exceeds this."
    )
    alert_min_reviewed: int = Field(20, ge=1, description="Reviews needed before agreement can alert.")
    field_window_days: int = Field(30, ge=1, le=365, description="The window field performance looks at.")
    check_interval_s: int = Field(600, ge=10, description="How often the server checks every model.")
    validation_bootstrap: int = Field(1000, ge=100, le=10_000, description="Bootstrap resamples for CIs.")


@lru_cache
def get_ai_settings() -> AiSettings:
    return AiSettings()
