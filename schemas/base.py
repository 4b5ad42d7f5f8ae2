"""Base models shared by every command, event and record on the log.

Every serialized record is a frozen pydantic model with ``extra="forbid"`` and a literal ``type``
field that never changes once published. Events carry the full envelope; commands carry their id
(the idempotency key, which becomes the events' causation id) and the message they address.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "JSON_INT",
    "MAX_CHUNK",
    "Actor",
    "CommandBase",
    "EventBase",
    "JsonInt",
    "Record",
]

#: The largest number of recipients one command or one event may carry. Audiences of millions
#: arrive as many chunks; a chunk of this size is a few hundred kilobytes of JSON, which stays well
#: below Kafka's default 1 MB record limit for ordinary contact ids and addresses.
MAX_CHUNK = 10_000


def _json_int(value: Any) -> Any:
    """An integer as JSON Schema has it: a number without a fractional part (``60`` or ``60.0``);
    not a boolean nor a text, which pydantic's lax mode would read as 1 or 60."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError(
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
            )
        return int(value)
    return value


#: The check of an integer that arrives as JSON (the API's bodies, the command topic); put after
#: the field's bounds in an ``Annotated`` (``Annotated[int, Field(ge=1), JSON_INT]``) so the
#: bounds stay JSON Schema's ``minimum``/``maximum`` inside an ``anyOf`` too.
JSON_INT = BeforeValidator(_json_int)
#: An integer field of a record that arrives as JSON.
JsonInt = Annotated[int, JSON_INT]


class Record(BaseModel):
    """A frozen, strict record: unknown fields are rejected, instances never change."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Actor(Record):
    """Who caused a command or event: an account's user, or one of the system's services."""

    kind: Literal["user", "service"]
    account_id: str = Field(min_length=1, max_length=200)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    service: str | None = Field(default=None, min_length=1, max_length=200)
    #: A user's name as people read it (an operator of the web UI), recorded with the event so
    #: the history and "paused by" show a person. Optional: older events have none.
    display_name: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _who(self) -> Actor:
        if self.kind == "user" and (self.user_id is None or self.service is not None):
            raise ValueError("a user actor names a user_id and no service")
        if self.kind == "service" and (self.service is None or self.user_id is not None):
            raise ValueError("a service actor names a service and no user_id")
        if self.kind == "service" and self.display_name is not None:
            raise ValueError("a display_name belongs to a user actor")
        return self


class EventBase(Record):
    """The envelope every event carries.

    ``message_id`` is also the Kafka key, so every event of one message lands in one partition
    and is totally ordered there; ``sequence`` numbers a message's events 1, 2, 3 ... and is
    assigned by the core from the state it decided against (one writer per message).
    """

    schema_version: int
    event_id: UUID
    message_id: UUID
    sequence: int = Field(ge=1)
    occurred_at: AwareDatetime
    correlation_id: UUID
    causation_id: UUID
    actor: Actor


class CommandBase(Record):
    """What every command carries: its own id (the idempotency key) and the message it targets."""

    schema_version: int
    command_id: UUID
    message_id: UUID
