"""What each event does to the read views: a pure function of the committed history.

No I/O here. :class:`Projector` folds a partition's events with the core (:func:`core.evolve`)
and, for each event, records in a :class:`Batch` the rows it changes:

* **history** (one row per event): who caused it, when, what it said;
* **recipients** (one row per contact of a message): the contact's state (the core's
  :class:`core.RecipientStatus`), its reason, its batch and its timestamps;
* **messages** (one row per message): everything the *Email Sent*, *Scheduled* and *Drafts* lists
  and their hover details show, computed from the folded state at the end of the batch.

Changes to one recipient within a batch are coalesced into one row change (the last state wins;
``released_at`` and ``batch`` are kept), so a catch-up through many events writes each row once.
Whether a row already exists in the database is known from the fold (the contact was in the book
before the batch), so new rows can be COPYed and only existing ones updated.

The recipients' states are exactly the core's: after any prefix of the history, the state of
every row equals ``state.book.status_of(contact_id)`` of a fresh fold (tested).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

import orjson

from core import MessageState, RecipientStatus, evolve
from core.book import Transition
from core.views import (
    LISTS,
    audience_count,
    first_release_at,
    next_batch_at,
    zone_times,
    zones,
)
from schemas import (
    Actor,
    Event,
    RecipientsAdded,
    RecipientsReleased,
)

__all__ = [
    "ACTOR_COLUMNS",
    "HISTORY_COLUMNS",
    "JSON_COLUMNS",
    "LISTS",
    "MESSAGE_COLUMNS",
    "RECIPIENT_COLUMNS",
    "Batch",
    "MessageRow",
    "Projector",
    "RecipientPatch",
    "attributes_json",
    "history_row",
    "message_row",
    "storable",
]


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One row of ``view_messages``: its fields are the table's columns, in the table's order.

    The one list of the columns: :data:`MESSAGE_COLUMNS` (what the store COPYs and the reader
    selects) is derived from these fields, and :func:`message_row` fills them by name, so a
    column added here is written, read and checked by mypy everywhere at once.
    """

    message_id: UUID
    account_id: str
    status: str
    name: str
    subject: str
    from_address: str
    from_name: str | None
    mode: str
    send_at: datetime | None
    send_at_local: datetime | None
    send_now: bool | None
    default_time_zone: str | None
    throttle_batch_size: int | None
    throttle_interval_seconds: int | None
    end_at: datetime | None
    missed_zone_policy: str
    release_rate: int
    copied_from: UUID | None
    created_at: datetime
    #: Actors as JSON text (``_actor_json``): the reader decodes :data:`ACTOR_COLUMNS`.
    created_by: str | None
    started_at: datetime | None
    paused_at: datetime | None
    paused_by: str | None
    pause_reason: str | None
    canceled_at: datetime | None
    canceled_by: str | None
    cancel_reason: str | None
    sent_at: datetime | None
    audience: int
    pending: int
    released: int
    delivered: int
    failed: int
    skipped: int
    removed: int
    excluded: int
    unknown: int
    current_batch: int | None
    batch_remaining: int | None
    next_batch_at: datetime | None
    zones_pending: list[str] | None
    zones_done: list[str] | None
    last_sequence: int
    updated_at: datetime
    #: recipient_timezone: the first zone's due time and each zone's, as JSON text
    #: (migration 0012).
    first_release_at: datetime | None
    zone_times: str | None

    def values(self) -> tuple[Any, ...]:
        """The row as the store writes it: the values in :data:`MESSAGE_COLUMNS` order."""
        values: tuple[Any, ...] = _MESSAGE_VALUES(self)
        return values


#: The columns of ``view_messages``, in order: the fields of :class:`MessageRow`.
MESSAGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(MessageRow))
#: The columns of ``view_messages`` that hold an actor as JSON text.
ACTOR_COLUMNS: tuple[str, ...] = ("created_by", "paused_by", "canceled_by")
#: The columns of ``view_messages`` that hold JSON text the reader decodes.
JSON_COLUMNS: tuple[str, ...] = (*ACTOR_COLUMNS, "zone_times")
_MESSAGE_VALUES = attrgetter(*MESSAGE_COLUMNS)

RECIPIENT_COLUMNS: tuple[str, ...] = (
    "message_id",
    "contact_id",
    "email",
    "time_zone",
    "state",
    "reason",
    "batch",
    "added_at",
    "released_at",
    "state_at",
    "sequence",
    # The contact's merge attributes as ASCII JSON (NULL when it has none): what a preview of
    # the mail for this contact renders (migration 0010).
    "attributes",
)

HISTORY_COLUMNS: tuple[str, ...] = (
    "message_id",
    "sequence",
    "event_id",
    "type",
    "occurred_at",
    "actor_kind",
    "actor_account_id",
    "actor_user_id",
    "actor_service",
    "actor_display_name",
    "causation_id",
    "correlation_id",
    "detail",
)

_ENVELOPE = {
    "type",
    "schema_version",
    "event_id",
    "message_id",
    "sequence",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "actor",
}
# Per-contact lists are not repeated in the history view (the recipients view holds each
# contact's state; the full records are exported from the log by the CLI): their size is.
_LISTS = ("contacts", "contact_ids", "failures", "addresses")
# A chunk's report (schemas.audience) lists up to a chunk of ids per outcome: the history keeps
# its counts; the ids stay on the event.
_EXCLUDED = _ENVELOPE | set(_LISTS) | {"report"}

_REASONED = frozenset({RecipientStatus.FAILED, RecipientStatus.SKIPPED})


# ---------------------------------------------------------------- values Postgres cannot hold
#
# Postgres text (and jsonb) cannot hold U+0000, and UTF-8 cannot carry a lone surrogate
# (U+D800..U+DFFF, which a JSON "\ud800" escape decodes to); jsonb has no NaN or Infinity. Old
# histories hold such values (the edge accepted them), so every text a row carries goes through
# `storable`: each such character becomes U+FFFD (the replacement character), deterministically,
# so a rebuild writes the same rows. The history view keeps the exact original: its `detail`
# gains `"unstorable": {path: original as ASCII-escaped JSON}` (docs/projections.md).

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with every character Postgres text cannot hold (NUL, lone surrogates) replaced
    by U+FFFD; the same object when there is none (the common case costs one scan)."""
    if text.isascii():
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def _storable_opt(text: str | None) -> str | None:
    return None if text is None else storable(text)


def attributes_json(attributes: dict[str, Any]) -> str:
    """The text of a recipient's ``attributes`` column: ASCII JSON, compact (every character
    Postgres cannot hold is escaped, so it is storable), exactly
    ``json.dumps(attributes, separators=(",", ":"))``.

    orjson writes those same bytes, about six times faster, for the common attributes: text that
    is printable ASCII (orjson does not escape DEL nor anything past ASCII; ``json`` does),
    integers within 64 bits, booleans and nulls. Anything else (a float, whose spelling differs;
    other text; a larger integer, which orjson refuses) goes to ``json.dumps``
    (tests/projections/test_attributes_json.py).
    """
    try:
        data = orjson.dumps(attributes)
    except orjson.JSONEncodeError:
        data = b"\x80"  # not ASCII: the standard library's text
    if data.isascii() and b"\x7f" not in data and float not in map(type, attributes.values()):
        return data.decode()
    return json.dumps(attributes, separators=(",", ":"))


def _clean_json(value: Any, path: str, originals: dict[str, str]) -> Any:
    """``value`` (JSON-compatible) with unstorable strings and keys replaced and non-finite
    floats nulled; each replaced original is recorded under its path, ASCII-escaped."""
    if isinstance(value, str):
        clean = storable(value)
        if clean != value:
            originals[path] = json.dumps(value)
        return clean
    if isinstance(value, float) and not math.isfinite(value):
        originals[path] = json.dumps(value)  # "NaN", "Infinity": not JSON, kept as text
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = storable(key) if isinstance(key, str) else key
            if name != key:
                originals[f"{path}.{name}" if path else str(name)] = json.dumps(key)
            out[name] = _clean_json(item, f"{path}.{name}" if path else str(name), originals)
        return out
    if isinstance(value, list | tuple):
        return [_clean_json(item, f"{path}[{i}]", originals) for i, item in enumerate(value)]
    return value


def _actor_json(actor: Actor | None) -> str | None:
    if actor is None:
        return None
    clean = _clean_json(actor.model_dump(mode="python", exclude_none=True), "", {})
    return json.dumps(clean, separators=(",", ":"))


def history_row(event: Event) -> tuple[Any, ...]:
    """The history view's row of one event (columns: :data:`HISTORY_COLUMNS`).

    Text that Postgres cannot hold is stored with U+FFFD in its place; ``detail`` then carries
    ``"unstorable"``: each such field's path and its original value as ASCII-escaped JSON.
    """
    originals: dict[str, str] = {}
    detail = _clean_json(event.model_dump(mode="json", exclude=_EXCLUDED), "", originals)
    for name in _LISTS:
        items = getattr(event, name, None)
        if items is not None:
            detail[f"{name}_count"] = len(items)
    report = getattr(event, "report", None)
    if report is not None:
        detail["report"] = {k: len(v) for k, v in report if v}
    actor = event.actor
    actor_fields = (actor.account_id, actor.user_id, actor.service)
    for field_name, value in zip(("account_id", "user_id", "service"), actor_fields, strict=True):
        if value is not None and storable(value) != value:
            originals[f"actor.{field_name}"] = json.dumps(value)
    if originals:
        detail["unstorable"] = dict(sorted(originals.items()))
    return (
        event.message_id,
        event.sequence,
        event.event_id,
        storable(event.type),
        event.occurred_at,
        storable(actor.kind),
        storable(actor.account_id),
        _storable_opt(actor.user_id),
        _storable_opt(actor.service),
        _storable_opt(actor.display_name),
        event.causation_id,
        event.correlation_id,
        json.dumps(detail, sort_keys=True, separators=(",", ":")),
    )


def _numbered(batch: int | None) -> int | None:
    """A batch as people count it: the core numbers batches from 0, the views from 1."""
    return None if batch is None else batch + 1


def message_row(state: MessageState, updated_at: datetime) -> tuple[Any, ...]:
    """The messages view's row of one folded message, as the store writes it (the values of a
    :class:`MessageRow`, in :data:`MESSAGE_COLUMNS` order).

    Hover details: paused since and by whom, canceled at, the current batch and the next batch
    time (throttled), the zones done and pending (``recipient_timezone``), the end date.
    """
    book = state.book
    counts = book.counts
    plan = state.plan
    throttle = plan.throttle
    schedule = state.schedule
    status = state.status
    # The product rules of what a row shows are the core's (core/views.py).
    next_batch = next_batch_at(state)
    zoned = zones(state)
    zones_pending, zones_done = (None, None) if zoned is None else zoned
    audience = audience_count(book)
    content = state.content
    return MessageRow(
        message_id=state.message_id,
        account_id=storable(state.account_id),
        status=status.value,
        name=storable(content.name),
        subject=storable(content.subject),
        from_address=storable(content.from_address),
        from_name=_storable_opt(content.from_name),
        mode=plan.mode,
        send_at=schedule.send_at if schedule is not None else None,
        send_at_local=schedule.send_at_local if schedule is not None else None,
        send_now=schedule.send_now if schedule is not None else None,
        default_time_zone=(
            _storable_opt(schedule.default_time_zone) if schedule is not None else None
        ),
        throttle_batch_size=throttle.batch_size if throttle is not None else None,
        throttle_interval_seconds=throttle.interval_seconds if throttle is not None else None,
        end_at=throttle.end_at if throttle is not None else None,
        missed_zone_policy=plan.missed_zone_policy,
        release_rate=plan.release_rate,
        copied_from=state.copied_from,
        created_at=state.created_at,
        created_by=_actor_json(state.created_by),
        started_at=state.started_at,
        paused_at=state.paused_at,
        paused_by=_actor_json(state.paused_by),
        pause_reason=_storable_opt(state.pause_reason),
        canceled_at=state.canceled_at,
        canceled_by=_actor_json(state.canceled_by),
        cancel_reason=_storable_opt(state.cancel_reason),
        sent_at=state.sent_at,
        audience=audience,
        pending=counts[RecipientStatus.PENDING],
        released=counts[RecipientStatus.RELEASED],
        delivered=counts[RecipientStatus.DELIVERED],
        failed=counts[RecipientStatus.FAILED],
        skipped=counts[RecipientStatus.SKIPPED],
        removed=counts[RecipientStatus.REMOVED],
        excluded=counts[RecipientStatus.EXCLUDED],
        unknown=counts[RecipientStatus.UNKNOWN],
        current_batch=_numbered(state.batch),
        batch_remaining=state.batch_remaining if throttle is not None else None,
        next_batch_at=next_batch,
        zones_pending=None if zones_pending is None else [storable(z) for z in zones_pending],
        zones_done=None if zones_done is None else [storable(z) for z in zones_done],
        last_sequence=state.version,
        updated_at=updated_at,
        first_release_at=first_release_at(state),
        zone_times=_zone_times_json(state),
    ).values()


def _zone_times_json(state: MessageState) -> str | None:
    times = zone_times(state)
    if times is None:
        return None
    return json.dumps(
        [
            {"zone": storable(z.zone), "due_at": z.due_at.isoformat(), "pending": z.pending}
            for z in times
        ],
        separators=(",", ":"),
    )


class RecipientPatch:
    """The coalesced change of one recipient row within a batch.

    ``full``: the contact was (re)added in this batch, so every column is known and the row is
    written whole. Otherwise only ``state``, ``reason``, ``state_at`` and ``sequence`` are set,
    plus ``released_at``/``batch`` when it was released in this batch (``None`` keeps the stored
    value). ``existed``: the row was in the database before the batch (update, not insert).
    """

    __slots__ = (
        "added_at",
        "attributes",
        "batch",
        "contact_id",
        "email",
        "existed",
        "full",
        "message_id",
        "reason",
        "released_at",
        "sequence",
        "state",
        "state_at",
        "time_zone",
    )

    def __init__(self, message_id: UUID, contact_id: str, existed: bool) -> None:
        self.message_id = message_id
        self.contact_id = storable(contact_id)  # as stored (the key of its row)
        self.existed = existed
        self.full = False
        self.email: str | None = None
        self.time_zone: str | None = None
        self.attributes: str | None = None
        self.state: str = ""
        self.reason: str | None = None
        self.batch: int | None = None
        self.added_at: datetime | None = None
        self.released_at: datetime | None = None
        self.state_at: datetime | None = None
        self.sequence = 0

    def row(self) -> tuple[Any, ...]:
        """The row in :data:`RECIPIENT_COLUMNS` order."""
        return (
            self.message_id,
            self.contact_id,
            self.email,
            self.time_zone,
            self.state,
            self.reason,
            self.batch,
            self.added_at,
            self.released_at,
            self.state_at,
            self.sequence,
            self.attributes,
        )


@dataclass
class Batch:
    """The view changes of a run of events, coalesced; written in one transaction."""

    # message id -> contact id -> the contact's coalesced change
    recipients: dict[UUID, dict[str, RecipientPatch]] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    messages: set[UUID] = field(default_factory=set)
    events: int = 0
    patched: int = 0

    def __len__(self) -> int:
        """How many rows the batch will write (its size, for batch limits)."""
        return self.patched + len(self.history) + len(self.messages)

    def _patches(self) -> Iterator[RecipientPatch]:
        for patches in self.recipients.values():
            yield from patches.values()

    def inserts(self) -> list[tuple[Any, ...]]:
        """New recipient rows (COPY)."""
        return [p.row() for p in self._patches() if not p.existed]

    def rewrites(self) -> list[tuple[Any, ...]]:
        """Existing recipient rows written whole (a removed contact added again)."""
        return [p.row() for p in self._patches() if p.existed and p.full]

    def update_groups(self) -> dict[tuple[Any, ...], list[str]]:
        """Existing recipient rows whose state changed, grouped by their new values:
        (message, state, reason, batch, released_at, state_at, sequence) -> contact ids."""
        groups: dict[tuple[Any, ...], list[str]] = {}
        for message_id, patches in self.recipients.items():
            for p in patches.values():
                if p.existed and not p.full:
                    key = (
                        message_id,
                        p.state,
                        p.reason,
                        p.batch,
                        p.released_at,
                        p.state_at,
                        p.sequence,
                    )
                    found = groups.get(key)
                    if found is None:
                        groups[key] = [p.contact_id]
                    else:
                        found.append(p.contact_id)
        return groups

    def updates(self) -> list[tuple[Any, ...]]:
        """Existing recipient rows whose state changed."""
        return [p.row() for p in self._patches() if p.existed and not p.full]


@dataclass
class Projector:
    """The folded messages of one partition (a cache of the committed log, like the processor's)
    and the function from each next event to its view changes.

    ``apply`` consumes the previous state of the event's message (the core's ownership rule): if
    a batch is not written, the projector must be dropped and rebuilt from the log.
    """

    states: dict[UUID, MessageState] = field(default_factory=dict)
    updated_at: dict[UUID, datetime] = field(default_factory=dict)

    def apply(self, event: Event, batch: Batch | None = None) -> None:
        """Fold ``event``; with a ``batch``, record the rows it changes there.

        Raises :class:`core.EventOutOfOrderError` (before changing anything) for an event that
        is not the next of its message.
        """
        before = self.states.get(event.message_id)
        if batch is None:
            after = evolve(before, event)
            after.book.take_transitions()  # not recorded: forget them
            self.states[event.message_id] = after
            self.updated_at[event.message_id] = event.occurred_at
            return
        if before is not None and before.book.transitions is None:
            before.book.track()  # the projector reads the transitions the book reports
        after = evolve(before, event)  # raises before changing anything when out of order
        book = after.book
        if book.transitions is None:
            book.track()
        self.states[event.message_id] = after
        self.updated_at[event.message_id] = event.occurred_at
        batch.events += 1
        batch.history.append(history_row(event))
        batch.messages.add(event.message_id)
        transitions = book.take_transitions()
        if transitions:
            _record(batch, after, event, transitions)

    def message_rows(self, ids: Iterable[UUID]) -> list[tuple[Any, ...]]:
        return [message_row(self.states[m], self.updated_at[m]) for m in sorted(ids)]


_REMOVED = RecipientStatus.REMOVED
_PENDING = RecipientStatus.PENDING
_EXCLUDED_STATE = RecipientStatus.EXCLUDED
#: Why a contact is excluded: a copy made with exclude_delivered leaves out every contact (by id
#: or by address) that may have received the original (`copied_from` names it).
EXCLUDED_REASON = "may_have_received_original"


def _record(batch: Batch, after: MessageState, event: Event, transitions: list[Transition]) -> None:
    # The hot path of a catch-up: the book reports which contacts changed (core.book,
    # Transition); one dict lookup per contact, no enum or UUID hashing.
    reasons = after.book.reasons
    message_id = event.message_id
    at = event.occurred_at
    sequence = event.sequence
    patches = batch.recipients.get(message_id)
    if patches is None:
        patches = batch.recipients[message_id] = {}
    released = isinstance(event, RecipientsReleased)
    release_batch = event.batch if isinstance(event, RecipientsReleased) else None
    # The data of the contacts an add applied is in the event (the last one named wins).
    data = {c.contact_id: c for c in event.contacts} if isinstance(event, RecipientsAdded) else {}
    new = 0
    for cid, was, now, joined in transitions:
        patch = patches.get(cid)
        if patch is None:
            # A contact not yet touched in this batch has a row already unless it joins now.
            patch = patches[cid] = RecipientPatch(message_id, cid, was is not None)
            new += 1
        patch.state = now
        if now is _EXCLUDED_STATE:
            reason: str | None = EXCLUDED_REASON
        else:
            reason = reasons.get(cid) if now in _REASONED else None
        patch.reason = None if reason is None else storable(reason)
        patch.state_at = at
        patch.sequence = sequence
        if joined:
            contact = data[cid]
            patch.full = True
            patch.email = storable(contact.email)
            patch.time_zone = _storable_opt(contact.time_zone)
            attributes = contact.attributes
            patch.attributes = attributes_json(attributes) if attributes else None
            patch.added_at = at
            patch.released_at = None
            patch.batch = None
        elif released:
            patch.released_at = at
            patch.batch = _numbered(release_batch)
    batch.patched += new
