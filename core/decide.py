"""Deciding commands: ``decide(command, state, ctx) -> events`` (or a domain error).

Rules of idempotency at the core level (the API's idempotency-key store is the shell's):

* a command whose id was already applied to this message is a no-op (``[]``);
* a command whose effect already holds is a no-op: pausing a paused message, resuming a sending
  one, cancelling a canceled one, discarding a discarded draft, unscheduling a draft,
  scheduling a scheduled message for the same time, an edit that changes nothing, adding
  contacts already in the audience, removing contacts that are not pending, recording an
  outcome already recorded;
* any other command not allowed in the current status raises :class:`CommandNotAllowedError`
  naming the status and the allowed commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, assert_never

from pydantic import ValidationError

from core.audience import sort_added, sort_removed
from core.book import MAY_HAVE_RECEIVED, RecipientStatus
from core.context import Context
from core.emit import Emitter
from core.errors import (
    CommandNotAllowedError,
    InvalidCommandError,
    MessageAlreadyExistsError,
    MessageNotFoundError,
)
from core.patch import merge_patch
from core.state import (
    ACTIVE_STATUSES,
    ALLOWED_COMMANDS,
    TESTABLE_STATUSES,
    MessageState,
    MessageStatus,
)
from core.timezones import local_to_instant, wall_clock
from core.views import latest_due
from schemas import (
    MAX_CHUNK,
    AddRecipients,
    CancelMessage,
    Command,
    Content,
    CopyMessage,
    CreateDraft,
    DeliveryPlan,
    DiscardDraft,
    DraftCreated,
    DraftDiscarded,
    DraftEdited,
    EditDraft,
    Event,
    FailedRecipient,
    MessageCanceled,
    MessageCopied,
    MessagePaused,
    MessageResumed,
    MessageScheduled,
    MessageUnscheduled,
    PauseMessage,
    RecipientsAdded,
    RecipientsDelivered,
    RecipientsExcluded,
    RecipientsFailed,
    RecipientsOutcomeUnknown,
    RecipientsRemoved,
    RecipientsReturned,
    RecordDeliveryOutcomes,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    SendTestMessage,
    TestSendRequested,
    UnscheduleMessage,
)
from schemas.commands import DraftPatch

__all__ = ["SCHEDULE_GRACE", "decide"]

#: How far in the past a send time may lie when it is scheduled (clock skew, slow forms).
SCHEDULE_GRACE = timedelta(minutes=5)

_OPEN = frozenset(
    {MessageStatus.DRAFT, MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.PAUSED}
)
_CANCELABLE = ACTIVE_STATUSES

T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = MAX_CHUNK) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _emitter(state_version: int, message_id: Any, command: Command, ctx: Context) -> Emitter:
    return Emitter(
        message_id=message_id,
        version=state_version,
        occurred_at=ctx.now,
        actor=ctx.actor,
        correlation_id=ctx.correlation_id or command.command_id,
        causation_id=command.command_id,
    )


def _refuse(command: Command, state: MessageState) -> CommandNotAllowedError:
    return CommandNotAllowedError(command.type, state.status, ALLOWED_COMMANDS[state.status])


def decide(command: Command, state: MessageState | None, ctx: Context) -> list[Event]:
    """The events a command produces against ``state`` (``None``: no such message yet).

    The state is only read. Raises :class:`MessageNotFoundError` for an unknown message or one
    of another account, :class:`CommandNotAllowedError` for a command the status forbids,
    :class:`InvalidCommandError` for a value that breaks a rule of time or state, and
    :class:`MessageAlreadyExistsError` for a create (or copy) onto a taken id.
    """
    if isinstance(command, CreateDraft):
        return _create(command, state, ctx)
    if state is None or state.account_id != ctx.actor.account_id:
        raise MessageNotFoundError(command.message_id)
    if command.command_id in state.book.command_ids:
        return []
    emit = _emitter(state.version, state.message_id, command, ctx)
    # One case per command type; mypy checks that none is missing (assert_never).
    match command:
        case EditDraft():
            return _edit(command, state, ctx, emit)
        case ScheduleMessage():
            return _schedule(command, state, ctx, emit)
        case UnscheduleMessage():
            return _unschedule(command, state, ctx, emit)
        case DiscardDraft():
            return _discard(command, state, ctx, emit)
        case PauseMessage():
            return _pause(command, state, ctx, emit)
        case ResumeMessage():
            return _resume(command, state, ctx, emit)
        case CancelMessage():
            return _cancel(command, state, ctx, emit)
        case CopyMessage():
            return _copy(command, state, ctx, emit)
        case AddRecipients():
            return _add(command, state, ctx, emit)
        case RemoveRecipients():
            return _remove(command, state, ctx, emit)
        case RecordDeliveryOutcomes():
            return _outcomes(command, state, ctx, emit)
        case SendTestMessage():
            return _test_send(command, state, ctx, emit)
        case _:
            assert_never(command)


def _create(command: CreateDraft, state: MessageState | None, ctx: Context) -> list[Event]:
    """A draft is created once; the same create again is a no-op, another one a conflict."""
    if state is not None:
        if (
            state.account_id == ctx.actor.account_id
            and command.command_id in state.book.command_ids
        ):
            return []
        raise MessageAlreadyExistsError(command.message_id)
    emit = _emitter(0, command.message_id, command, ctx)
    return [
        emit(
            DraftCreated,
            account_id=ctx.actor.account_id,
            content=command.content,
            plan=command.plan,
        )
    ]


def _edit(command: EditDraft, state: MessageState, ctx: Context, emit: Emitter) -> list[Event]:
    """Content and plan can be edited only in draft."""
    if state.status is not MessageStatus.DRAFT:
        raise _refuse(command, state)
    if command.patch is not None:
        content, plan = _patched(command.patch, state)
    else:
        content = command.content if command.content is not None else state.content
        plan = command.plan if command.plan is not None else state.plan
    if content == state.content and plan == state.plan:
        return []
    return [emit(DraftEdited, content=content, plan=plan)]


def _patched(patch: DraftPatch, state: MessageState) -> tuple[Content, DeliveryPlan]:
    """The draft's content and plan with a merge patch applied, validated whole: a result that
    breaks a rule is refused naming the field (`content.from_address`)."""
    current = {
        "content": state.content.model_dump(mode="json"),
        "plan": state.plan.model_dump(mode="json"),
    }
    merged = merge_patch(current, patch.members())
    try:
        return Content.model_validate(merged.get("content", {})), DeliveryPlan.model_validate(
            merged.get("plan", {})
        )
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        name = "content" if error.title == "Content" else "plan"
        path = ".".join(str(p) for p in (name, *first["loc"]))
        raise InvalidCommandError(path, str(first["msg"]).removeprefix("Value error, ")) from None


def _send_time(
    command: ScheduleMessage, state: MessageState, ctx: Context
) -> tuple[datetime, datetime | None]:
    """The send instant and, in recipient-timezone mode, the wall-clock send time."""
    zone = ctx.default_time_zone
    timezone_mode = state.plan.mode == "recipient_timezone"
    if command.send_at_local is not None:
        local = command.send_at_local
        instant = local_to_instant(local, zone)
    else:
        instant = (ctx.now if command.send_now else command.send_at or ctx.now).astimezone(UTC)
        local = wall_clock(instant, zone)
    return instant, (local if timezone_mode else None)


def _audience_zones(state: MessageState, ctx: Context) -> set[str]:
    """The zones of the message's pending audience (the account's for contacts without one, and
    for an empty audience)."""
    names = {key or ctx.default_time_zone for key, q in state.book.queues.items() if q.pending}
    return names or {ctx.default_time_zone}


def _schedule(
    command: ScheduleMessage, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """A draft becomes scheduled: not in the past beyond a small grace, end date after it."""
    instant, local = _send_time(command, state, ctx)
    current = state.schedule
    if state.status is MessageStatus.SCHEDULED and current is not None:
        same = (
            (command.send_now and current.send_now)
            if command.send_now
            else (
                not current.send_now
                and current.send_at == instant
                and current.send_at_local == local
            )
        )
        if same:
            return []
    if state.status is not MessageStatus.DRAFT:
        raise _refuse(command, state)
    # In recipient_timezone mode the send time is a wall clock each zone reaches in turn: it is
    # "in the past" only once the audience's latest zone has passed it (core/views.latest_due);
    # the zones already past are released at once when it starts.
    last = instant if local is None else latest_due(local, _audience_zones(state, ctx))
    if last < ctx.now - SCHEDULE_GRACE:
        field = "send_at_local" if command.send_at_local is not None else "send_at"
        raise InvalidCommandError(field, "the send time is in the past")
    throttle = state.plan.throttle
    if throttle is not None and throttle.end_at is not None and throttle.end_at <= instant:
        raise InvalidCommandError(
            "plan.throttle.end_at", "the end date must be after the send time"
        )
    return [
        emit(
            MessageScheduled,
            send_at=instant,
            send_at_local=local,
            default_time_zone=ctx.default_time_zone,
            send_now=command.send_now,
        )
    ]


def _unschedule(
    command: UnscheduleMessage, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """A scheduled message that has not started goes back to draft."""
    if state.status is MessageStatus.DRAFT:
        return []
    if state.status is not MessageStatus.SCHEDULED:
        raise _refuse(command, state)
    return [emit(MessageUnscheduled)]


def _discard(
    command: DiscardDraft, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """Only a draft can be discarded; that is final (a copy of it can still be made)."""
    if state.status is MessageStatus.DISCARDED:
        return []
    if state.status is not MessageStatus.DRAFT:
        raise _refuse(command, state)
    return [emit(DraftDiscarded)]


def _pause(command: PauseMessage, state: MessageState, ctx: Context, emit: Emitter) -> list[Event]:
    """Only a sending message can be paused; from then on nothing is released."""
    if state.status is MessageStatus.PAUSED:
        return []
    if state.status is not MessageStatus.SENDING:
        raise _refuse(command, state)
    return [emit(MessagePaused, reason=command.reason)]


def _resume(
    command: ResumeMessage, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """Only a paused message can be resumed; sending then continues (rules in core.plan)."""
    if state.status is MessageStatus.SENDING:
        return []
    if state.status is not MessageStatus.PAUSED:
        raise _refuse(command, state)
    return [emit(MessageResumed)]


def _cancel(
    command: CancelMessage, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """A scheduled, sending or paused message can be canceled; that is final."""
    if state.status is MessageStatus.CANCELED:
        return []
    if state.status not in _CANCELABLE:
        raise _refuse(command, state)
    return [emit(MessageCanceled, reason=command.reason)]


def _copy(command: CopyMessage, state: MessageState, ctx: Context, emit: Emitter) -> list[Event]:
    """Any message can be copied as a new draft with the same content, plan and audience.

    The copy's stream stands alone: its draft, its exclusions (the original's own, plus with
    ``exclude_delivered`` everyone who may have received the original, by contact id and by
    normalized address) and its audience (everyone not removed from the original). The original
    records the copy. Events go to two message ids; each carries its own ``message_id``.
    """
    if command.new_message_id == state.message_id:
        raise InvalidCommandError("new_message_id", "a copy needs a new message id")
    book = state.book
    copy = _emitter(0, command.new_message_id, command, ctx)
    events: list[Event] = [
        emit(
            MessageCopied,
            copy_id=command.new_message_id,
            exclude_delivered=command.exclude_delivered,
        ),
        copy(
            DraftCreated,
            account_id=state.account_id,
            content=state.content,
            plan=state.plan,
            copied_from=state.message_id,
        ),
    ]
    if ctx.audience is None:
        # The contacts' data is not in the state (core/book.py): the shell reads it back.
        raise ValueError("a copy is decided with the audience's contacts in Context.audience")
    audience = ctx.audience
    excluded_ids = set(book.excluded_ids)
    excluded_addresses = set(book.excluded_addresses)
    if command.exclude_delivered:
        received = set(book.ids_with(MAY_HAVE_RECEIVED))
        excluded_ids.update(received)
        # Contact emails are stored stripped, so lower() is normalize_address() here.
        excluded_addresses.update(c.email.lower() for c in audience if c.contact_id in received)
    # Sorted: set order varies between processes (string hashing), events must not.
    id_chunks = _chunks(sorted(excluded_ids))
    address_chunks = _chunks(sorted(excluded_addresses))
    for i in range(max(len(id_chunks), len(address_chunks))):
        events.append(
            copy(
                RecipientsExcluded,
                contact_ids=tuple(id_chunks[i]) if i < len(id_chunks) else (),
                addresses=tuple(address_chunks[i]) if i < len(address_chunks) else (),
                source_message_id=state.message_id,
            )
        )
    for chunk in _chunks(list(audience)):
        events.append(copy(RecipientsAdded, contacts=tuple(chunk)))
    return events


def _require_open(command: Command, state: MessageState) -> None:
    if state.status not in _OPEN:
        raise _refuse(command, state)


def _add(command: AddRecipients, state: MessageState, ctx: Context, emit: Emitter) -> list[Event]:
    """Contacts join the audience in draft, scheduled, sending and paused messages.

    Each contact named is sorted by :func:`core.audience.sort_added`: new (or removed earlier)
    contacts join, pending ones with changed data are updated, the rest is left as it is (a
    released or delivered contact is never added again, never twice). The event carries the
    report; a chunk that changes nothing is a no-op.
    """
    _require_open(command, state)
    chunk = sort_added(command.contacts, state.book)
    if not chunk.record:
        return []
    return [emit(RecipientsAdded, contacts=chunk.record, report=chunk.report)]


def _remove(
    command: RemoveRecipients, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """Pending contacts leave the audience; removing anyone else changes nothing that happened."""
    _require_open(command, state)
    report = sort_removed(command.contact_ids, state.book.status_of)
    if not report.removed:
        return []
    return [emit(RecipientsRemoved, contact_ids=report.removed)]


def _outcomes(
    command: RecordDeliveryOutcomes, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """Released recipients get one final outcome each: delivered, failed (why) or unknown; or
    they are returned (delivery did not hand them to SMTP: paused or canceled first), which
    makes them pending again (released again after a resume; "not sent, canceled" after a cancel).

    Outcomes are accepted in any status (mail handed over before a pause or cancel still
    finishes); an outcome for a contact that is not waiting for one is ignored, and so is a
    return for a release that is not the contact's latest.
    """
    book = state.book
    # The first outcome named for a contact counts (dict.fromkeys drops repeats within a list).
    seen: set[str] = set()

    def waiting(ids: Iterable[str]) -> list[str]:
        # The hot path of outcomes: one vectorized lookup of the chunk, one byte per contact.
        found = [
            cid for cid in book.with_status(list(ids), RecipientStatus.RELEASED) if cid not in seen
        ]
        seen.update(found)
        return found

    delivered = waiting(dict.fromkeys(command.delivered))
    failed_ids = set(waiting(dict.fromkeys(f.contact_id for f in command.failed)))
    failed = []
    for failure in command.failed:
        if failure.contact_id in failed_ids:
            failed.append(failure)
            failed_ids.discard(failure.contact_id)
    unknown = waiting(dict.fromkeys(command.unknown))
    # A return names the release it is for: one for an older release (the contact was given
    # back and released again since) is stale and ignored.
    returned = waiting(
        dict.fromkeys(
            r.contact_id
            for r in command.returned
            if book.is_current_release(r.contact_id, r.release)
        )
    )
    events: list[Event] = []
    if delivered:
        events.append(emit(RecipientsDelivered, contact_ids=tuple(delivered)))
    if failed:
        failures: tuple[FailedRecipient, ...] = tuple(failed)
        events.append(emit(RecipientsFailed, failures=failures))
    if unknown:
        events.append(emit(RecipientsOutcomeUnknown, contact_ids=tuple(unknown)))
    if returned:
        events.append(emit(RecipientsReturned, contact_ids=tuple(returned)))
    return events


#: A test send is of the message as it stands before the real send: draft or scheduled.
_TESTABLE = TESTABLE_STATUSES


def _test_send(
    command: SendTestMessage, state: MessageState, ctx: Context, emit: Emitter
) -> list[Event]:
    """A draft or scheduled message can be sent as a test to a few addresses (the shell checks
    them against the account's allowed list); recorded in the history with who asked, never
    among the recipients. A contact named for its merge data must be in the audience."""
    if state.status not in _TESTABLE:
        raise _refuse(command, state)
    if command.contact_id is not None and command.contact_id not in state.book:
        raise InvalidCommandError("contact_id", "the contact is not in the audience")
    addresses = tuple(dict.fromkeys(a.strip() for a in command.addresses))
    return [
        emit(
            TestSendRequested,
            addresses=addresses,
            contact_id=command.contact_id,
            status=state.status.value,
        )
    ]
