"""Deterministic ids: the core never draws a random id.

An event's id is a function of (message id, sequence number), so deciding twice against the same
state yields the same ids, and a duplicate write is recognisable. A send's id is a function of
(message id, contact id): the delivery step claims it in the ledger before handing the mail to
SMTP, so one contact can never be sent the same message twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from hashlib import sha1
from uuid import UUID, uuid5

__all__ = ["EVENT_NAMESPACE", "SEND_NAMESPACE", "event_id", "send_id", "send_ids"]

EVENT_NAMESPACE = UUID("6f1c1d3e-5a0e-4c59-9a5e-3d5f0b8f4a01")
SEND_NAMESPACE = UUID("0b9e0c4a-7d21-4f7e-8d7b-2f6a9c1e5b02")


def event_id(message_id: UUID, sequence: int) -> UUID:
    """The id of the ``sequence``-th event of a message."""
    return uuid5(EVENT_NAMESPACE, f"{message_id}:{sequence}")


def send_id(message_id: UUID, contact_id: str) -> UUID:
    """The id of the one send of a message to a contact (unique key of the delivery ledger)."""
    return uuid5(SEND_NAMESPACE, f"{message_id}:{contact_id}")


def send_ids(message_id: UUID, contact_ids: Iterable[str]) -> Iterator[str]:
    """``str(send_id(message_id, c))`` for each contact id, computed without building UUID
    objects: the processor writes one per released recipient (the same uuid5, tested)."""
    prefix = SEND_NAMESPACE.bytes + f"{message_id}:".encode()
    for contact_id in contact_ids:
        digest = bytearray(sha1(prefix + contact_id.encode()).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = digest.hex()
        yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
