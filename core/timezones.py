"""Wall-clock times in IANA zones, resolved deterministically across DST changes.

Rule: a local time that does not exist (spring-forward gap) is moved forward by the length of the
gap (02:30 on a New York spring-forward day is sent at 03:30 EDT); a local time that happens twice
(fall-back) is sent at its first occurrence. Both follow from reading the wall-clock time with
``fold=0`` (PEP 495), which zoneinfo implements with the offset in force before the transition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["local_to_instant", "wall_clock", "zone"]


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The zone called ``name`` (cached: zoneinfo reads tzdata once per zone)."""
    return ZoneInfo(name)


def local_to_instant(local: datetime, zone_name: str) -> datetime:
    """The UTC instant at which the naive wall-clock time ``local`` occurs in ``zone_name``."""
    if local.tzinfo is not None:
        raise ValueError("local time must be naive")
    return local.replace(tzinfo=zone(zone_name), fold=0).astimezone(UTC)


def wall_clock(instant: datetime, zone_name: str) -> datetime:
    """The naive wall-clock time shown in ``zone_name`` at ``instant``."""
    return instant.astimezone(zone(zone_name)).replace(tzinfo=None)
