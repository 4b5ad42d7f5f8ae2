"""The records on the service's topics around the events: what goes into the processor
(`mailctl.commands`) and what comes out beside the events (`mailctl.command-results`,
`mailctl.dead-letter`). See docs/architecture.md for the topics and who writes them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID

from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import from_json

from schemas.audience import AudienceReport
from schemas.base import Actor, Record
from schemas.commands import Command
from schemas.events import Event
from schemas.fast import fast_chunk_record
from schemas.text import STORED, first_unsafe
from schemas.ticks import Tick
from schemas.values import TimeZoneName

__all__ = [
    "CommandRecord",
    "CommandResult",
    "CopiedEvent",
    "DeadLetter",
    "EventRef",
    "InputRecord",
    "ReadableIds",
    "Rejection",
    "decode_input",
    "readable_ids",
]


class CommandRecord(Record):
    """A command as published on `mailctl.commands`, keyed by its message id.

    The envelope carries what the core's context needs and must not fetch: who acts, the
    correlation id and the account's default time zone. `issued_at` is the publisher's clock and
    is information only: the processor decides at the record's timestamp, which the broker
    stamps on append (a LogAppendTime topic), so the service's clock is the only one in the
    history and a replay of the log decides the same (docs/dispatcher.md).
    """

    type: Literal["CommandRecord"] = "CommandRecord"
    schema_version: Literal[1] = 1
    command: Command
    actor: Actor
    issued_at: AwareDatetime
    correlation_id: UUID | None = None
    default_time_zone: TimeZoneName = "UTC"

    @model_validator(mode="after")
    def _actor_one_line(self) -> CommandRecord:
        # Actor itself has no text rule: the core writes actors from its state (a tick's planner
        # acts for the message's account). A command's actor is input, so it is checked here.
        for name in ("account_id", "user_id", "service", "display_name"):
            value = getattr(self.actor, name)
            reason = None if value is None else first_unsafe(value, multiline=False)
            if reason is not None:
                raise ValueError(f"actor.{name} {reason}")
        return self


class CopiedEvent(Record):
    """One event of a new message decided by a copy on the original's partition, forwarded on
    `mailctl.commands` under the new message's key so that its own partition's processor (its
    one writer) appends it. Carries the copy command's id for the audit trail."""

    type: Literal["CopiedEvent"] = "CopiedEvent"
    schema_version: Literal[1] = 1
    copy_command_id: UUID
    event: Event


InputRecord = Annotated[CommandRecord | Tick | CopiedEvent, Field(discriminator="type")]

_INPUT: TypeAdapter[CommandRecord | Tick | CopiedEvent] = TypeAdapter(InputRecord)


#: In the bytes of every AddRecipients record (a cheap test before the chunk's fast path).
_CHUNK_MARK = b'"AddRecipients"'


def decode_input(value: bytes) -> CommandRecord | Tick | CopiedEvent:
    """Decode a record of `mailctl.commands`; raises pydantic.ValidationError for bad input.

    A command is input: the text rules (schemas/text.py) apply. A copied event is the processor's
    own record of a history (a copy of an old draft holds the old draft's text), so it decodes as
    a stored record."""
    if isinstance(value, bytes) and _CHUNK_MARK in value:
        # An audience chunk: parsed and its contacts checked at once (schemas/fast.py). A record
        # the fast path is not sure of is validated as it was sent, below.
        fast = fast_chunk_record(value)
        if fast is not None:
            try:
                return _INPUT.validate_python(fast)
            except ValidationError:
                pass  # refused for something else: the errors are those of the record as sent
    try:
        raw = from_json(value)
    except (ValueError, TypeError):
        return _INPUT.validate_json(value)  # raises the ValidationError naming what is wrong
    if isinstance(raw, dict) and raw.get("type") == "CopiedEvent":
        return _INPUT.validate_python(raw, context=STORED)
    return _INPUT.validate_python(raw)


class ReadableIds(Record):
    """What a command record that cannot be decided still tells about itself: enough to answer
    its caller (who waits for a result by command id) with a rejection."""

    command_id: UUID
    message_id: UUID
    command_type: str = Field(default="unknown", max_length=200)
    correlation_id: UUID | None = None


def readable_ids(value: bytes | None) -> ReadableIds | None:
    """The command id and message id of a raw `CommandRecord`-shaped value, read leniently (the
    rest of the record may be invalid); None when they cannot be read: not JSON, not an object,
    no `command` object, an id that is not a UUID."""
    if value is None:
        return None
    try:
        raw: Any = json.loads(value)
        command = raw.get("command") if isinstance(raw, dict) else None
        if not isinstance(command, dict):
            return None
        kind = command.get("type")
        return ReadableIds(
            command_id=command.get("command_id"),
            message_id=command.get("message_id"),
            command_type=kind if isinstance(kind, str) and 0 < len(kind) <= 200 else "unknown",
            correlation_id=_uuid_or_none(raw.get("correlation_id")),
        )
    except (ValueError, RecursionError):  # not JSON or UTF-8, too deep, ids that are not UUIDs
        return None


def _uuid_or_none(value: Any) -> UUID | None:
    try:
        return UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


class EventRef(Record):
    """Which event a command produced (the events themselves are on `mailctl.events`)."""

    message_id: UUID
    sequence: int
    event_id: UUID
    type: str


class Rejection(Record):
    """Why a command was refused. ``code`` maps to HTTP: not_found 404, not_allowed and
    already_exists 409, invalid 422, forbidden 403 (an integrator acting for an account it was
    not granted, core/trust.py), conflict 409 (a well-formed command that a rule of the
    message's state or of the clock refuses: a send time now past, an end date not after the
    send time, a patched draft that breaks a rule between its members)."""

    code: Literal["not_found", "not_allowed", "already_exists", "invalid", "forbidden", "conflict"]
    message: str
    status: str | None = None
    allowed: tuple[str, ...] | None = None
    field: str | None = None


class CommandResult(Record):
    """The outcome of one command, on `mailctl.command-results` under the command's key, with
    the command id also as a record header. A repeated command id gets the first result again."""

    type: Literal["CommandResult"] = "CommandResult"
    schema_version: Literal[1] = 1
    command_id: UUID
    message_id: UUID
    command_type: str
    correlation_id: UUID | None = None
    outcome: Literal["accepted", "rejected"]
    status: str | None = Field(
        default=None, description="the message's status after the command; None if it has none"
    )
    sequence: int = Field(
        default=0, description="the message's last event sequence number after the command"
    )
    events: tuple[EventRef, ...] = ()
    rejection: Rejection | None = None
    decided: bool = Field(
        default=True,
        description="False for the answer to a dead-lettered record: nothing was decided, so "
        "the command id may still be decided by a later, valid record",
    )
    audience: AudienceReport | None = Field(
        default=None, description="add/remove recipients: what the chunk did to each contact"
    )


class ConsumedRecord(Protocol):
    """What a dead letter keeps of a consumed record: an aiokafka ConsumerRecord, or the
    decider's client-free Input."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class DeadLetter(Record):
    """A record a consumer could not decode or validate, kept with the error; processing goes on."""

    type: Literal["DeadLetter"] = "DeadLetter"
    schema_version: Literal[1] = 1
    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the record's key, decoded as UTF-8 with replacement")
    value: str = Field(description="the record's value, decoded as UTF-8 with replacement")
    error: str

    @classmethod
    def of(cls, record: ConsumedRecord, error: Exception) -> DeadLetter:
        """The dead letter of a consumed record that could not be handled, and why."""
        key, value = record.key, record.value
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=None if key is None else bytes(key).decode(errors="replace"),
            value="" if value is None else bytes(value).decode(errors="replace"),
            error=f"{type(error).__name__}: {error}",
        )
