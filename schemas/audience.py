"""What happened to each contact of an audience chunk (recorded on the event, answered by the API).

Modelled on Mailchimp's batch member results: every contact id of an ``AddRecipients`` or
``RemoveRecipients`` chunk lands in exactly one list, so an integrator never has to guess why a
contact did not join. The lists are decided by :mod:`core.audience` (see docs/api.md).
"""

from __future__ import annotations

from pydantic import Field

from schemas.base import MAX_CHUNK, Record
from schemas.values import ContactId

__all__ = ["AudienceReport", "RefusedContact"]

_Ids = tuple[ContactId, ...]


class RefusedContact(Record):
    """A contact of the chunk whose change was refused, with the reason."""

    contact_id: ContactId
    reason: str = Field(min_length=1, max_length=300)


class AudienceReport(Record):
    """The fate of every contact id named by one audience chunk (each id in one list).

    Adding: ``added`` joined the audience; ``updated`` were pending (not yet released) and now
    carry the chunk's data; ``already_present`` were in the audience with the same data;
    ``duplicate_in_chunk`` were named again later in the same chunk (the first occurrence counts);
    ``duplicate_address`` joined the audience but share their normalized address with another
    contact of the message, so only one of them is ever sent the mail; ``refused`` had changed
    data but can no longer change (released, delivered, excluded...). Removing: ``removed`` left
    the audience; ``not_present`` were never in it; ``refused`` are not pending (what happened
    stays).
    """

    added: _Ids = Field(default=(), max_length=MAX_CHUNK)
    updated: _Ids = Field(default=(), max_length=MAX_CHUNK)
    already_present: _Ids = Field(default=(), max_length=MAX_CHUNK)
    duplicate_in_chunk: _Ids = Field(default=(), max_length=MAX_CHUNK)
    duplicate_address: _Ids = Field(default=(), max_length=MAX_CHUNK)
    removed: _Ids = Field(default=(), max_length=MAX_CHUNK)
    not_present: _Ids = Field(default=(), max_length=MAX_CHUNK)
    refused: tuple[RefusedContact, ...] = Field(default=(), max_length=MAX_CHUNK)
