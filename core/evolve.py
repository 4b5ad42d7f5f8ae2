"""Folding events into state: ``evolve(state, event) -> state``.

The fold applies facts; it never rejects an event for breaking a product rule (that was decided
before the event was written), only for being out of order. Cost: each event costs in proportion
to the recipients it names, plus O(zones) for scheduling; never O(audience).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import assert_never

from core.book import RecipientBook, RecipientStatus
from core.errors import EventOutOfOrderError
from core.state import MessageState, MessageStatus, Pause, Schedule
from schemas import (
    BatchStarted,
    DraftCreated,
    DraftDiscarded,
    DraftEdited,
    Event,
    MessageCanceled,
    MessageCopied,
    MessagePaused,
    MessageResumed,
    MessageScheduled,
    MessageSent,
    MessageUnscheduled,
    RecipientsAdded,
    RecipientsDelivered,
    RecipientsExcluded,
    RecipientsFailed,
    RecipientsOutcomeUnknown,
    RecipientsReleased,
    RecipientsRemoved,
    RecipientsReturned,
    RecipientsSkipped,
    SendingStarted,
    TestSendRequested,
)

__all__ = ["PLANNED_EVENT_TYPES", "evolve", "fold"]

#: Events the planner emits from a clock tick (their causation id is a tick, not a command).
PLANNED_EVENT_TYPES = frozenset(
    {"SendingStarted", "BatchStarted", "RecipientsReleased", "RecipientsSkipped", "MessageSent"}
)


def _no_due(_key: str) -> datetime | None:
    return None


def _due_function(state: MessageState) -> Callable[[str], datetime | None]:
    schedule = state.schedule
    if schedule is None:
        return _no_due
    return schedule.due_for


def _created(event: DraftCreated) -> MessageState:
    return MessageState(
        message_id=event.message_id,
        account_id=event.account_id,
        version=event.sequence,
        status=MessageStatus.DRAFT,
        content=event.content,
        plan=event.plan,
        book=RecipientBook(),
        created_at=event.occurred_at,
        created_by=event.actor,
        copied_from=event.copied_from,
    )


def _apply(state: MessageState, event: Event) -> MessageState:
    book = state.book
    match event:
        case RecipientsReleased():
            moved = book.release(event.contact_ids, event.sequence)
            remaining = state.batch_remaining
            if event.batch is not None:
                remaining = max(0, remaining - moved)
            return replace(state, rate_clock=event.occurred_at, batch_remaining=remaining)
        case RecipientsDelivered():
            book.record_outcome(event.contact_ids, RecipientStatus.DELIVERED)
            return state
        case RecipientsFailed():
            book.record_outcome(
                (f.contact_id for f in event.failures),
                RecipientStatus.FAILED,
                [f.reason for f in event.failures],
            )
            return state
        case RecipientsOutcomeUnknown():
            book.record_outcome(event.contact_ids, RecipientStatus.UNKNOWN)
            return state
        case RecipientsReturned():
            since = state.batch_started_in
            back = 0
            if since and state.batch is not None:
                # Returned from the current batch: their places in it are free again, so the
                # batch a pause interrupted still sends its full size on resume.
                for cid in event.contact_ids:
                    if (
                        book.status_of(cid) is RecipientStatus.RELEASED
                        and book.released_in_of(cid) > since
                    ):
                        back += 1
            book.give_back(event.contact_ids)
            if back:
                return replace(state, batch_remaining=state.batch_remaining + back)
            return state
        case RecipientsAdded():
            book.add(event.contacts, _due_function(state))
            return state
        case RecipientsRemoved():
            book.remove(event.contact_ids)
            return state
        case RecipientsExcluded():
            book.exclude(event.contact_ids, event.addresses)
            return state
        case RecipientsSkipped():
            book.skip(event.contact_ids, event.reason)
            return state
        case BatchStarted():
            return replace(
                state,
                batch_started_in=event.sequence,
                batch=event.slot,
                batch_remaining=event.size,
                batch_until=state.slot_at(event.slot + 1),
                next_slot=event.slot + 1,
            )
        case DraftEdited():
            return replace(state, content=event.content, plan=event.plan)
        case MessageScheduled():
            schedule = Schedule(
                send_at=event.send_at,
                send_at_local=event.send_at_local,
                default_time_zone=event.default_time_zone,
                send_now=event.send_now,
            )
            book.set_due(schedule.due_for)
            return replace(
                state,
                status=MessageStatus.SCHEDULED,
                schedule=schedule,
                batch=None,
                batch_remaining=0,
                batch_until=None,
                batch_started_in=0,
                next_slot=0,
                rate_clock=None,
            )
        case MessageUnscheduled():
            book.set_due(_no_due)
            return replace(state, status=MessageStatus.DRAFT, schedule=None)
        case DraftDiscarded():
            return replace(state, status=MessageStatus.DISCARDED)
        case SendingStarted():
            return replace(
                state, status=MessageStatus.SENDING, started_at=event.occurred_at, rate_clock=None
            )
        case MessagePaused():
            return replace(
                state,
                status=MessageStatus.PAUSED,
                paused_at=event.occurred_at,
                paused_by=event.actor,
                pause_reason=event.reason,
            )
        case MessageResumed():
            paused_at = state.paused_at if state.paused_at is not None else event.occurred_at
            next_slot = state.next_slot
            batch_until = state.batch_until
            if state.plan.throttle is not None and state.schedule is not None:
                # Slots that opened inside the pause are not made up.
                next_slot = max(next_slot, state.first_slot_from(event.occurred_at))
                if state.batch is not None and batch_until is not None and paused_at < batch_until:
                    # The batch the pause interrupted gets back the rest of its interval, even
                    # if all of it was released: sends the worker had not handed over may be
                    # reported returned only after this resume, and their places (given back by
                    # RecipientsReturned) are then still the interrupted batch's. With nothing
                    # returned the batch stays closed (no place left), and the next slot is
                    # unchanged.
                    batch_until += event.occurred_at - paused_at
            return replace(
                state,
                status=MessageStatus.SENDING,
                pauses=(*state.pauses, Pause(paused_at, event.occurred_at)),
                paused_at=None,
                paused_by=None,
                pause_reason=None,
                rate_clock=None,
                next_slot=next_slot,
                batch_until=batch_until,
            )
        case MessageCanceled():
            return replace(
                state,
                status=MessageStatus.CANCELED,
                canceled_at=event.occurred_at,
                canceled_by=event.actor,
                cancel_reason=event.reason,
            )
        case MessageSent():
            return replace(state, status=MessageStatus.SENT, sent_at=event.occurred_at)
        case MessageCopied():
            return replace(state, copies=(*state.copies, event.copy_id))
        case TestSendRequested():
            return state  # a test send is history only: no recipient, no count changes
        case DraftCreated():
            raise EventOutOfOrderError(expected=state.version + 1, got=1)
        case _:
            assert_never(event)


def evolve(state: MessageState | None, event: Event) -> MessageState:
    """The state after ``event``. Consumes ``state``: do not use it afterwards (shared book).

    Events must come in sequence order (1 for ``DraftCreated``, then each next number).
    """
    if state is None:
        if not isinstance(event, DraftCreated) or event.sequence != 1:
            raise EventOutOfOrderError(expected=1, got=event.sequence)
        created = _created(event)
        created.book.command_ids.add(event.causation_id)
        return created
    if event.message_id != state.message_id:
        raise ValueError(f"event for message {event.message_id} folded into {state.message_id}")
    if event.sequence != state.version + 1:
        raise EventOutOfOrderError(expected=state.version + 1, got=event.sequence)
    new = _apply(state, event)
    if event.type not in PLANNED_EVENT_TYPES:
        new.book.command_ids.add(event.causation_id)
    return replace(new, version=event.sequence)


def fold(events: Iterable[Event], state: MessageState | None = None) -> MessageState | None:
    """Fold ``events`` in order, from ``state`` (``None``: the message does not exist yet)."""
    for event in events:
        state = evolve(state, event)
    return state
