"""DICOM for imaging: pixel rendering (:mod:`.pixels`), the instance store and its index (:mod:`.store`),
and the C-ECHO/C-STORE listener (:mod:`.scp`). DICOMweb lives in :mod:`tianfu.imaging.dicomweb`.

This package module holds only the settings, so that importing it stays cheap (no pydicom).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# PS3.5 6.2: an AE title is at most 16 characters of the default repertoire, without backslash.
AE_TITLE_PATTERN = r"^[\x20-\x5b\x5d-\x7e]{1,16}$"


class DicomSettings(BaseSettings):
    """``TIANFU_DICOM_*`` environment variables, like the kernel's settings."""

    model_config = SettingsConfigDict(env_prefix="TIANFU_", env_file=".env", extra="ignore")

    dicom_host: str = Field(
        "127.0.0.1", description="Address of the C-STORE listener (0.0.0.0 for the modality network)."
    )
    dicom_port: int = Field(
        11112, ge=0, le=65535, description="Port of the C-STORE listener; 0 turns it off."
    )
    dicom_ae_title: str = Field("TIANFU", pattern=AE_TITLE_PATTERN, description="Tianfu's own AE title.")
    dicom_calling_aes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated AE titles allowed to send; empty accepts any calling AE.",
    )
    dicom_organization: str = Field(
        "",
        description="Code of the institution that receives C-STORE (patients are matched by MRN there); "
        "may stay empty when only one institution exists.",
    )
    dicom_dir: Path | None = Field(None, description="Where DICOM files are kept (default: <var_dir>/dicom).")
    stow_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest STOW-RS request body the route itself accepts."
    )

    @field_validator("dicom_calling_aes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache
def get_dicom_settings() -> DicomSettings:
    return DicomSettings()
