"""Events: what happened to a message (past participles), in its own ordered stream.

Every event carries the envelope of :class:`schemas.base.EventBase`. Recipient events carry chunks
of at most :data:`schemas.base.MAX_CHUNK` contacts. Events decided from a command have that
command's id as ``causation_id``; events planned from a clock tick have the tick's id.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, NaiveDatetime

from schemas.audience import AudienceReport
from schemas.base import MAX_CHUNK, EventBase
from schemas.values import (
    Contact,
    ContactRef,
    Content,
    DeliveryPlan,
    FailedRecipient,
    SkipReason,
    TimeZoneName,
)

__all__ = [
    "BatchStarted",
    "DraftCreated",
    "DraftDiscarded",
    "DraftEdited",
    "Event",
    "MessageCanceled",
    "MessageCopied",
    "MessagePaused",
    "MessageResumed",
    "MessageScheduled",
    "MessageSent",
    "MessageUnscheduled",
    "RecipientsAdded",
    "RecipientsDelivered",
    "RecipientsExcluded",
    "RecipientsFailed",
    "RecipientsOutcomeUnknown",
    "RecipientsReleased",
    "RecipientsRemoved",
    "RecipientsReturned",
    "RecipientsSkipped",
    "SendingStarted",
    "TestSendRequested",
]

#: Events name contacts by reference: the core writes them from its state, so an id from an old
#: history (accepted before the text rules of schemas/text.py) must still be writable.
ContactChunk = tuple[ContactRef, ...]


class DraftCreated(EventBase):
    """A draft came to be, owned by ``account_id``; a copy names the message it was copied from.

    Version 2 nests content and plan (version 1 had flat fields; see ``schemas.upcasting``).
    """

    type: Literal["DraftCreated"] = "DraftCreated"
    schema_version: Literal[2] = 2
    account_id: str = Field(min_length=1, max_length=200)
    content: Content
    plan: DeliveryPlan
    copied_from: UUID | None = None


class DraftEdited(EventBase):
    """A draft's content and plan now read as given."""

    type: Literal["DraftEdited"] = "DraftEdited"
    schema_version: Literal[1] = 1
    content: Content
    plan: DeliveryPlan


class MessageScheduled(EventBase):
    """The message will start at ``send_at``.

    In ``recipient_timezone`` mode ``send_at_local`` is the wall-clock time each recipient gets it
    in their zone and ``send_at`` is that time in the account's default zone.
    ``default_time_zone`` is the account's zone at scheduling, used for contacts without a zone.
    """

    type: Literal["MessageScheduled"] = "MessageScheduled"
    schema_version: Literal[1] = 1
    send_at: AwareDatetime
    send_at_local: NaiveDatetime | None = None
    default_time_zone: TimeZoneName
    send_now: bool = False


class MessageUnscheduled(EventBase):
    """The message is a draft again."""

    type: Literal["MessageUnscheduled"] = "MessageUnscheduled"
    schema_version: Literal[1] = 1


class DraftDiscarded(EventBase):
    """The draft was thrown away: final, nothing of it is ever sent."""

    type: Literal["DraftDiscarded"] = "DraftDiscarded"
    schema_version: Literal[1] = 1


class SendingStarted(EventBase):
    """The clock reached the send time (or the first zone's send time): the message is sending."""

    type: Literal["SendingStarted"] = "SendingStarted"
    schema_version: Literal[1] = 1


class MessagePaused(EventBase):
    """No further recipient is released until a resume; the actor is who paused it."""

    type: Literal["MessagePaused"] = "MessagePaused"
    schema_version: Literal[1] = 1
    reason: str | None = None


class MessageResumed(EventBase):
    """Sending continues; the pause lasted from the pause's ``occurred_at`` to this one's."""

    type: Literal["MessageResumed"] = "MessageResumed"
    schema_version: Literal[1] = 1


class MessageCanceled(EventBase):
    """The message is final: nothing more is released."""

    type: Literal["MessageCanceled"] = "MessageCanceled"
    schema_version: Literal[1] = 1
    reason: str | None = None


class MessageSent(EventBase):
    """Every due recipient has a final outcome and no zone or batch is left."""

    type: Literal["MessageSent"] = "MessageSent"
    schema_version: Literal[1] = 1
    delivered: int = Field(ge=0)
    failed: int = Field(ge=0)
    skipped: int = Field(ge=0)
    unknown: int = Field(ge=0)


class MessageCopied(EventBase):
    """On the original's stream: it was copied as the draft ``copy_id``."""

    type: Literal["MessageCopied"] = "MessageCopied"
    schema_version: Literal[1] = 1
    copy_id: UUID
    exclude_delivered: bool


class RecipientsAdded(EventBase):
    """Contacts joined the audience (pending, or excluded if they match the exclusion list), or,
    already pending, now carry new data.

    ``report`` (absent from events written before it existed) says what the chunk did to each
    contact id it named, so a replay answers as the live command did (see schemas.audience).
    """

    type: Literal["RecipientsAdded"] = "RecipientsAdded"
    schema_version: Literal[1] = 1
    contacts: tuple[Contact, ...] = Field(min_length=1, max_length=MAX_CHUNK)
    report: AudienceReport | None = None


class RecipientsRemoved(EventBase):
    """Pending contacts left the audience."""

    type: Literal["RecipientsRemoved"] = "RecipientsRemoved"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(min_length=1, max_length=MAX_CHUNK)


class RecipientsExcluded(EventBase):
    """These contact ids and normalized addresses never receive this message."""

    type: Literal["RecipientsExcluded"] = "RecipientsExcluded"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(default=(), max_length=MAX_CHUNK)
    addresses: tuple[str, ...] = Field(default=(), max_length=MAX_CHUNK)
    source_message_id: UUID | None = None


class BatchStarted(EventBase):
    """A throttle slot opened: up to ``size`` recipients go out in batch ``slot``."""

    type: Literal["BatchStarted"] = "BatchStarted"
    schema_version: Literal[1] = 1
    slot: int = Field(ge=0)
    slot_at: AwareDatetime
    size: int = Field(ge=1)


class RecipientsReleased(EventBase):
    """These contacts were handed to delivery (each one's send id is ``core.send_id``)."""

    type: Literal["RecipientsReleased"] = "RecipientsReleased"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(min_length=1, max_length=MAX_CHUNK)
    batch: int | None = None


class RecipientsSkipped(EventBase):
    """These pending contacts will not be sent this message, for ``reason``."""

    type: Literal["RecipientsSkipped"] = "RecipientsSkipped"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(min_length=1, max_length=MAX_CHUNK)
    reason: SkipReason


class RecipientsDelivered(EventBase):
    """The transport accepted the mail for these released contacts."""

    type: Literal["RecipientsDelivered"] = "RecipientsDelivered"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(min_length=1, max_length=MAX_CHUNK)


class RecipientsFailed(EventBase):
    """The transport refused these released contacts for good."""

    type: Literal["RecipientsFailed"] = "RecipientsFailed"
    schema_version: Literal[1] = 1
    failures: tuple[FailedRecipient, ...] = Field(min_length=1, max_length=MAX_CHUNK)


class RecipientsOutcomeUnknown(EventBase):
    """The transport's answer for these contacts was lost; they are never retried automatically."""

    type: Literal["RecipientsOutcomeUnknown"] = "RecipientsOutcomeUnknown"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(min_length=1, max_length=MAX_CHUNK)


class RecipientsReturned(EventBase):
    """These released contacts were not handed to the mail transport (the message was paused or
    canceled first): they are pending again, released again after a resume in their original
    order, and not sent if the message is canceled."""

    type: Literal["RecipientsReturned"] = "RecipientsReturned"
    schema_version: Literal[1] = 1
    contact_ids: ContactChunk = Field(min_length=1, max_length=MAX_CHUNK)


class TestSendRequested(EventBase):
    """An operator (the actor) asked for a test send of the message as it stood, to these
    addresses. Outside the audience: the fold changes nothing but the history; the hand-off to
    SMTP is the commands service's, after this event is committed (docs/api.md)."""

    __test__ = False  # not a test class, whatever pytest guesses from the name

    type: Literal["TestSendRequested"] = "TestSendRequested"
    schema_version: Literal[1] = 1
    addresses: tuple[str, ...] = Field(min_length=1, max_length=10)
    contact_id: ContactRef | None = None
    #: The message's status when the test was asked for (draft or scheduled).
    status: str


Event = Annotated[
    DraftCreated
    | DraftEdited
    | MessageScheduled
    | MessageUnscheduled
    | DraftDiscarded
    | SendingStarted
    | MessagePaused
    | MessageResumed
    | MessageCanceled
    | MessageSent
    | MessageCopied
    | RecipientsAdded
    | RecipientsRemoved
    | RecipientsExcluded
    | BatchStarted
    | RecipientsReleased
    | RecipientsSkipped
    | RecipientsDelivered
    | RecipientsFailed
    | RecipientsOutcomeUnknown
    | RecipientsReturned
    | TestSendRequested,
    Field(discriminator="type"),
]
