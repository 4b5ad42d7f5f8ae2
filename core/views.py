"""What the read side shows of a message: the product rules of the views (spec, "What the views
show"), as pure functions the projections and the read API call. No I/O, no clock.

The projections (services/projections/views.py) store what these return; the read API
(services/commands/read_api.py) and the web UI answer with them. docs/projections.md.
"""

from __future__ import annotations

from datetime import datetime

from core.book import MAY_HAVE_RECEIVED, RecipientBook, RecipientStatus
from core.state import MessageState, MessageStatus

__all__ = [
    "LISTS",
    "LIST_OF",
    "NEVER_RECEIVED",
    "NOT_DELIVERED",
    "audience_count",
    "next_batch_at",
    "not_sent_reason",
    "remaining_count",
    "zones",
]

#: The statuses each list of the UI shows (spec, "What the views show").
LISTS: dict[str, tuple[str, ...]] = {
    "sent": (
        MessageStatus.SENDING.value,
        MessageStatus.PAUSED.value,
        MessageStatus.CANCELED.value,
        MessageStatus.SENT.value,
    ),
    "scheduled": (MessageStatus.SCHEDULED.value,),
    "drafts": (MessageStatus.DRAFT.value,),
}

#: Which list shows a message of each status (a discarded draft: none), the inverse of LISTS.
LIST_OF: dict[str, str] = {status: name for name, shown in LISTS.items() for status in shown}

#: "Who did not get it" (spec, Recipients): every recipient state but delivered (the read API's
#: ``not_delivered=true``).
NOT_DELIVERED: frozenset[str] = frozenset(
    s.value for s in RecipientStatus if s is not RecipientStatus.DELIVERED
)

#: Who did not get it and surely never did, in the states' order: pending, failed, skipped (the
#: web UI's export for a message sent again). Not who may have received it (MAY_HAVE_RECEIVED:
#: a second copy is worse than a missing one), nor the removed and excluded, never meant to.
NEVER_RECEIVED: tuple[str, ...] = tuple(
    s.value
    for s in RecipientStatus
    if s not in MAY_HAVE_RECEIVED and s not in (RecipientStatus.REMOVED, RecipientStatus.EXCLUDED)
)


def audience_count(book: RecipientBook) -> int:
    """The message's audience: every contact added, less the removed and the excluded."""
    counts = book.counts
    return len(book) - counts[RecipientStatus.REMOVED] - counts[RecipientStatus.EXCLUDED]


def remaining_count(status: str, pending: int, released: int) -> int:
    """Still to go: pending and in flight; of a canceled message only what is in flight (its
    pending contacts will never be sent)."""
    return released + (0 if status == MessageStatus.CANCELED.value else pending)


def not_sent_reason(state: str, reason: str | None, message_status: str) -> str | None:
    """The reason a recipient's row shows: a pending contact of a canceled message was not
    sent because the message was canceled (docs/core.md, Cancel)."""
    if state == RecipientStatus.PENDING.value and message_status == MessageStatus.CANCELED.value:
        return "canceled"
    return reason


def next_batch_at(state: MessageState) -> datetime | None:
    """When a throttled message's next batch goes (hover details); None when it has no next
    batch (not throttled, not scheduled or sending, nobody pending, or past the throttle's end).
    While paused no batch is due: the next one comes only after a resume (empty, not a time that
    will have passed by then)."""
    throttle = state.plan.throttle
    due = state.status in (MessageStatus.SCHEDULED, MessageStatus.SENDING)
    if throttle is None or state.schedule is None or not due:
        return None
    if state.book.pending <= 0:
        return None
    candidate = state.slot_at(state.next_slot)
    if throttle.end_at is None or candidate < throttle.end_at:
        return candidate
    return None


def _zone_name(state: MessageState, key: str) -> str:
    if key:
        return key
    return state.schedule.default_time_zone if state.schedule is not None else ""


def zones(state: MessageState) -> tuple[list[str], list[str]] | None:
    """The time zones pending and done of a message sent in each recipient's zone (pending,
    done); None for the other modes."""
    if state.plan.mode != "recipient_timezone":
        return None
    queues = state.book.queues
    pending = sorted({_zone_name(state, k) for k, q in queues.items() if q.pending > 0})
    done = sorted(
        {_zone_name(state, k) for k, q in queues.items() if q.pending == 0} - set(pending)
    )
    return pending, done
