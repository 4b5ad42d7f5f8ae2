"""The records on the service's topics around the events: what goes into the processor
(`mailctl.commands`) and what comes out beside the events (`mailctl.command-results`,
`mailctl.dead-letter`). See docs/architecture.md for the topics and who writes them.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, TypeAdapter

from schemas.audience import AudienceReport
from schemas.base import Actor, Record
from schemas.commands import Command
from schemas.events import Event
from schemas.ticks import Tick
from schemas.values import TimeZoneName

__all__ = [
    "CommandRecord",
    "CommandResult",
    "CopiedEvent",
    "DeadLetter",
    "EventRef",
    "InputRecord",
    "Rejection",
    "decode_input",
]


class CommandRecord(Record):
    """A command as published on `mailctl.commands`, keyed by its message id.

    The envelope carries what the core's context needs and must not fetch: who acts, when the
    command was issued (the processor decides with this instant, never with its own clock, so a
    replay decides the same), the correlation id and the account's default time zone.
    """

    type: Literal["CommandRecord"] = "CommandRecord"
    schema_version: Literal[1] = 1
    command: Command
    actor: Actor
    issued_at: AwareDatetime
    correlation_id: UUID | None = None
    default_time_zone: TimeZoneName = "UTC"


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


def decode_input(value: bytes) -> CommandRecord | Tick | CopiedEvent:
    """Decode a record of `mailctl.commands`; raises pydantic.ValidationError for bad input."""
    return _INPUT.validate_json(value)


class EventRef(Record):
    """Which event a command produced (the events themselves are on `mailctl.events`)."""

    message_id: UUID
    sequence: int
    event_id: UUID
    type: str


class Rejection(Record):
    """Why a command was refused. ``code`` maps to HTTP: not_found 404, not_allowed and
    already_exists 409, invalid 422."""

    code: Literal["not_found", "not_allowed", "already_exists", "invalid"]
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
    audience: AudienceReport | None = Field(
        default=None, description="add/remove recipients: what the chunk did to each contact"
    )


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
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: Exception,
    ) -> DeadLetter:
        """The dead letter of a consumed record that could not be handled, and why."""
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else bytes(key).decode(errors="replace"),
            value="" if value is None else bytes(value).decode(errors="replace"),
            error=f"{type(error).__name__}: {error}",
        )
