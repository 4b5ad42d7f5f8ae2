"""The `audience` part of an add/remove recipients answer: counts and the ids concerned.

Modelled on Mailchimp's batch member results (`total_created`, `updated_members`, `errors`...):
every contact id the chunk named is in exactly one list; `counts` has each list's length. The
lists come from the core (core.audience) through the command's result, so a repeat of the command
(same Idempotency-Key, or a replay of the log) answers the same.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas import AudienceReport, RefusedContact

__all__ = ["AudienceAnswer", "InvalidContact"]

_CATEGORIES = (
    "added",
    "updated",
    "already_present",
    "duplicate_in_chunk",
    "duplicate_address",
    "removed",
    "not_present",
    "refused",
    "invalid",
)


class InvalidContact(BaseModel):
    """A contact (a CSV row) that could not become one, with why; `line` in a CSV file."""

    line: int | None = None
    contact_id: str | None = None
    reason: str


class AudienceAnswer(BaseModel):
    """What the chunk did to each contact id it named (see docs/api.md, "What a chunk did").

    `invalid` is always empty for the JSON API (a chunk with an invalid contact is refused whole
    with 422, naming the contact's index); a CSV import lists its invalid rows there.
    """

    counts: dict[str, int] = Field(description="the length of each list below")
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(
        default_factory=list, description="pending contacts whose data the chunk replaced"
    )
    already_present: list[str] = Field(default_factory=list)
    duplicate_in_chunk: list[str] = Field(
        default_factory=list, description="named again later in the chunk: the first one counts"
    )
    duplicate_address: list[str] = Field(
        default_factory=list,
        description="joined, but share their address with another contact: one copy is sent",
    )
    removed: list[str] = Field(default_factory=list)
    not_present: list[str] = Field(default_factory=list)
    refused: list[RefusedContact] = Field(default_factory=list)
    invalid: list[InvalidContact] = Field(default_factory=list)

    @classmethod
    def of(cls, report: AudienceReport) -> AudienceAnswer:
        lists = {name: list(getattr(report, name)) for name in _CATEGORIES if name != "invalid"}
        counts = {name: len(lists.get(name, ())) for name in _CATEGORIES}
        return cls(counts=counts, **lists)
