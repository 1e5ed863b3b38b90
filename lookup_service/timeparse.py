"""The connector does not document its time format: accept every reasonable one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

_NUMERIC = re.compile(r"^\d+(\.\d+)?$")
# Seconds since 1970 pass 1e11 only in the year 5138; anything bigger is milliseconds.
_MILLISECONDS_FROM = 1e11


class InvalidTime(ValueError):
    pass


def parse_time(value: Any, naive_zone: str = "UTC") -> datetime | None:
    """ISO 8601 with or without a zone, Unix seconds or milliseconds, or empty -> aware UTC time.

    A time without a zone is read in ``naive_zone``. Raises :class:`InvalidTime`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InvalidTime("expected a date/time, got a boolean")
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if not isinstance(value, str):
        raise InvalidTime("expected an ISO 8601 date/time or a Unix timestamp")
    text = value.strip()
    if _NUMERIC.match(text):
        return _from_epoch(float(text))
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidTime(
            f"{value!r} is not a date/time; use ISO 8601 (2026-11-21T08:30:00+01:00) or Unix seconds or milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(naive_zone))
    return moment.astimezone(UTC)


def _from_epoch(number: float) -> datetime:
    if number >= _MILLISECONDS_FROM:
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidTime(f"{number!r} is out of range for a Unix timestamp") from None
