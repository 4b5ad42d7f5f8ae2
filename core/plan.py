"""Send planning: ``plan(state, tick) -> events``: exactly what happens to a message at a tick.

The dispatcher calls it for each recorded clock tick and folds the events it returns with
:func:`core.evolve`; whatever the planner needs to remember between ticks is in those events, so
replaying the same events and ticks reaches the same releases in the same order.

Rules (see docs/core.md for the reasoning):

* **Start**: a scheduled message starts at its send time; in ``recipient_timezone`` mode at the
  first moment any zone with pending recipients (or the account's zone) reaches the wall-clock
  send time.
* **Due**: in ``fixed`` mode every pending recipient is due from the start; in
  ``recipient_timezone`` mode a recipient is due once their zone reaches the wall-clock send time
  (zones already past it are due at once); when throttled, recipients are due as the open batch
  has room.
* **Release rate**: at most ``plan.release_rate`` recipients per second of clock since the last
  release (at most one second's worth per tick), so a pause takes effect within one tick.
* **In flight** (optional ``plan.max_in_flight``): no more than that many released recipients
  awaiting an outcome, so releases never outrun delivery.
* **Throttle**: slot ``k`` opens at ``send_at + k * interval`` and releases up to ``batch_size``
  recipients until the next slot opens. A batch interrupted by a pause gets, on resume, the rest
  of its interval that the pause took. Slots that opened inside a pause, or while the previous
  batch was still open, are not made up. Nothing is released at or after the end date; pending
  recipients are then skipped with reason ``end_date_passed``.
* **Pause/resume, time zones**: recipients of a zone whose send time fell inside a pause go out on
  resume (``send_on_resume``) or are skipped (``skip``: reason ``missed_zone_skip_policy``).
* **Dedupe**: a contact is released at most once (the book); a contact whose normalized address
  was already released under another contact id is skipped (``duplicate_address``).
* **Completion**: a sending message is sent when no recipient is pending and every released one
  has an outcome (delivered, failed or unknown).
* **Returned** sends (not handed to SMTP because a pause or cancel reached delivery first) are
  pending again and released before the rest of their queue, in their original order.
* Nothing is released while paused, after cancel or once sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from core.book import C_PENDING, RecipientBook, RecipientStatus, ZoneQueue
from core.emit import Emitter
from core.state import MessageState, MessageStatus
from schemas import (
    MAX_CHUNK,
    Actor,
    BatchStarted,
    Event,
    MessageSent,
    RecipientsReleased,
    RecipientsSkipped,
    SendingStarted,
    SkipReason,
    Tick,
)

__all__ = ["DISPATCHER", "RATE_WINDOW", "plan", "start_instant"]

#: The planner acts as this service in the events it emits.
DISPATCHER = "dispatcher"
#: The most clock time one tick's release budget accounts for.
RATE_WINDOW = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_WINDOW_US = RATE_WINDOW // _MICROSECOND


def start_instant(state: MessageState) -> datetime | None:
    """When a scheduled message starts sending (``None`` if it is not scheduled)."""
    schedule = state.schedule
    if schedule is None:
        return None
    start = schedule.send_at
    if schedule.send_at_local is not None:
        for queue in state.book.queues.values():
            if queue.pending > 0 and queue.due is not None and queue.due < start:
                start = queue.due
    return start


def _budget(rate: int, rate_clock: datetime | None, at: datetime) -> int:
    """Recipients releasable now: ``rate`` per second since the last release, at most 1 s worth.

    Integer arithmetic, so a replay computes exactly the same number.
    """
    if rate_clock is None:
        return rate
    elapsed_us = (at - rate_clock) // _MICROSECOND
    if elapsed_us <= 0:
        return 0
    return rate * min(elapsed_us, _WINDOW_US) // _WINDOW_US


class _Picker:
    """Chooses, without changing the book, who is released or skipped at this tick.

    It collects slots; :meth:`ids` names them (one vectorized read of the ids per event)."""

    __slots__ = ("book", "claimed", "released", "skipped")

    def __init__(self, book: RecipientBook) -> None:
        self.book = book
        self.released: list[int] = []  # slots
        self.skipped: dict[SkipReason, list[int]] = {}  # slots
        self.claimed: set[int] = set()  # address entries released at this tick

    def ids(self, slots: list[int]) -> tuple[str, ...]:
        return tuple(self.book.ids.many(slots))

    def take(self, queue: ZoneQueue, limit: int) -> None:
        """Release up to ``limit`` more contacts of ``queue``, in order, deduping addresses.

        The hot loop of the planner: it reads the book's arrays by slot (one pending slot per
        contact, so no contact is picked twice) and touches no dict; the address check is one
        byte (the entry's "released" flag) and the tick's set of claimed entries.
        """
        if limit <= 0:
            return
        released = self.released
        target = len(released) + limit
        if queue.returned and self._take_returned(queue, target):
            return
        book = self.book
        status = book.status
        released_in = book.released_in
        addr = book.addr
        claimed = self.claimed
        already = book.addresses.released
        items = queue.items
        for i in range(queue.head, len(items)):
            slot = items[i]
            if status[slot] != C_PENDING or released_in[slot]:
                continue  # not pending, or a returned slot (taken from queue.returned first)
            address = addr[slot]
            if already[address] or address in claimed:
                self.skipped.setdefault("duplicate_address", []).append(slot)
                continue
            claimed.add(address)
            released.append(slot)
            if len(released) >= target:
                break

    def _take_returned(self, queue: ZoneQueue, target: int) -> bool:
        """Release returned slots first (they joined before the rest of the queue), in order;
        True when ``target`` was reached."""
        book = self.book
        status = book.status
        addr = book.addr
        released = self.released
        claimed = self.claimed
        already = book.addresses.released
        for slot in queue.returned:
            if status[slot] != C_PENDING:
                continue
            address = addr[slot]
            if already[address] or address in claimed:
                self.skipped.setdefault("duplicate_address", []).append(slot)
                continue
            claimed.add(address)
            released.append(slot)
            if len(released) >= target:
                return True
        return False

    def skip_all(self, queues: Iterable[ZoneQueue], reason: SkipReason) -> None:
        """Every pending contact of ``queues`` is skipped for ``reason``."""
        bucket = self.skipped.setdefault(reason, [])
        for queue in queues:
            bucket.extend(queue.live_slots())

    @property
    def decided(self) -> int:
        return len(self.released) + sum(len(ids) for ids in self.skipped.values())


def plan(state: MessageState, tick: Tick) -> list[Event]:
    """The events that happen to ``state`` at ``tick`` (the state is only read)."""
    status = state.status
    if status not in (MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.PAUSED):
        return []
    at = tick.at
    emit = Emitter(
        message_id=state.message_id,
        version=state.version,
        occurred_at=at,
        actor=Actor(kind="service", account_id=state.account_id, service=DISPATCHER),
        correlation_id=tick.tick_id,
        causation_id=tick.tick_id,
    )
    events: list[Event] = []
    rate_clock = state.rate_clock
    if status is MessageStatus.SCHEDULED:
        start = start_instant(state)
        if start is None or at < start:
            return []
        events.append(emit(SendingStarted))
        rate_clock = None

    book = state.book
    picker = _Picker(book)
    throttle = state.plan.throttle
    end_passed = throttle is not None and throttle.end_at is not None and at >= throttle.end_at
    batch: int | None = None

    if end_passed:
        # Nothing is released at or after the end date, paused or not; the rest is reported.
        picker.skip_all(book.queues.values(), "end_date_passed")
    elif status is MessageStatus.PAUSED:
        return events
    elif throttle is not None:
        batch = _throttled(state, at, emit, events, picker, _budget_for(state, rate_clock, at))
    elif state.plan.mode == "recipient_timezone":
        _by_zone(state, at, picker, _budget_for(state, rate_clock, at))
    else:
        budget = _budget_for(state, rate_clock, at)
        for queue in book.queues.values():
            if queue.pending:
                picker.take(queue, budget - len(picker.released))
                if len(picker.released) >= budget:
                    break

    released = picker.released
    for i in range(0, len(released), MAX_CHUNK):
        chunk = picker.ids(released[i : i + MAX_CHUNK])
        events.append(emit(RecipientsReleased, contact_ids=chunk, batch=batch))
    for reason, ids in picker.skipped.items():
        for i in range(0, len(ids), MAX_CHUNK):
            chunk = picker.ids(ids[i : i + MAX_CHUNK])
            events.append(emit(RecipientsSkipped, contact_ids=chunk, reason=reason))

    if status is not MessageStatus.PAUSED and _complete(book, picker):
        counts = book.counts
        skipped_now = sum(len(ids) for ids in picker.skipped.values())
        events.append(
            emit(
                MessageSent,
                delivered=counts[RecipientStatus.DELIVERED],
                failed=counts[RecipientStatus.FAILED],
                skipped=counts[RecipientStatus.SKIPPED] + skipped_now,
                unknown=counts[RecipientStatus.UNKNOWN],
            )
        )
    return events


def _budget_for(state: MessageState, rate_clock: datetime | None, at: datetime) -> int:
    budget = _budget(state.plan.release_rate, rate_clock, at)
    window = state.plan.max_in_flight
    if window is not None:
        # Backpressure from the log: outcomes are commands, so a replay computes the same.
        budget = min(budget, max(0, window - state.book.outstanding))
    return budget


def _complete(book: RecipientBook, picker: _Picker) -> bool:
    """Sent: nobody pending after this tick and no released recipient awaiting an outcome."""
    return book.pending - picker.decided == 0 and book.outstanding + len(picker.released) == 0


def _by_zone(state: MessageState, at: datetime, picker: _Picker, budget: int) -> None:
    """Release zones whose send time has come, earliest first; missed zones per the policy."""
    due = sorted(
        (q for q in state.book.queues.values() if q.pending and q.due is not None and q.due <= at),
        key=lambda q: (q.due, q.key),
    )
    skip_missed = state.plan.missed_zone_policy == "skip"
    for queue in due:
        assert queue.due is not None
        if skip_missed and any(p.covers(queue.due) for p in state.pauses):
            picker.skip_all((queue,), "missed_zone_skip_policy")
            continue
        picker.take(queue, budget - len(picker.released))


def _throttled(
    state: MessageState,
    at: datetime,
    emit: Emitter,
    events: list[Event],
    picker: _Picker,
    budget: int,
) -> int | None:
    """Release from the open batch, opening the latest due slot when none is open.

    Returns the slot of the batch released from (``None`` if none is open).
    """
    throttle = state.plan.throttle
    assert throttle is not None
    book = state.book
    if not book.pending:
        return None
    batch = state.batch
    remaining = state.batch_remaining
    batch_until = state.batch_until
    is_open = batch is not None and remaining > 0 and batch_until is not None and at < batch_until
    if not is_open:
        slot = state.last_slot_until(at)
        if slot < state.next_slot:
            return None
        slot_at = state.slot_at(slot)
        if throttle.end_at is not None and slot_at >= throttle.end_at:
            return None
        events.append(emit(BatchStarted, slot=slot, slot_at=slot_at, size=throttle.batch_size))
        batch, remaining = slot, throttle.batch_size
    limit = min(budget, remaining)
    for queue in book.queues.values():
        if queue.pending:
            picker.take(queue, limit - len(picker.released))
            if len(picker.released) >= limit:
                break
    return batch
