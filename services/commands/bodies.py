"""The request bodies of the command endpoints (docs/api.md). Every rule a body shares with its
command lives once, in schemas/ (`SendTime`, `DraftChange`, `Reason`, `Contact` ...): a body
only adds what is the API's own (no ids, which the API derives; the chunk bounds' wording)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WrapValidator

from schemas import MAX_CHUNK, Contact, Content, DeliveryPlan
from schemas.commands import DraftPatch, Reason, SendTime
from schemas.fast import fast_input_contacts
from schemas.values import ContactId

__all__ = [
    "AddRecipientsBody",
    "CopyBody",
    "CreateMessageBody",
    "EditMessageBody",
    "EmptyBody",
    "ReasonBody",
    "RemoveRecipientsBody",
    "ScheduleBody",
    "Strict",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateMessageBody(Strict):
    """A new draft (`CreateDraft`)."""

    content: Content
    plan: DeliveryPlan = Field(default_factory=DeliveryPlan)


class EditMessageBody(DraftPatch):
    """What to change in a draft (`EditDraft`), as a JSON merge patch (RFC 7396): only the
    members given change (`{"content": {"subject": "New"}}`), a member set to null goes back to
    its default; the result is validated as a whole content and plan."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})


#: "Exactly one of" as JSON Schema: three shapes that exclude each other (the rule is
#: `SendTime`'s, checked on the way in; this states it in the document).
_ONE_SEND_TIME: dict[str, Any] = {
    "oneOf": [
        {
            "required": ["send_at"],
            "properties": {
                "send_at": {"type": "string"},
                "send_at_local": {"type": "null"},
                "send_now": {"const": False},
            },
        },
        {
            "required": ["send_at_local"],
            "properties": {
                "send_at": {"type": "null"},
                "send_at_local": {"type": "string"},
                "send_now": {"const": False},
            },
        },
        {
            "required": ["send_now"],
            "properties": {
                "send_at": {"type": "null"},
                "send_at_local": {"type": "null"},
                "send_now": {"const": True},
            },
        },
    ]
}


class ScheduleBody(SendTime):
    """When to send (`ScheduleMessage`). Exactly one of: `send_at` (an instant with its UTC
    offset), `send_at_local` (a wall-clock time without offset: in `recipient_timezone` mode read
    in each recipient's zone, else in the account's default zone), `send_now: true`."""

    model_config = ConfigDict(json_schema_extra=_ONE_SEND_TIME)


class ReasonBody(Strict):
    """Optional; the reason shows in the message's history and pause details."""

    reason: Reason | None = None


class EmptyBody(Strict):
    """No fields: send no body, or `{}`."""


class CopyBody(Strict):
    """`exclude_delivered`: leave out every contact that may have received the original
    (released, delivered, or with an unknown outcome)."""

    exclude_delivered: bool = Field(default=False, strict=True)


class AddRecipientsBody(Strict):
    # Checked by the contacts' fast path first (schemas/fast.py), pydantic the referee.
    contacts: Annotated[
        list[Contact], Field(min_length=1, max_length=MAX_CHUNK), WrapValidator(fast_input_contacts)
    ] = Field(description=f"1 to {MAX_CHUNK} contacts; a larger audience is sent as several chunks")


class RemoveRecipientsBody(Strict):
    contact_ids: list[ContactId] = Field(
        min_length=1, max_length=MAX_CHUNK, description=f"1 to {MAX_CHUNK} contact ids"
    )
