"""The recipient book: every contact of one message and the state each one is in, compactly.

Memory rule (issue 15, docs/scale.md "State layout"): a message may have ten million recipients,
so the book keeps per recipient only what deciding needs, in flat arrays indexed by a *slot* (an
int given to each entry in the order entries are made), and never the contact's payload:

* identity: ``slots`` maps the contact id to its current slot; ``ids[slot]`` is the id back;
* visible state: ``status[slot]`` (one byte, an index into :data:`STATUSES`);
* zone queue position: ``zone[slot]`` (the queue's index), ``order[slot]`` (its ordinal there);
* the release it was last handed to delivery in: ``released_in[slot]`` (0: never);
* dedupe by normalized address: ``addrs[slot]``, a 90-bit BLAKE2b key of the normalized address
  (:func:`address_key`: the chance that two of ten million distinct addresses share one is
  about 4e-14, and the hash is keyed to no input an attacker can steer into a collision more
  cheaply), indexed by ``by_address`` (key -> first holder's slot; further holders, rare, in
  ``more_by_address``); ``released_addresses`` holds the keys of the addresses released;
* "same data as before?" (an add naming a present contact): ``prints[slot]``, a 64-bit BLAKE2b
  fingerprint of the contact's data (:func:`fingerprint`). A false "same" needs a 2^-64 chance
  on one comparison of one contact with its own previous data.

The contacts' addresses and merge attributes stay in the committed log (the ``RecipientsAdded``
events); the shell keeps a store derived from them and reads them back when it needs them (the
send records of a release, the audience of a copy): core/contacts.py, docs/scale.md.

Cost rule: every operation costs in proportion to the contacts it changes, never to the audience:

* pending slots wait in one FIFO queue per zone key (the contact's IANA zone, or ``""`` for
  "the account's default zone"); a queue is an array of slots plus a head index;
* removal, exclusion and skips are lazy deletions: the slot stays in its queue with its new
  status and is passed over when the head reaches it, so each slot is passed over at most once.
  A removed contact that is added again gets a new slot at the back of its queue; the old one
  stays removed (and no longer belongs to the contact);
* counters per status and per queue are kept up to date on every transition;
* a released contact that delivery gives back (a pause or cancel reached the worker before the
  hand-off to SMTP) is pending again: it waits in its queue's ``returned`` list, kept in the
  order the contacts joined the queue, which the planner reads before the rest of the queue, so
  the re-release keeps the original order.

Transitions (issue 13 item 4): with :meth:`RecipientBook.track` on, every change of a contact's
state (and every contact an add applies) is appended to ``book.transitions`` as a
:class:`Transition`; the projector reads them instead of diffing the book. Off by default (the
dispatcher does not pay for it).

Ownership rule: the book is mutable and owned by the fold. :func:`core.evolve` updates it in place
and returns a new frozen :class:`core.state.MessageState` that points to the same book; whoever
passes a state to ``evolve`` must not use the old state afterwards. :func:`core.plan` and
:func:`core.decide` only read it. :meth:`RecipientBook.snapshot` gives tests an O(audience) value
to compare two folds with.
"""

from __future__ import annotations

from array import array
from bisect import insort
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from hashlib import blake2b
from typing import Any, NamedTuple
from uuid import UUID

from schemas import Contact, normalize_address

__all__ = [
    "STATUSES",
    "RecipientBook",
    "RecipientStatus",
    "Transition",
    "ZoneQueue",
    "address_key",
    "fingerprint",
]


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

#: The statuses by their one-byte code (``book.status[slot]``).
STATUSES: tuple[RecipientStatus, ...] = tuple(RecipientStatus)
CODE: dict[RecipientStatus, int] = {s: i for i, s in enumerate(STATUSES)}
C_PENDING = CODE[PENDING]
C_RELEASED = CODE[RELEASED]
C_REMOVED = CODE[REMOVED]
C_EXCLUDED = CODE[EXCLUDED]
C_SKIPPED = CODE[SKIPPED]

#: Statuses after which the contact may have received the message: a copy "excluding everyone
#: the original was delivered to" excludes these (a second copy is worse than a missing one).
MAY_HAVE_RECEIVED = frozenset(
    {RecipientStatus.RELEASED, RecipientStatus.DELIVERED, RecipientStatus.UNKNOWN}
)

#: ``zone[slot]`` of an entry that waits in no queue (excluded when it joined).
NO_QUEUE = 0xFFFF

_COMPACT_AT = 4096


@lru_cache(maxsize=1 << 15)
def address_key(address: str) -> int:
    """The dedupe key of a normalized address: 90 bits of its BLAKE2b-96 digest (a Python int
    of three 30-bit digits, 36 bytes). Cached: an add sorts a chunk (core.audience) and then
    folds it, so each address of the chunk is hashed once."""
    digest = blake2b(address.encode(), digest_size=12).digest()
    return int.from_bytes(digest, "little") >> 6


def fingerprint(contact: Contact) -> int:
    """64 bits of BLAKE2b over the contact's data (address, zone, attributes by sorted key, as
    ``repr`` writes their str/number/bool/None values): equal data, equal fingerprint, in every
    process."""
    digest = blake2b(contact.email.encode(), digest_size=8)
    zone = contact.time_zone
    if zone:
        digest.update(b"\x1f")
        digest.update(zone.encode())
    attributes = contact.attributes
    if attributes:
        digest.update(b"\x1e")
        digest.update(repr(sorted(attributes.items())).encode())
    return int.from_bytes(digest.digest(), "little")


class Transition(NamedTuple):
    """One contact's change: its state before (``None``: not in the message) and after, and
    whether an add applied its data (it joined, re-joined, or a pending contact was updated)."""

    contact_id: str
    before: RecipientStatus | None
    after: RecipientStatus
    joined: bool


class ZoneQueue:
    """Pending slots of one zone key, in the order they were added.

    ``due`` is when the zone's recipients are due in ``recipient_timezone`` mode (set while the
    message is scheduled or later; ``None`` in a draft).

    ``returned`` holds slots that were released and given back by delivery (pending again),
    sorted by their ordinal in the queue. Slots are released from the head in order, so every
    returned slot joined before every slot still in ``items`` from the head: reading
    ``returned`` first, then ``items``, is the original order.
    """

    __slots__ = ("added", "book", "due", "head", "index", "items", "key", "pending", "returned")

    def __init__(self, book: RecipientBook, index: int, key: str, due: datetime | None) -> None:
        self.book = book
        self.index = index
        self.key = key
        self.items = array("i")
        self.head = 0
        self.pending = 0
        self.due = due
        self.added = 0
        self.returned: list[int] = []

    def live_slots(self) -> Iterator[int]:
        """The pending slots in order, from the head, without changing anything."""
        status = self.book.status
        released_in = self.book.released_in
        for slot in self.returned:
            if status[slot] == C_PENDING:
                yield slot
        items = self.items
        for i in range(self.head, len(items)):
            slot = items[i]
            # A pending slot released before is a returned one: it was read above.
            if status[slot] == C_PENDING and not released_in[slot]:
                yield slot

    def live(self) -> Iterator[str]:
        """The contact ids of :meth:`live_slots`."""
        ids = self.book.ids
        for slot in self.live_slots():
            yield ids[slot]

    def advance(self) -> None:
        """Move the head past slots that are no longer pending; compact now and then."""
        status = self.book.status
        returned = self.returned
        if returned:
            done = 0
            while done < len(returned) and status[returned[done]] != C_PENDING:
                done += 1
            if done:
                del returned[:done]
        items = self.items
        head = self.head
        end = len(items)
        while head < end and status[items[head]] != C_PENDING:
            head += 1
        if head >= _COMPACT_AT and head * 2 >= end:
            del items[:head]
            head = 0
        self.head = head


class RecipientBook:
    """All contacts of a message with their status, pending queues and dedupe/exclusion sets."""

    __slots__ = (
        "addrs",
        "by_address",
        "command_ids",
        "counts",
        "excluded_addresses",
        "excluded_ids",
        "ids",
        "more_by_address",
        "order",
        "prints",
        "queue_list",
        "queues",
        "reasons",
        "released_addresses",
        "released_in",
        "slots",
        "status",
        "transitions",
        "zone",
    )

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        # Per slot (the arrays are the compact part; the lists hold references to objects the
        # dicts hold anyway: the id string, the address key).
        self.ids: list[str] = []
        self.status = bytearray()
        self.released_in = array("i")
        self.order = array("i")
        self.zone = array("H")
        self.prints = array("Q")
        self.addrs: list[int] = []
        self.reasons: dict[str, str] = {}
        self.queues: dict[str, ZoneQueue] = {}
        self.queue_list: list[ZoneQueue] = []
        self.by_address: dict[int, int] = {}
        self.more_by_address: dict[int, list[int]] = {}
        self.released_addresses: set[int] = set()
        self.excluded_ids: set[str] = set()
        self.excluded_addresses: set[str] = set()
        self.counts: dict[RecipientStatus, int] = dict.fromkeys(RecipientStatus, 0)
        # Ids of the commands already applied: a repeat of one is a no-op (see core.decide).
        self.command_ids: set[UUID] = set()
        self.transitions: list[Transition] | None = None

    # -- transitions (the projector) ------------------------------------------------------------

    def track(self, on: bool = True) -> None:
        """Record every transition into ``transitions`` from now on (or stop)."""
        self.transitions = [] if on else None

    def take_transitions(self) -> list[Transition]:
        """The transitions recorded since the last call (and forget them)."""
        found = self.transitions
        if not found:
            return []
        self.transitions = []
        return found

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
        return len(self.slots)

    def __contains__(self, contact_id: object) -> bool:
        return contact_id in self.slots

    def slot_of(self, contact_id: str) -> int | None:
        """The contact's current slot (``None``: never in the message)."""
        return self.slots.get(contact_id)

    def status_of(self, contact_id: str) -> RecipientStatus | None:
        """The contact's visible state, or ``None`` if it never joined this message."""
        slot = self.slots.get(contact_id)
        return None if slot is None else STATUSES[self.status[slot]]

    def released_in_of(self, contact_id: str) -> int:
        """The sequence of the contact's latest release (0: never released or not present)."""
        slot = self.slots.get(contact_id)
        return 0 if slot is None else self.released_in[slot]

    def reason_of(self, contact_id: str) -> str | None:
        """Why a skipped or failed contact was not delivered."""
        return self.reasons.get(contact_id)

    def fingerprint_of(self, contact_id: str) -> int:
        """The fingerprint of the contact's data as last added."""
        return self.prints[self.slots[contact_id]]

    def ids_with(self, statuses: Iterable[RecipientStatus]) -> list[str]:
        """Contact ids in any of ``statuses``, in the order they joined (O(audience): copies)."""
        wanted = {CODE[s] for s in statuses}
        status = self.status
        return [cid for cid, slot in self.slots.items() if status[slot] in wanted]

    def audience_ids(self) -> list[str]:
        """Every contact not removed, in the order they joined (a copy's audience)."""
        status = self.status
        return [cid for cid, slot in self.slots.items() if status[slot] != C_REMOVED]

    def holders_of(self, address: str) -> list[str]:
        """Contact ids whose normalized address is ``address``."""
        return [self.ids[s] for s in self._holders(address_key(address))]

    def _holders(self, key: int) -> list[int]:
        first = self.by_address.get(key)
        if first is None:
            return []
        return [first, *self.more_by_address.get(key, ())]

    def address_taken(self, key: int, contact_id: str) -> bool:
        """True when the first holder of the address ``key`` is another contact."""
        holder = self.by_address.get(key)
        return holder is not None and self.ids[holder] != contact_id

    def is_current_release(self, contact_id: str, release: int) -> bool:
        """True when the contact is released and ``release`` is its latest release's number."""
        slot = self.slots.get(contact_id)
        return (
            slot is not None
            and self.status[slot] == C_RELEASED
            and self.released_in[slot] == release
        )

    # -- writing (only core.evolve calls these) -------------------------------------------------

    def _note(self, cid: str, before: int | None, after: int, joined: bool = False) -> None:
        found = self.transitions
        if found is not None:
            found.append(
                Transition(
                    cid, None if before is None else STATUSES[before], STATUSES[after], joined
                )
            )

    def _queue(self, key: str, due_for: Callable[[str], datetime | None]) -> ZoneQueue:
        queue = self.queues.get(key)
        if queue is None:
            queue = ZoneQueue(self, len(self.queue_list), key, due_for(key))
            if queue.index >= NO_QUEUE:
                raise ValueError("a message holds at most 65,535 distinct time zone keys")
            self.queues[key] = queue
            self.queue_list.append(queue)
        return queue

    def _new_slot(self, cid: str, key: int, print_: int, code: int, queue: ZoneQueue | None) -> int:
        slot = len(self.ids)
        self.ids.append(cid)
        self.status.append(code)
        self.released_in.append(0)
        self.addrs.append(key)
        self.prints.append(print_)
        if queue is None:
            self.zone.append(NO_QUEUE)
            self.order.append(0)
        else:
            self.zone.append(queue.index)
            self.order.append(queue.added)
            queue.added += 1
            queue.items.append(slot)
            queue.pending += 1
        return slot

    def add(self, contacts: Iterable[Contact], due_for: Callable[[str], datetime | None]) -> None:
        """New (or previously removed) contacts become pending, unless they match an exclusion;
        a pending contact named again takes the new data (see core.audience).

        Contacts already in the book in any other state are left as they are: adding a released
        or delivered contact again never makes it pending again.
        """
        slots = self.slots
        status = self.status
        counts = self.counts
        excluded_ids = self.excluded_ids
        excluded_addresses = self.excluded_addresses
        by_address = self.by_address
        # The hot path of intake: a new contact's slot is appended here, inline.
        ids_append = self.ids.append
        status_append = status.append
        released_append = self.released_in.append
        addrs_append = self.addrs.append
        prints_append = self.prints.append
        zone_append = self.zone.append
        order_append = self.order.append
        tracking = self.transitions is not None
        queue: ZoneQueue | None = None
        items_append = None
        added = 0
        for contact in contacts:
            cid = contact.contact_id
            old = slots.get(cid)
            before: int | None = None
            if old is not None:
                before = status[old]
                if before == C_PENDING:
                    self._update(old, contact, due_for)
                    continue
                if before != C_REMOVED:
                    continue
            # Contact emails are stored stripped, so lower() is normalize_address() here.
            address = contact.email.lower()
            key = address_key(address)
            if cid in excluded_ids or address in excluded_addresses:
                slot = self._new_slot(cid, key, fingerprint(contact), C_EXCLUDED, None)
                counts[EXCLUDED] += 1
                code = C_EXCLUDED
            else:
                zone_key = contact.time_zone or ""
                if queue is None or queue.key != zone_key:
                    queue = self._queue(zone_key, due_for)
                    items_append = queue.items.append
                assert items_append is not None
                slot = len(self.ids)
                ids_append(cid)
                status_append(C_PENDING)
                released_append(0)
                addrs_append(key)
                prints_append(fingerprint(contact))
                zone_append(queue.index)
                order_append(queue.added)
                queue.added += 1
                items_append(slot)
                queue.pending += 1
                added += 1
                code = C_PENDING
            if old is None:
                first = by_address.setdefault(key, slot)
                if first != slot:
                    self.more_by_address.setdefault(key, []).append(slot)
            else:
                counts[REMOVED] -= 1
                old_key = self.addrs[old]
                if old_key != key:
                    self._unindex_address(old_key, old)
                    self._index_address(key, slot)
                else:
                    self._reindex_address(key, old, slot)
            slots[cid] = slot
            if tracking:
                self._note(cid, before, code, True)
        counts[PENDING] += added
        # Per-queue pending counts were kept above; nothing else depends on the audience size.

    def _update(
        self, slot: int, contact: Contact, due_for: Callable[[str], datetime | None]
    ) -> None:
        """A pending contact's data is replaced: address index, zone queue and exclusion follow."""
        cid = contact.contact_id
        address = contact.email.lower()
        key = address_key(address)
        old_key = self.addrs[slot]
        if key != old_key:
            self._unindex_address(old_key, slot)
            self._index_address(key, slot)
            self.addrs[slot] = key
        old_queue = self.queue_list[self.zone[slot]]
        zone_key = contact.time_zone or ""
        if zone_key == old_queue.key:
            self.prints[slot] = fingerprint(contact)
        else:
            # The old slot stays in its queue as a lazily deleted item (its status is no longer
            # pending); the contact waits at the back of its new zone's queue, in a new slot.
            self.status[slot] = C_REMOVED
            old_queue.pending -= 1
            old_queue.advance()
            queue = self._queue(zone_key, due_for)
            new = self._new_slot(cid, key, fingerprint(contact), C_PENDING, queue)
            self._reindex_address(key, slot, new)
            self.slots[cid] = new
        self._note(cid, C_PENDING, C_PENDING, True)
        if cid in self.excluded_ids or address in self.excluded_addresses:
            self._leave_pending((cid,), EXCLUDED)

    def _index_address(self, key: int, slot: int) -> None:
        """Remember who holds ``key`` (one slot in the common case, a list on collisions)."""
        first = self.by_address.setdefault(key, slot)
        if first != slot:
            self.more_by_address.setdefault(key, []).append(slot)

    def _unindex_address(self, key: int, slot: int) -> None:
        if self.by_address.get(key) == slot:
            others = self.more_by_address.get(key)
            if others:
                self.by_address[key] = others.pop(0)
                if not others:
                    del self.more_by_address[key]
            else:
                del self.by_address[key]
        elif key in self.more_by_address:
            self.more_by_address[key].remove(slot)

    def _reindex_address(self, key: int, old: int, new: int) -> None:
        """The contact holding ``key`` in slot ``old`` now holds it in slot ``new`` (same place
        among the holders)."""
        if self.by_address.get(key) == old:
            self.by_address[key] = new
        else:
            others = self.more_by_address.get(key)
            if others is not None and old in others:
                others[others.index(old)] = new
            else:
                self._index_address(key, new)

    def _leave_pending(self, ids: Iterable[str], new: RecipientStatus) -> list[str]:
        """Pending contacts among ``ids`` move to ``new``; returns those that moved."""
        slots = self.slots
        status = self.status
        zone = self.zone
        queue_list = self.queue_list
        code = CODE[new]
        touched: set[int] = set()
        moved: list[str] = []
        for cid in ids:
            slot = slots.get(cid)
            if slot is None or status[slot] != C_PENDING:
                continue
            status[slot] = code
            q = zone[slot]
            queue_list[q].pending -= 1
            touched.add(q)
            moved.append(cid)
            self._note(cid, C_PENDING, code)
        self.counts[PENDING] -= len(moved)
        self.counts[new] += len(moved)
        for q in touched:
            queue_list[q].advance()
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
        slots = self.slots
        status = self.status
        released_in = self.released_in
        addrs = self.addrs
        zone = self.zone
        queue_list = self.queue_list
        add_address = self.released_addresses.add
        if self.transitions is not None:
            return self._release_tracked(contact_ids, sequence)
        # Contacts come in queue runs: count per run, settle each queue's counter once per run.
        touched: set[int] = set()
        last = -1
        run = 0
        moved = 0
        for cid in contact_ids:
            slot = slots.get(cid)
            if slot is None or status[slot] != C_PENDING:
                continue
            status[slot] = C_RELEASED
            released_in[slot] = sequence
            add_address(addrs[slot])
            q = zone[slot]
            if q != last:
                if run:
                    queue_list[last].pending -= run
                    moved += run
                touched.add(q)
                last = q
                run = 0
            run += 1
        if run:
            queue_list[last].pending -= run
            moved += run
        self.counts[PENDING] -= moved
        self.counts[RELEASED] += moved
        for q in touched:
            queue_list[q].advance()
        return moved

    def _release_tracked(self, contact_ids: Iterable[str], sequence: int) -> int:
        """:meth:`release`, reporting each transition (the projector)."""
        slots = self.slots
        status = self.status
        touched: set[int] = set()
        moved = 0
        for cid in contact_ids:
            slot = slots.get(cid)
            if slot is None or status[slot] != C_PENDING:
                continue
            status[slot] = C_RELEASED
            self.released_in[slot] = sequence
            self.released_addresses.add(self.addrs[slot])
            q = self.zone[slot]
            self.queue_list[q].pending -= 1
            touched.add(q)
            moved += 1
            self._note(cid, C_PENDING, C_RELEASED)
        self.counts[PENDING] -= moved
        self.counts[RELEASED] += moved
        for q in touched:
            self.queue_list[q].advance()
        return moved

    def give_back(self, contact_ids: Iterable[str]) -> int:
        """Released contacts that delivery did not hand to SMTP are pending again, in their
        queue's original order (before every contact that was never released); their addresses
        no longer count as sent. Returns how many moved."""
        slots = self.slots
        status = self.status
        order = self.order
        released_addresses = self.released_addresses
        moved = 0
        for cid in contact_ids:
            slot = slots.get(cid)
            if slot is None or status[slot] != C_RELEASED:
                continue
            queue = self.queue_list[self.zone[slot]]
            status[slot] = C_PENDING
            released_addresses.discard(self.addrs[slot])
            returned = queue.returned
            if not returned or order[returned[-1]] < order[slot]:
                returned.append(slot)  # the common case: given back in release order
            else:
                insort(returned, slot, key=order.__getitem__)
            queue.pending += 1
            moved += 1
            self._note(cid, C_RELEASED, C_PENDING)
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
        slots = self.slots
        status = self.status
        code = CODE[outcome]
        reason_list = list(reasons)
        tracking = self.transitions is not None
        moved = 0
        for i, cid in enumerate(contact_ids):
            slot = slots.get(cid)
            if slot is None or status[slot] != C_RELEASED:
                continue
            status[slot] = code
            if reason_list:
                self.reasons[cid] = reason_list[i]
            moved += 1
            if tracking:
                self._note(cid, C_RELEASED, code)
        self.counts[RELEASED] -= moved
        self.counts[outcome] += moved

    def set_due(self, due_for: Callable[[str], datetime | None]) -> None:
        """Recompute every queue's due time (at scheduling: O(zones), not O(audience))."""
        for key, queue in self.queues.items():
            queue.due = due_for(key)

    # -- comparing (tests, audits) --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that decides future behaviour, as plain data (O(audience))."""
        status = self.status
        return {
            "entries": {
                cid: (
                    self.prints[s],
                    self.addrs[s],
                    str(STATUSES[status[s]]),
                    self.order[s],
                    self.released_in[s],
                    self.zone[s],
                )
                for cid, s in self.slots.items()
            },
            "reasons": dict(self.reasons),
            "queues": {
                key: {
                    "live": list(q.live()),
                    "returned": [self.ids[s] for s in q.returned],
                    "added": q.added,
                    "pending": q.pending,
                    "due": q.due,
                }
                for key, q in self.queues.items()
            },
            "by_address": {
                k: [self.ids[s] for s in self._holders(k)] for k in sorted(self.by_address)
            },
            "released_addresses": sorted(self.released_addresses),
            "excluded_ids": sorted(self.excluded_ids),
            "excluded_addresses": sorted(self.excluded_addresses),
            "counts": {str(k): v for k, v in self.counts.items()},
            "command_ids": sorted(str(c) for c in self.command_ids),
        }
