"""Clock ticks: time as a record on the log, so a replay reaches the same decisions."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime

from schemas.base import Record

__all__ = ["Tick"]


class Tick(Record):
    """The service clock read ``at``; ``tick_id`` becomes the causation id of what it releases."""

    type: Literal["Tick"] = "Tick"
    schema_version: Literal[1] = 1
    tick_id: UUID
    at: AwareDatetime
