"""Audience chunks: what adding or removing a chunk of contacts does to each contact it names.

Rules (issue 11; docs/api.md "What a chunk did"):

* a contact new to the message (or removed earlier) joins it: ``added``, or ``duplicate_address``
  when another contact of the message (or an earlier one of the chunk) holds the same normalized
  address. Both join; the planner sends only one of them (the never-twice rule by address);
* a contact id named twice in one chunk: the first occurrence counts, the later ones are
  ``duplicate_in_chunk`` whatever data they carry (one chunk, one meaning per id);
* a contact already in the audience with the same data: ``already_present`` (nothing changes);
* with different data (address, zone or attributes): while it is pending (not yet released) the
  new data replaces the old one (``updated``; the mail it will get uses the new data); once it
  left pending (released, delivered, failed, skipped, excluded, unknown) the change is
  ``refused`` with the reason: what was sent, or decided, cannot change;
* removing: pending contacts are ``removed``; ids never in the audience are ``not_present``;
  contacts in any other state are ``refused`` (what happened stays).

Cost: one dict lookup per contact named, never O(audience).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from core.book import (
    C_PENDING,
    C_REMOVED,
    PENDING,
    STATUSES,
    RecipientBook,
    RecipientStatus,
    address_keys,
    fingerprint,
)
from schemas import (
    AddRecipients,
    AudienceReport,
    Command,
    Contact,
    Event,
    RecipientsAdded,
    RecipientsRemoved,
    RefusedContact,
    RemoveRecipients,
)

__all__ = ["AddedChunk", "chunk_report", "sort_added", "sort_removed"]


def _frozen_reason(status: RecipientStatus) -> str:
    return f"the contact is {status.value}: its data can no longer change"


@dataclass(frozen=True, slots=True)
class AddedChunk:
    """The contacts an add records (new, re-added and updated), and the report of the chunk."""

    record: tuple[Contact, ...]
    report: AudienceReport


def sort_added(contacts: Iterable[Contact], book: RecipientBook) -> AddedChunk:
    """Sort the contacts of an ``AddRecipients`` chunk against the message's book (only read)."""
    batch = contacts if isinstance(contacts, list | tuple) else list(contacts)
    # The chunk's lookups at once (core/index.py): current slots, and the first holder of each
    # address. Contact emails are stored stripped, so lower() is normalize_address() here.
    ids = [c.contact_id for c in batch]
    lowered = [c.email.lower() for c in batch]
    located = book.slots.find(ids)
    holding = book.first_holders_of(*address_keys(lowered))
    if not (located >= 0).any() and len(set(ids)) == len(ids) and len(set(lowered)) == len(lowered):
        # The common case: every contact is new to the message and the chunk names each id and
        # each address once. Each joins: ``duplicate_address`` when another contact of the
        # message holds its address (none of the book's holders is one of the chunk's ids).
        taken = (holding >= 0).tolist()
        return AddedChunk(
            record=tuple(batch),
            report=AudienceReport(
                added=tuple([cid for cid, t in zip(ids, taken, strict=True) if not t]),
                duplicate_address=tuple([cid for cid, t in zip(ids, taken, strict=True) if t]),
            ),
        )
    return _sort_each(batch, book, lowered, located.tolist(), holding.tolist())


def _sort_each(
    batch: Sequence[Contact],
    book: RecipientBook,
    lowered: list[str],
    found: list[int],
    holders: list[int],
) -> AddedChunk:
    """:func:`sort_added`, contact after contact (``found``: each one's slot, ``holders``: the
    first holder of each one's address; -1: none)."""
    status = book.status
    seen: set[str] = set()
    chunk_addresses: set[str] = set()
    record: list[Contact] = []
    added: list[str] = []
    updated: list[str] = []
    present: list[str] = []
    repeated: list[str] = []
    same_address: list[str] = []
    refused: list[RefusedContact] = []
    for i, contact in enumerate(batch):
        cid = contact.contact_id
        if cid in seen:
            repeated.append(cid)
            continue
        seen.add(cid)
        address = lowered[i]
        slot = found[i]
        code = C_REMOVED if slot < 0 else status[slot]
        if code == C_REMOVED:
            holder = holders[i]
            taken = (holder >= 0 and book.ids[holder] != cid) or address in chunk_addresses
            chunk_addresses.add(address)
            record.append(contact)
            (same_address if taken else added).append(cid)
        elif book.prints[slot] == fingerprint(contact):
            present.append(cid)
        elif code == C_PENDING:
            chunk_addresses.add(address)
            record.append(contact)
            updated.append(cid)
        else:
            refused.append(RefusedContact(contact_id=cid, reason=_frozen_reason(STATUSES[code])))
    return AddedChunk(
        record=tuple(record),
        report=AudienceReport(
            added=tuple(added),
            updated=tuple(updated),
            already_present=tuple(present),
            duplicate_in_chunk=tuple(repeated),
            duplicate_address=tuple(same_address),
            refused=tuple(refused),
        ),
    )


def sort_removed(
    contact_ids: Iterable[str], status_of: Callable[[str], RecipientStatus | None]
) -> AudienceReport:
    """Sort the ids of a ``RemoveRecipients`` chunk by each contact's status before it."""
    seen: set[str] = set()
    removed: list[str] = []
    absent: list[str] = []
    repeated: list[str] = []
    refused: list[RefusedContact] = []
    for cid in contact_ids:
        if cid in seen:
            repeated.append(cid)
            continue
        seen.add(cid)
        status = status_of(cid)
        if status is None:
            absent.append(cid)
        elif status is PENDING:
            removed.append(cid)
        else:
            refused.append(
                RefusedContact(
                    contact_id=cid,
                    reason=f"the contact is {status.value}: only pending contacts are removed",
                )
            )
    return AudienceReport(
        removed=tuple(removed),
        not_present=tuple(absent),
        duplicate_in_chunk=tuple(repeated),
        refused=tuple(refused),
    )


def chunk_report(
    command: Command, events: Sequence[Event], book: RecipientBook
) -> AudienceReport | None:
    """The report of an accepted audience command, from its events and the book *after* them.

    An add that recorded something carries its report on its event (a replay reads the same);
    an add or remove that produced no event changed nothing, so sorting it against the book now
    gives the answer it had. A remove's report is rebuilt from its event: the ids it removed, and
    the rest sorted against the book (unchanged for them).
    """
    if isinstance(command, AddRecipients):
        for event in events:
            if (
                isinstance(event, RecipientsAdded)
                and event.message_id == command.message_id
                and event.report is not None
            ):
                return event.report
        return sort_added(command.contacts, book).report
    if isinstance(command, RemoveRecipients):
        removed: set[str] = set()
        for event in events:
            if isinstance(event, RecipientsRemoved) and event.message_id == command.message_id:
                removed.update(event.contact_ids)

        def before(cid: str) -> RecipientStatus | None:
            return PENDING if cid in removed else book.status_of(cid)

        return sort_removed(command.contact_ids, before)
    return None
