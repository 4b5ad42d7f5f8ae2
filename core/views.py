"""What the read side shows of a message: the product rules of the views (spec, "What the views
show"), as pure functions the projections and the read API call. No I/O, no clock.

The projections (services/projections/views.py) store what these return; the read API
(services/commands/read_api.py) and the web UI answer with them. docs/projections.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.book import MAY_HAVE_RECEIVED, RecipientBook, RecipientStatus
from core.state import MessageState, MessageStatus
from core.timezones import local_to_instant

__all__ = [
    "LISTS",
    "LIST_OF",
    "NEVER_RECEIVED",
    "NOT_DELIVERED",
    "ZoneTime",
    "audience_count",
    "first_release_at",
    "latest_due",
    "next_batch_at",
    "not_sent_reason",
    "remaining_count",
    "zone_times",
    "zones",
    "zones_to_skip",
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
    """The recipients not sent (yet): pending and in flight, in every status. Of a canceled
    message that is exactly the recipients its list shows as not sent: the pending ones
    (``reason: canceled``, never sent) and those still in flight (each ends delivered, failed or
    unknown, or comes back pending and so not sent)."""
    del status  # the same rule in every status: a canceled message's pending are not sent
    return pending + released


#: The reason a released recipient shows while delivery waits to try it again after a
#: transient (4xx) refusal: the last refusal, prefixed.
RETRYING = "retrying after: "


def not_sent_reason(
    state: str, reason: str | None, message_status: str, refusal: str | None = None
) -> str | None:
    """The reason a recipient's row shows: a pending contact of a canceled message was not
    sent because the message was canceled (docs/core.md, Cancel); a released one that delivery
    is to try again after a transient (4xx) refusal shows that refusal while it waits."""
    if state == RecipientStatus.PENDING.value and message_status == MessageStatus.CANCELED.value:
        return "canceled"
    if state == RecipientStatus.RELEASED.value and refusal:
        return RETRYING + refusal
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


@dataclass(frozen=True, slots=True)
class ZoneTime:
    """One zone of a ``recipient_timezone`` message: when its recipients are due (the send
    time's wall clock there) and how many of them are still pending."""

    zone: str
    due_at: datetime
    pending: int


def zone_times(state: MessageState) -> list[ZoneTime] | None:
    """Each zone of the audience with its due time and pending count, first due first (ties by
    name); None unless the message is in ``recipient_timezone`` mode and has a send time."""
    schedule = state.schedule
    if state.plan.mode != "recipient_timezone" or schedule is None:
        return None
    found: dict[str, ZoneTime] = {}
    for key, queue in state.book.queues.items():
        name = _zone_name(state, key)
        pending = queue.pending + (found[name].pending if name in found else 0)
        found[name] = ZoneTime(name, schedule.due_for(key), pending)
    return sorted(found.values(), key=lambda z: (z.due_at, z.zone))


def first_release_at(state: MessageState) -> datetime | None:
    """When the message really starts releasing: in ``recipient_timezone`` mode when the first
    zone of its audience reaches the send time (which may be hours before or after the send
    time in the account's zone); else the send time. None without a send time."""
    schedule = state.schedule
    if schedule is None:
        return None
    times = zone_times(state)
    if not times:
        return schedule.send_at
    return times[0].due_at


def latest_due(local: datetime, zone_names: set[str]) -> datetime:
    """The instant the wall-clock time ``local`` comes last among ``zone_names``: the last
    zone's due time, against which a ``recipient_timezone`` send time is "in the past"."""
    return max(local_to_instant(local, name) for name in zone_names)


def zones_to_skip(
    status: str,
    policy: str,
    paused_at: datetime | None,
    times: list[ZoneTime] | None,
    now: datetime,
) -> list[str] | None:
    """Under the ``skip`` policy, while paused: the zones a resume now would skip, those with
    pending recipients whose due time fell inside the pause so far (``paused_at`` to ``now``).
    A zone already due before the pause completes on resume (spec, Resume) and is not listed.
    None when nothing can be skipped (not paused, another policy, not zoned)."""
    if status != MessageStatus.PAUSED.value or policy != "skip" or paused_at is None:
        return None
    if times is None:
        return None
    return [z.zone for z in times if z.pending > 0 and paused_at <= z.due_at < now]
