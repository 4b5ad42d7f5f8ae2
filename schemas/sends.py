"""The records of `<prefix>.sends`: what the processor hands to delivery (docs/delivery.md).

The processor writes them in the same Kafka transaction as the events that decide them, at the
same partition number as the message's commands and events (co-partitioned, keyed by message id):

* one :class:`MailContent` per message when it starts sending (``SendingStarted``): the content is
  fixed from scheduling on, and a body of up to 2 MB is written once, not once per recipient;
* one :class:`SendRecord` per released recipient (``RecipientsReleased``), in release order, with
  its deterministic send id (``core.send_id``): the delivery ledger's unique key.

And to `<prefix>.control`, one :class:`FenceRecord` per pause, resume or cancel (the fence).

A replay of the same commands topic writes the same records in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, TypeAdapter

from schemas.base import Record
from schemas.text import STORED
from schemas.values import Contact, Content

__all__ = [
    "FenceRecord",
    "FenceStatus",
    "MailContent",
    "SendRecord",
    "SendTopicRecord",
    "decode_send_topic",
    "send_records_json",
]


class MailContent(Record):
    """The content every send of a message is rendered from (merge fields applied per contact)."""

    type: Literal["MailContent"] = "MailContent"
    schema_version: Literal[1] = 1
    message_id: UUID
    account_id: str
    content: Content
    sequence: int = Field(description="the SendingStarted event's sequence number")


class SendRecord(Record):
    """One recipient released for delivery: hand this mail to SMTP exactly once."""

    type: Literal["Send"] = "Send"
    schema_version: Literal[1] = 1
    send_id: UUID
    message_id: UUID
    account_id: str
    released_at: AwareDatetime
    release_sequence: int = Field(description="the RecipientsReleased event's sequence number")
    contact: Contact


FenceStatus = Literal["sending", "paused", "canceled"]


class FenceRecord(Record):
    """A record of `<prefix>.control`: the message's status after a pause, resume or cancel,
    written in the transaction of that event. A delivery worker does not hand to SMTP a send
    released before ``sequence`` while the status is ``paused`` or ``canceled``."""

    type: Literal["Fence"] = "Fence"
    schema_version: Literal[1] = 1
    message_id: UUID
    status: FenceStatus
    sequence: int = Field(ge=1, description="the pause, resume or cancel event's sequence")

    def stops(self, release_sequence: int) -> bool:
        """True when a send of the release ``release_sequence`` must not be handed off: the
        message was paused or canceled after that release (nothing is released while paused,
        so a later release was made after a resume this worker has not read yet)."""
        return self.status != "sending" and release_sequence < self.sequence


SendTopicRecord = Annotated[MailContent | SendRecord, Field(discriminator="type")]

_SENDS: TypeAdapter[MailContent | SendRecord] = TypeAdapter(SendTopicRecord)


def decode_send_topic(value: bytes) -> MailContent | SendRecord:
    """Decode a record of `<prefix>.sends`; raises pydantic.ValidationError for bad input.

    Sends are written by the processor from its history, which may hold text accepted before the
    text rules (schemas/text.py): they decode as stored records, and delivery fails a send it
    cannot encode with its reason."""
    return _SENDS.validate_json(value, context=STORED)


def send_records_json(
    *,
    message_id: UUID,
    account_id: str,
    released_at: str,
    release_sequence: int,
    sends: Iterable[tuple[str, str]],
) -> Iterator[bytes]:
    """:class:`SendRecord` values serialized without building models: the processor writes one
    per released recipient, up to millions per message. ``released_at`` is the ISO instant;
    ``sends`` yields (send id as a string, the contact's ``model_dump_json()``). Each decodes to
    the same model as ``SendRecord(...).model_dump_json()`` (tested)."""
    head = (
        f'{{"type":"Send","schema_version":1,"message_id":"{message_id}",'
        f'"account_id":{json.dumps(account_id)},"released_at":"{released_at}",'
        f'"release_sequence":{release_sequence},"send_id":"'
    )
    for send_id, contact_json in sends:
        yield f'{head}{send_id}","contact":{contact_json}}}'.encode()
