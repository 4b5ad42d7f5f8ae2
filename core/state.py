"""The state of one message: a small frozen lifecycle record plus its recipient book.

States are built only by folding events (:func:`core.evolve`). The lifecycle part is immutable;
the recipient book is shared and updated in place by the fold (see :mod:`core.book` for the
ownership rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from core.book import RecipientBook
from core.timezones import local_to_instant
from schemas import Actor, Content, DeliveryPlan

__all__ = [
    "ACTIVE_STATUSES",
    "ALLOWED_COMMANDS",
    "TESTABLE_STATUSES",
    "MessageState",
    "MessageStatus",
    "Pause",
    "Schedule",
]


class MessageStatus(StrEnum):
    """Where a message is in its life (the spec's status diagram)."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELED = "canceled"
    DISCARDED = "discarded"


#: The active statuses: scheduled and not yet over. A tick can change a message only in these
#: (start, release, skip, finish), a cancel is allowed only in these, and only these have a next
#: batch. The one definition; the dispatcher and the views use it.
ACTIVE_STATUSES = frozenset({MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.PAUSED})

#: The statuses in which a message can be sent as a test (SendTestMessage): a draft or a
#: scheduled message, not one that has started. The core's rule; the web UI offers the test
#: send in these only.
TESTABLE_STATUSES = frozenset({MessageStatus.DRAFT, MessageStatus.SCHEDULED})

_AUDIENCE = ("AddRecipients", "RemoveRecipients")

#: The commands that can change a message in each status (the spec's table). Named in conflict
#: errors. Commands whose effect already holds (pausing a paused message...) are no-ops instead.
ALLOWED_COMMANDS: dict[MessageStatus, tuple[str, ...]] = {
    MessageStatus.DRAFT: (
        "EditDraft",
        "ScheduleMessage",
        "CopyMessage",
        "DiscardDraft",
        *_AUDIENCE,
    ),
    MessageStatus.SCHEDULED: ("UnscheduleMessage", "CancelMessage", "CopyMessage", *_AUDIENCE),
    MessageStatus.SENDING: ("PauseMessage", "CancelMessage", "CopyMessage", *_AUDIENCE),
    MessageStatus.PAUSED: ("ResumeMessage", "CancelMessage", "CopyMessage", *_AUDIENCE),
    MessageStatus.SENT: ("CopyMessage",),
    MessageStatus.CANCELED: ("CopyMessage",),
    MessageStatus.DISCARDED: ("CopyMessage",),
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a scheduled message goes out.

    ``send_at`` is an instant. In ``recipient_timezone`` mode ``send_at_local`` is the wall-clock
    time every recipient gets it in their zone (``send_at`` is then that time in the account's
    default zone); contacts without a zone use ``default_time_zone``.
    """

    send_at: datetime
    send_at_local: datetime | None
    default_time_zone: str
    send_now: bool

    def due_for(self, zone_key: str) -> datetime:
        """When recipients of ``zone_key`` (``""``: the default zone) are due."""
        if self.send_at_local is None:
            return self.send_at
        return local_to_instant(self.send_at_local, zone_key or self.default_time_zone)


@dataclass(frozen=True, slots=True)
class Pause:
    """A pause that has ended: nothing was released from ``paused_at`` to ``resumed_at``."""

    paused_at: datetime
    resumed_at: datetime

    def covers(self, instant: datetime) -> bool:
        """True when ``instant`` fell inside the pause."""
        return self.paused_at <= instant < self.resumed_at


@dataclass(frozen=True, slots=True)
class MessageState:
    """One message as of event ``version``.

    Throttle progress: ``batch`` is the slot of the batch in progress (or last started) with
    ``batch_remaining`` recipients still to go until ``batch_until`` (the next slot, pushed back
    by any pause that interrupted the batch); ``next_slot`` is the first slot that may still
    start. ``rate_clock`` is when the last release was decided (``None`` right after a start or a
    resume: the first tick then has a full second of release budget).
    """

    message_id: UUID
    account_id: str
    version: int
    status: MessageStatus
    content: Content
    plan: DeliveryPlan
    book: RecipientBook
    created_at: datetime
    created_by: Actor
    copied_from: UUID | None = None
    schedule: Schedule | None = None
    started_at: datetime | None = None
    paused_at: datetime | None = None
    paused_by: Actor | None = None
    pause_reason: str | None = None
    pauses: tuple[Pause, ...] = ()
    canceled_at: datetime | None = None
    canceled_by: Actor | None = None
    cancel_reason: str | None = None
    sent_at: datetime | None = None
    copies: tuple[UUID, ...] = ()
    rate_clock: datetime | None = None
    batch: int | None = None
    batch_remaining: int = 0
    batch_until: datetime | None = None
    next_slot: int = 0
    #: The sequence of the current batch's BatchStarted: a recipient released after it and
    #: returned by delivery gives its place in the batch back.
    batch_started_in: int = 0

    def slot_at(self, slot: int) -> datetime:
        """When throttle slot ``slot`` opens: the send time plus ``slot`` intervals."""
        assert self.schedule is not None and self.plan.throttle is not None
        return self.schedule.send_at + slot * timedelta(seconds=self.plan.throttle.interval_seconds)

    def first_slot_from(self, instant: datetime) -> int:
        """The first throttle slot that opens at or after ``instant``."""
        assert self.schedule is not None and self.plan.throttle is not None
        delta = instant - self.schedule.send_at
        if delta <= timedelta(0):
            return 0
        interval = timedelta(seconds=self.plan.throttle.interval_seconds)
        return -((-delta) // interval)

    def last_slot_until(self, instant: datetime) -> int:
        """The last throttle slot that opened at or before ``instant`` (-1 before the first)."""
        assert self.schedule is not None and self.plan.throttle is not None
        delta = instant - self.schedule.send_at
        if delta < timedelta(0):
            return -1
        return delta // timedelta(seconds=self.plan.throttle.interval_seconds)

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data, for comparing two folds (O(audience); tests, audits)."""
        lifecycle = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "book"
        }
        return {"lifecycle": lifecycle, "book": self.book.snapshot()}
