"""What the shell knows and the core must not fetch: the time, the actor, the account's zone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from schemas import Actor, Contact, is_valid_time_zone

__all__ = ["Context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The facts a command is decided with.

    ``now`` is the shell's clock reading (timezone-aware), used for "send now", for "not in the
    past" and as every decided event's ``occurred_at``. ``default_time_zone`` is the account's
    zone, used for contacts without one. ``correlation_id`` defaults to the command id.

    ``audience``: for a ``CopyMessage`` only, the contacts of the original's audience (every
    contact not removed, in the order of ``book.audience_ids()``, with its data as last added).
    The book keeps no contact data (core/book.py), so the shell reads it back from its store
    (core/contacts.py) and hands it in, the way it hands in the time.
    """

    now: datetime
    actor: Actor
    default_time_zone: str = "UTC"
    correlation_id: UUID | None = None
    audience: Sequence[Contact] | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("Context.now must be timezone-aware")
        if not is_valid_time_zone(self.default_time_zone):
            raise ValueError(f"unknown IANA time zone {self.default_time_zone!r}")
