"""What the shell knows and the core must not fetch: the time, the actor, the account's zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from schemas import Actor, is_valid_time_zone

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The facts a command is decided with.

    ``now`` is the shell's clock reading (timezone-aware), used for "send now", for "not in the
    past" and as every decided event's ``occurred_at``. ``default_time_zone`` is the account's
    zone, used for contacts without one. ``correlation_id`` defaults to the command id.
    """

    now: datetime
    actor: Actor
    default_time_zone: str = "UTC"
    correlation_id: UUID | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("Context.now must be timezone-aware")
        if not is_valid_time_zone(self.default_time_zone):
            raise ValueError(f"unknown IANA time zone {self.default_time_zone!r}")
