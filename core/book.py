"""The recipient book: every contact of one message and the state each one is in.

Cost rule: a message may have millions of recipients, so every operation here costs in proportion
to the contacts it changes, never to the audience:

* each contact has one :class:`Entry` (its data, normalized address, queue and status), found by
  contact id in one dict lookup;
* pending entries wait in one FIFO queue per zone key (the contact's IANA zone, or ``""`` for
  "the account's default zone"); a queue is a list plus a head index;
* removal, exclusion and skips are lazy deletions: the entry stays in its queue with its new
  status and is passed over when the head reaches it, so each entry is passed over at most once.
  A removed contact that is added again gets a new entry at the back of its queue; the old one
  stays removed;
* counters per status and per queue are kept up to date on every transition;
* dedupe by address is a set of the normalized addresses already released;
* a released contact that delivery gives back (a pause or cancel reached the worker before the
  hand-off to SMTP) is pending again: it waits in its queue's ``returned`` list, kept in the
  order the contacts joined the queue (each entry has its ordinal there), which the planner
  reads before the rest of the queue, so the re-release keeps the original order.

Ownership rule: the book is mutable and owned by the fold. :func:`core.evolve` updates it in place
and returns a new frozen :class:`core.state.MessageState` that points to the same book; whoever
passes a state to ``evolve`` must not use the old state afterwards. :func:`core.plan` and
:func:`core.decide` only read it. :meth:`RecipientBook.snapshot` gives tests an O(audience) value
to compare two folds with.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from schemas import Contact, normalize_address

__all__ = ["Entry", "RecipientBook", "RecipientStatus", "ZoneQueue"]


class RecipientStatus(StrEnum):
    """The one visible state every recipient is in (rule 8 of the spec)."""

    PENDING = "pending"
    RELEASED = "released"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    REMOVED = "removed"
    EXCLUDED = "excluded"
    UNKNOWN = "unknown"


PENDING = RecipientStatus.PENDING
RELEASED = RecipientStatus.RELEASED
REMOVED = RecipientStatus.REMOVED
EXCLUDED = RecipientStatus.EXCLUDED
SKIPPED = RecipientStatus.SKIPPED

#: Statuses after which the contact may have received the message: a copy "excluding everyone
#: the original was delivered to" excludes these (a second copy is worse than a missing one).
MAY_HAVE_RECEIVED = frozenset(
    {RecipientStatus.RELEASED, RecipientStatus.DELIVERED, RecipientStatus.UNKNOWN}
)

_COMPACT_AT = 4096


class ZoneQueue:
    """Pending entries of one zone key, in the order they were added.

    ``due`` is when the zone's recipients are due in ``recipient_timezone`` mode (set while the
    message is scheduled or later; ``None`` in a draft).

    ``returned`` holds entries that were released and given back by delivery (pending again),
    sorted by their ordinal in the queue. Entries are released from the head in order, so every
    returned entry joined before every entry still in ``items`` from the head: reading
    ``returned`` first, then ``items``, is the original order.
    """

    __slots__ = ("added", "due", "head", "items", "key", "pending", "returned")

    def __init__(self, key: str, due: datetime | None) -> None:
        self.key = key
        self.items: list[Entry] = []
        self.head = 0
        self.pending = 0
        self.due = due
        self.added = 0
        self.returned: list[Entry] = []

    def live(self) -> Iterator[Entry]:
        """The pending entries in order, from the head, without changing anything."""
        for entry in self.returned:
            if entry.status is PENDING:
                yield entry
        items = self.items
        for i in range(self.head, len(items)):
            entry = items[i]
            # A pending entry released before is a returned one: it was read above.
            if entry.status is PENDING and not entry.released_in:
                yield entry

    def advance(self) -> None:
        """Move the head past entries that are no longer pending; compact now and then."""
        returned = self.returned
        if returned:
            done = 0
            while done < len(returned) and returned[done].status is not PENDING:
                done += 1
            if done:
                del returned[:done]
        items = self.items
        head = self.head
        end = len(items)
        while head < end and items[head].status is not PENDING:
            head += 1
        if head >= _COMPACT_AT and head * 2 >= end:
            del items[:head]
            head = 0
        self.head = head


class Entry:
    """One contact of the message: its data, normalized address, queue and visible status.

    ``order`` is its ordinal in its queue (the order it joined); ``released_in`` the sequence
    number of the ``RecipientsReleased`` event of its latest release (0: never released), which
    is the release number a delivery report names.
    """

    __slots__ = ("address", "contact", "contact_id", "order", "queue", "released_in", "status")

    def __init__(
        self, contact: Contact, address: str, queue: ZoneQueue | None, order: int = 0
    ) -> None:
        self.contact_id = contact.contact_id
        self.contact = contact
        self.address = address
        self.queue = queue
        self.status = PENDING
        self.order = order
        self.released_in = 0

    def __lt__(self, other: Entry) -> bool:
        # Only entries of one queue are compared (its returned list is sorted by ordinal).
        return self.order < other.order


class RecipientBook:
    """All contacts of a message with their status, pending queues and dedupe/exclusion sets."""

    __slots__ = (
        "by_address",
        "command_ids",
        "counts",
        "entries",
        "excluded_addresses",
        "excluded_ids",
        "more_by_address",
        "queues",
        "reasons",
        "released_addresses",
    )

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.reasons: dict[str, str] = {}
        self.queues: dict[str, ZoneQueue] = {}
        # Normalized address -> first contact id holding it; further holders (rare) in the second
        # dict, so a million unique addresses cost a million strings, not a million lists.
        self.by_address: dict[str, str] = {}
        self.more_by_address: dict[str, list[str]] = {}
        self.released_addresses: set[str] = set()
        self.excluded_ids: set[str] = set()
        self.excluded_addresses: set[str] = set()
        self.counts: dict[RecipientStatus, int] = dict.fromkeys(RecipientStatus, 0)
        # Ids of the commands already applied: a repeat of one is a no-op (see core.decide).
        self.command_ids: set[UUID] = set()

    # -- reading (decide, plan, views) ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many recipients are still waiting to be released or skipped."""
        return self.counts[PENDING]

    @property
    def outstanding(self) -> int:
        """How many released recipients still wait for the transport's outcome."""
        return self.counts[RELEASED]

    def __len__(self) -> int:
        return len(self.entries)

    def status_of(self, contact_id: str) -> RecipientStatus | None:
        """The contact's visible state, or ``None`` if it never joined this message."""
        entry = self.entries.get(contact_id)
        return None if entry is None else entry.status

    def reason_of(self, contact_id: str) -> str | None:
        """Why a skipped or failed contact was not delivered."""
        return self.reasons.get(contact_id)

    def contact(self, contact_id: str) -> Contact:
        """The contact's data as last added."""
        return self.entries[contact_id].contact

    def address_of(self, contact_id: str) -> str:
        """The contact's normalized address (dedupe and exclusion compare these)."""
        return self.entries[contact_id].address

    def ids_with(self, statuses: Iterable[RecipientStatus]) -> list[str]:
        """Contact ids in any of ``statuses``, in the order they joined (O(audience): copies)."""
        wanted = frozenset(statuses)
        return [cid for cid, entry in self.entries.items() if entry.status in wanted]

    # -- writing (only core.evolve calls these) -------------------------------------------------

    def _queue(self, key: str, due_for: Callable[[str], datetime | None]) -> ZoneQueue:
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = ZoneQueue(key, due_for(key))
        return queue

    def add(self, contacts: Iterable[Contact], due_for: Callable[[str], datetime | None]) -> None:
        """New (or previously removed) contacts become pending, unless they match an exclusion;
        a pending contact named again takes the new data (see core.audience).

        Contacts already in the book in any other state are left as they are: adding a released
        or delivered contact again never makes it pending again.
        """
        entries = self.entries
        counts = self.counts
        excluded_ids = self.excluded_ids
        excluded_addresses = self.excluded_addresses
        queue: ZoneQueue | None = None
        added = 0
        for contact in contacts:
            cid = contact.contact_id
            old = entries.get(cid)
            if old is not None and old.status is PENDING:
                self._update(old, contact, due_for)
                continue
            if old is not None and old.status is not REMOVED:
                continue
            # Contact emails are stored stripped, so lower() is normalize_address() here.
            address = contact.email.lower()
            if old is None:
                self._index_address(address, cid)
            else:
                counts[REMOVED] -= 1
                if old.address != address:
                    self._unindex_address(old.address, cid)
                    self._index_address(address, cid)
            if cid in excluded_ids or address in excluded_addresses:
                entry = Entry(contact, address, None)
                entry.status = EXCLUDED
                counts[EXCLUDED] += 1
            else:
                key = contact.time_zone or ""
                if queue is None or queue.key != key:
                    queue = self._queue(key, due_for)
                entry = Entry(contact, address, queue, queue.added)
                queue.added += 1
                queue.items.append(entry)
                queue.pending += 1
                added += 1
            entries[cid] = entry
        counts[PENDING] += added
        # Per-queue pending counts were kept above; nothing else depends on the audience size.

    def _update(
        self, entry: Entry, contact: Contact, due_for: Callable[[str], datetime | None]
    ) -> None:
        """A pending contact's data is replaced: address index, zone queue and exclusion follow."""
        cid = entry.contact_id
        address = contact.email.lower()
        if address != entry.address:
            self._unindex_address(entry.address, cid)
            self._index_address(address, cid)
        old_queue = entry.queue
        assert old_queue is not None  # a pending entry always waits in a queue
        key = contact.time_zone or ""
        if key == old_queue.key:
            entry.contact = contact
            entry.address = address
        else:
            # The old entry stays in its queue as a lazily deleted item (its status is no longer
            # pending); the contact waits at the back of its new zone's queue.
            entry.status = REMOVED
            old_queue.pending -= 1
            old_queue.advance()
            queue = self._queue(key, due_for)
            # Its ordinal in the new queue: a later return re-joins in this queue's order.
            entry = Entry(contact, address, queue, queue.added)
            queue.added += 1
            queue.items.append(entry)
            queue.pending += 1
            self.entries[cid] = entry
        if cid in self.excluded_ids or address in self.excluded_addresses:
            self._leave_pending((cid,), EXCLUDED)

    def _index_address(self, address: str, cid: str) -> None:
        """Remember who holds ``address`` (one id in the common case, a list on collisions)."""
        first = self.by_address.setdefault(address, cid)
        if first != cid:
            self.more_by_address.setdefault(address, []).append(cid)

    def _unindex_address(self, address: str, cid: str) -> None:
        if self.by_address.get(address) == cid:
            others = self.more_by_address.get(address)
            if others:
                self.by_address[address] = others.pop(0)
            else:
                del self.by_address[address]
        elif address in self.more_by_address:
            self.more_by_address[address].remove(cid)

    def holders_of(self, address: str) -> list[str]:
        """Contact ids whose normalized address is ``address``."""
        first = self.by_address.get(address)
        if first is None:
            return []
        return [first, *self.more_by_address.get(address, ())]

    def _leave_pending(self, ids: Iterable[str], new: RecipientStatus) -> list[str]:
        """Pending contacts among ``ids`` move to ``new``; returns those that moved."""
        entries = self.entries
        touched: set[ZoneQueue] = set()
        moved: list[str] = []
        for cid in ids:
            entry = entries.get(cid)
            if entry is None or entry.status is not PENDING:
                continue
            entry.status = new
            queue = entry.queue
            assert queue is not None  # a pending entry always waits in a queue
            queue.pending -= 1
            touched.add(queue)
            moved.append(cid)
        self.counts[PENDING] -= len(moved)
        self.counts[new] += len(moved)
        for queue in touched:
            queue.advance()
        return moved

    def remove(self, contact_ids: Iterable[str]) -> None:
        """Pending contacts leave the audience; anyone else is untouched (what happened stays)."""
        self._leave_pending(contact_ids, REMOVED)

    def exclude(self, contact_ids: Iterable[str], addresses: Iterable[str]) -> None:
        """Remember exclusions; pending contacts matching them become excluded now."""
        ids = list(contact_ids)
        normalized = [normalize_address(a) for a in addresses]
        self.excluded_ids.update(ids)
        self.excluded_addresses.update(normalized)
        for address in normalized:
            ids.extend(self.holders_of(address))
        self._leave_pending(ids, EXCLUDED)

    def release(self, contact_ids: Iterable[str], sequence: int = 0) -> int:
        """Pending contacts are handed to delivery; their addresses count as sent. Returns count.
        ``sequence`` is the release event's number (the release number of each send).

        The hot path of the planner: one dict lookup per contact.
        """
        entries = self.entries
        add_address = self.released_addresses.add
        touched: set[ZoneQueue] = set()
        last: ZoneQueue | None = None
        moved = 0
        for cid in contact_ids:
            entry = entries.get(cid)
            if entry is None or entry.status is not PENDING:
                continue
            entry.status = RELEASED
            entry.released_in = sequence
            add_address(entry.address)
            queue = entry.queue
            assert queue is not None  # a pending entry always waits in a queue
            queue.pending -= 1
            if queue is not last:
                touched.add(queue)
                last = queue
            moved += 1
        self.counts[PENDING] -= moved
        self.counts[RELEASED] += moved
        for queue in touched:
            queue.advance()
        return moved

    def is_current_release(self, contact_id: str, release: int) -> bool:
        """True when the contact is released and ``release`` is its latest release's number."""
        entry = self.entries.get(contact_id)
        return entry is not None and entry.status is RELEASED and entry.released_in == release

    def give_back(self, contact_ids: Iterable[str]) -> int:
        """Released contacts that delivery did not hand to SMTP are pending again, in their
        queue's original order (before every contact that was never released); their addresses
        no longer count as sent. Returns how many moved."""
        entries = self.entries
        released_addresses = self.released_addresses
        moved = 0
        for cid in contact_ids:
            entry = entries.get(cid)
            if entry is None or entry.status is not RELEASED:
                continue
            queue = entry.queue
            assert queue is not None  # a released entry came from a queue
            entry.status = PENDING
            released_addresses.discard(entry.address)
            returned = queue.returned
            if not returned or returned[-1].order < entry.order:
                returned.append(entry)  # the common case: given back in release order
            else:
                insort(returned, entry)
            queue.pending += 1
            moved += 1
        self.counts[RELEASED] -= moved
        self.counts[PENDING] += moved
        return moved

    def skip(self, contact_ids: Iterable[str], reason: str) -> None:
        """Pending contacts will not be sent, for ``reason``."""
        reasons = self.reasons
        for cid in self._leave_pending(contact_ids, SKIPPED):
            reasons[cid] = reason

    def record_outcome(
        self, contact_ids: Iterable[str], outcome: RecipientStatus, reasons: Iterable[str] = ()
    ) -> None:
        """Released contacts get their final outcome; the first outcome recorded stands."""
        entries = self.entries
        reason_list = list(reasons)
        moved = 0
        for i, cid in enumerate(contact_ids):
            entry = entries.get(cid)
            if entry is None or entry.status is not RELEASED:
                continue
            entry.status = outcome
            if reason_list:
                self.reasons[cid] = reason_list[i]
            moved += 1
        self.counts[RELEASED] -= moved
        self.counts[outcome] += moved

    def set_due(self, due_for: Callable[[str], datetime | None]) -> None:
        """Recompute every queue's due time (at scheduling: O(zones), not O(audience))."""
        for key, queue in self.queues.items():
            queue.due = due_for(key)

    # -- comparing (tests, audits) --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that decides future behaviour, as plain data (O(audience))."""
        return {
            "entries": {
                cid: (e.contact.model_dump(), e.address, str(e.status), e.order, e.released_in)
                for cid, e in self.entries.items()
            },
            "reasons": dict(self.reasons),
            "queues": {
                key: {
                    "live": [e.contact_id for e in q.live()],
                    "returned": [e.contact_id for e in q.returned],
                    "added": q.added,
                    "pending": q.pending,
                    "due": q.due,
                }
                for key, q in self.queues.items()
            },
            "by_address": {a: self.holders_of(a) for a in self.by_address},
            "released_addresses": sorted(self.released_addresses),
            "excluded_ids": sorted(self.excluded_ids),
            "excluded_addresses": sorted(self.excluded_addresses),
            "counts": {str(k): v for k, v in self.counts.items()},
            "command_ids": sorted(str(c) for c in self.command_ids),
        }
