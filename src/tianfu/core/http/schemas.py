"""Shared API schema pieces."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator

T = TypeVar("T")

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date_text(value: Any) -> Any:
    # Pydantic's lax mode reads numbers as Unix timestamps ("0" becomes 1970-01-01); a birth date is text.
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value


def _iso_datetime_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value[:10]):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-11-27T08:00:00+08:00")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("the date-time needs a time zone, e.g. +08:00 or Z")
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the date-time is out of range") from exc
    return value


IsoDate = Annotated[
    date, BeforeValidator(_iso_date_text), WithJsonSchema({"type": "string", "format": "date"})
]
IsoDateTime = Annotated[
    datetime,
    BeforeValidator(_iso_datetime_text),
    AfterValidator(_aware),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RequestModel(BaseModel):
    """Request bodies refuse unknown fields: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="after")
    def _no_control_characters(self) -> RequestModel:
        for value in self.__dict__.values():
            if _has_nul(value):
                raise ValueError("text must not contain NUL characters")
        return self


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
