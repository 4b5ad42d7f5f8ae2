"""Times given as text at the edges: a send instant (with its UTC offset) and a wall-clock time
(without one), each of a real day in the years 2000 to 2999. The JSON Schema states each as a
pattern and the same pattern is checked on the way in, so the document and the API agree on every
string; numbers (which pydantic would read as Unix times) are refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, NaiveDatetime, WithJsonSchema

__all__ = ["INSTANT_PATTERN", "LOCAL_TIME_PATTERN", "LocalDateTime", "SendInstant"]

#: A wall-clock time without offset (ISO 8601 `2026-12-24T09:00:00`, seconds optional), of a day
#: that exists (30 days in April, 29 February only in a leap year), in the years 2000 to 2999.
#: The JSON Schema states it as a pattern (`format: date-time` would allow the offset this field
#: refuses), and the same pattern is checked on the way in, so the document and the API agree on
#: every string.
_LEAP = "2[0-9](?:0[48]|[2468][048]|[13579][26])|2[048]00"
_DAY = (
    "2[0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|(?:{_LEAP})-02-29"
)
LOCAL_TIME_PATTERN = (
    f"^(?:{_DAY})T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{{1,6}})?)?$"
)
_LOCAL_TIME = re.compile(LOCAL_TIME_PATTERN)
#: An instant with its UTC offset (RFC 3339, `Z` or `+01:00`), of a real day in 2000 to 2999:
#: stated as a pattern rather than `format: date-time` (which allows year 1 or 9999, whose
#: conversion to another zone overflows), and checked on the way in like the local time.
INSTANT_PATTERN = (
    f"^(?:{_DAY})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{{1,6}})?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_INSTANT = re.compile(INSTANT_PATTERN)


def _time_text(pattern: re.Pattern[str], refusal: str) -> Callable[[Any], Any]:
    """A validator of a time given as text: it must match ``pattern``; a datetime (built in
    Python) is checked by the type alone. Numbers (which pydantic would read as Unix times) are
    refused."""

    def check(value: Any) -> Any:
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str) or pattern.match(value) is None:
            raise ValueError(refusal)
        return value

    return check


_local_time_text = _time_text(
    _LOCAL_TIME,
    "a wall-clock time without UTC offset of a real day in 2000 to 2999, e.g. 2026-12-24T09:00:00",
)
_instant_text = _time_text(
    _INSTANT,
    "an instant with its UTC offset of a real day in 2000 to 2999, e.g. 2026-12-24T09:00:00+01:00",
)


#: A send instant: AwareDatetime, given as text of the pattern above.
SendInstant = Annotated[
    AwareDatetime,
    BeforeValidator(_instant_text),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": INSTANT_PATTERN,
            "description": "an instant with its UTC offset, e.g. 2026-12-24T09:00:00+01:00 or "
            "2026-12-24T08:00:00Z (a real day, years 2000 to 2999)",
        }
    ),
]

LocalDateTime = Annotated[
    NaiveDatetime,
    BeforeValidator(_local_time_text),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": LOCAL_TIME_PATTERN,
            "description": "a wall-clock time without UTC offset, e.g. 2026-12-24T09:00:00 "
            "(a real day, years 2000 to 2999)",
        }
    ),
]
