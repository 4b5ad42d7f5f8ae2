"""Commands: what people and services ask the message to do (imperative names).

Each command has a literal ``type`` that never changes and a ``schema_version``. The acting actor
and the clock are not part of a command: the shell knows them (authentication, its clock) and hands
them to the core in a context.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, NaiveDatetime, WithJsonSchema, model_validator

from schemas.base import MAX_CHUNK, CommandBase, Record
from schemas.text import ONE_LINE
from schemas.values import Contact, ContactId, ContactRef, Content, DeliveryPlan, FailedRecipient

__all__ = [
    "AddRecipients",
    "CancelMessage",
    "Command",
    "CopyMessage",
    "CreateDraft",
    "DiscardDraft",
    "DraftChange",
    "EditDraft",
    "PauseMessage",
    "Reason",
    "RecordDeliveryOutcomes",
    "RemoveRecipients",
    "ResumeMessage",
    "ScheduleMessage",
    "SendTime",
    "UnscheduleMessage",
]

#: A wall-clock time without offset (ISO 8601 `2026-12-24T09:00:00`): the JSON Schema says so,
#: since `format: date-time` would allow the offset this field refuses.
LocalDateTime = Annotated[
    NaiveDatetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,6})?)?$",
            "description": "a wall-clock time without UTC offset, e.g. 2026-12-24T09:00:00",
        }
    ),
]

#: Why an operator paused or canceled: one line, shown in the history and the pause details.
Reason = Annotated[str, Field(max_length=1000), ONE_LINE]


class DraftChange(Record):
    """What an edit of a draft changes: content, plan or both (only what is given changes).
    One rule for the command and for the API's request body (services/commands/bodies.py)."""

    content: Content | None = None
    plan: DeliveryPlan | None = None

    @model_validator(mode="after")
    def _something(self) -> DraftChange:
        if self.content is None and self.plan is None:
            raise ValueError("an edit changes content, plan or both")
        return self


class SendTime(Record):
    """When to send: exactly one of ``send_at`` (an instant), ``send_at_local`` (a wall-clock
    time) and ``send_now``. One rule for the command and for the API's request body."""

    send_at: AwareDatetime | None = None
    send_at_local: LocalDateTime | None = None
    send_now: bool = False

    @model_validator(mode="after")
    def _one_time(self) -> SendTime:
        given = (self.send_at is not None) + (self.send_at_local is not None) + self.send_now
        if given != 1:
            raise ValueError("give exactly one of send_at, send_at_local, send_now")
        return self


class CreateDraft(CommandBase):
    """Create a new draft with its content and delivery plan."""

    type: Literal["CreateDraft"] = "CreateDraft"
    schema_version: Literal[1] = 1
    content: Content
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)


class EditDraft(DraftChange, CommandBase):
    """Replace a draft's content and/or plan (only what is given changes)."""

    type: Literal["EditDraft"] = "EditDraft"
    schema_version: Literal[1] = 1


class ScheduleMessage(SendTime, CommandBase):
    """Schedule a draft: at an instant, at a local wall-clock time, or now.

    Exactly one of ``send_at`` (an instant), ``send_at_local`` (a wall-clock time read in the
    account's default zone, or in each recipient's zone in ``recipient_timezone`` mode) and
    ``send_now`` is given.
    """

    type: Literal["ScheduleMessage"] = "ScheduleMessage"
    schema_version: Literal[1] = 1


class UnscheduleMessage(CommandBase):
    """Take a scheduled message that has not started back to draft."""

    type: Literal["UnscheduleMessage"] = "UnscheduleMessage"
    schema_version: Literal[1] = 1


class DiscardDraft(CommandBase):
    """Throw a draft away: it leaves the Drafts list for good (its history stays)."""

    type: Literal["DiscardDraft"] = "DiscardDraft"
    schema_version: Literal[1] = 1


class PauseMessage(CommandBase):
    """Stop releasing recipients of a sending message at once."""

    type: Literal["PauseMessage"] = "PauseMessage"
    schema_version: Literal[1] = 1
    reason: Reason | None = None


class ResumeMessage(CommandBase):
    """Continue sending a paused message."""

    type: Literal["ResumeMessage"] = "ResumeMessage"
    schema_version: Literal[1] = 1


class CancelMessage(CommandBase):
    """Stop a scheduled, sending or paused message for good."""

    type: Literal["CancelMessage"] = "CancelMessage"
    schema_version: Literal[1] = 1
    reason: Reason | None = None


class CopyMessage(CommandBase):
    """Copy any message as a new draft under ``new_message_id`` (chosen by the shell).

    With ``exclude_delivered`` the copy excludes every contact (by id and by normalized address)
    that may have received the original: released, delivered, or with an unknown outcome.
    """

    type: Literal["CopyMessage"] = "CopyMessage"
    schema_version: Literal[1] = 1
    new_message_id: UUID
    exclude_delivered: bool = False


class AddRecipients(CommandBase):
    """Add a chunk of contacts to the audience."""

    type: Literal["AddRecipients"] = "AddRecipients"
    schema_version: Literal[1] = 1
    contacts: tuple[Contact, ...] = Field(min_length=1, max_length=MAX_CHUNK)


class RemoveRecipients(CommandBase):
    """Remove a chunk of contacts (by id) from the audience."""

    type: Literal["RemoveRecipients"] = "RemoveRecipients"
    schema_version: Literal[1] = 1
    contact_ids: tuple[ContactId, ...] = Field(min_length=1, max_length=MAX_CHUNK)


class RecordDeliveryOutcomes(CommandBase):
    """Record what the mail transport answered for released recipients (from the delivery step)."""

    type: Literal["RecordDeliveryOutcomes"] = "RecordDeliveryOutcomes"
    schema_version: Literal[1] = 1
    # Contacts by reference (ContactRef): outcomes name contacts the history already holds,
    # whatever the text rules were when they came in.
    delivered: tuple[ContactRef, ...] = Field(default=(), max_length=MAX_CHUNK)
    failed: tuple[FailedRecipient, ...] = Field(default=(), max_length=MAX_CHUNK)
    unknown: tuple[ContactRef, ...] = Field(default=(), max_length=MAX_CHUNK)

    @model_validator(mode="after")
    def _bounded(self) -> RecordDeliveryOutcomes:
        total = len(self.delivered) + len(self.failed) + len(self.unknown)
        if total == 0 or total > MAX_CHUNK:
            raise ValueError(f"between 1 and {MAX_CHUNK} outcomes per command")
        return self


Command = Annotated[
    CreateDraft
    | EditDraft
    | ScheduleMessage
    | UnscheduleMessage
    | DiscardDraft
    | PauseMessage
    | ResumeMessage
    | CancelMessage
    | CopyMessage
    | AddRecipients
    | RemoveRecipients
    | RecordDeliveryOutcomes,
    Field(discriminator="type"),
]
