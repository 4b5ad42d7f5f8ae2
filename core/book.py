"""The recipient book: every contact of one message and the state each one is in, compactly.

Memory rule (issue 15, docs/scale.md "State layout"): a message may have ten million recipients,
so the book keeps per recipient only what deciding needs, in flat arrays indexed by a *slot* (an
int given to each entry in the order entries are made), and never the contact's payload:

* identity: ``slots`` (an :class:`core.index.IdIndex`: the ids in one bytes buffer and an
  open-addressing table, ids compared byte for byte) maps the contact id to its current slot;
  ``ids[slot]`` is the id back;
* visible state: ``status[slot]`` (one byte, an index into :data:`STATUSES`);
* zone queue position: ``zone[slot]`` (the queue's index), ``order[slot]`` (its ordinal there);
* the release it was last handed to delivery in: ``released_in[slot]`` (0: never);
* dedupe by normalized address: ``addr[slot]``, the slot's entry in ``addresses`` (an
  :class:`core.index.AddressIndex`) of its 90-bit BLAKE2b key of the normalized address
  (:func:`address_key`: the chance that two of ten million distinct addresses share one is
  about 4e-14, and the hash is keyed to no input an attacker can steer into a collision more
  cheaply); each entry holds its first holder's slot (further holders, rare, in
  ``more_by_address``) and whether the address was released;
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from hashlib import blake2b
from typing import Any, NamedTuple
from uuid import UUID

import numpy as np
import orjson
from numpy.typing import NDArray

from core.index import AddressIndex, IdIndex, Slots
from schemas import Contact, normalize_address

__all__ = [
    "STATUSES",
    "RecipientBook",
    "RecipientStatus",
    "Transition",
    "ZoneQueue",
    "address_key",
    "address_keys",
    "fingerprint",
    "fingerprints",
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


def address_keys(addresses: Sequence[str]) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
    """:func:`address_key` of each of ``addresses`` (normalized), as the two parts the address
    table keeps (:class:`core.index.AddressIndex`: the low 64 bits, the high 26): one BLAKE2b
    call per address, and the shift of the 96-bit digests done once for the chunk. The arrays
    are read-only: the last two chunks' are cached, since an add sorts a chunk
    (:func:`core.audience.sort_added`) and then folds it."""
    return _address_keys(tuple(addresses))


@lru_cache(maxsize=2)
def _address_keys(addresses: tuple[str, ...]) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
    n = len(addresses)
    if not n:
        return np.empty(0, np.uint64), np.empty(0, np.uint32)
    digests = b"".join([blake2b(a.encode(), digest_size=12).digest() for a in addresses])
    raw = np.frombuffer(digests, np.uint8).reshape(n, 12)
    low = np.ascontiguousarray(raw[:, :8]).view("<u8").ravel()
    high = np.ascontiguousarray(raw[:, 8:]).view("<u4").ravel()
    lo = ((low >> np.uint64(6)) | (high.astype(np.uint64) << np.uint64(58))).astype(np.uint64)
    hi = (high >> np.uint32(6)).astype(np.uint32)
    lo.flags.writeable = False
    hi.flags.writeable = False
    return lo, hi


def _fingerprinted(contact: Contact) -> bytes:
    """The bytes a contact's fingerprint hashes: its address, zone and attributes as one JSON
    array, the attributes by sorted key (orjson: one C call, where the ``repr`` of the sorted
    items cost ~4 us a contact). JSON is also the form the log keeps, so a value the log writes
    differently from Python (NaN and the infinities as ``null``) prints alike live and replayed.
    An integer past 64 bits, which orjson does not write, falls back to the items' ``repr``
    (text that starts with ``(``, never with the JSON's ``[``)."""
    data = (contact.email, contact.time_zone, contact.attributes)
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr((data[0], data[1], sorted(data[2].items()))).encode()


def fingerprints(contacts: Sequence[Contact]) -> NDArray[np.uint64]:
    """:func:`fingerprint` of each of ``contacts`` (the same 64 bits), as one array."""
    if not contacts:
        return np.empty(0, np.uint64)
    digests = b"".join([blake2b(_fingerprinted(c), digest_size=8).digest() for c in contacts])
    return np.frombuffer(digests, "<u8").astype(np.uint64)


def fingerprint(contact: Contact) -> int:
    """64 bits of BLAKE2b over the contact's data (address, zone, attributes by sorted key;
    :func:`_fingerprinted`): equal data, equal fingerprint, in every process."""
    return int.from_bytes(blake2b(_fingerprinted(contact), digest_size=8).digest(), "little")


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
        return iter(self.book.slots.ids_of(self.live_slots()))

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


class _IdsBySlot:
    """``book.ids``: the contact id of a slot (``ids[slot]``), ``len``: the slots."""

    __slots__ = ("_index",)

    def __init__(self, index: IdIndex) -> None:
        self._index = index

    def __getitem__(self, slot: int) -> str:
        return self._index.id_of(slot)

    def __len__(self) -> int:
        return self._index.slot_count

    def many(self, slots: Iterable[int]) -> list[str]:
        """The ids of ``slots``, in order (vectorized)."""
        return self._index.ids_of(slots)


_LOW64 = (1 << 64) - 1


class _Joining:
    """What an add has made and not yet put in the indexes (see :meth:`RecipientBook.add`)."""

    __slots__ = ("keys", "new_ids", "points", "slot_ids")

    def __init__(self) -> None:
        self.slot_ids: list[str] = []  # the ids of the slots appended, in slot order
        self.points: list[tuple[str, int]] = []  # re-added contacts: id, new slot
        self.new_ids: list[int] = []  # slots of contacts new to the book
        self.keys: dict[int, int] = {}  # address keys new to the book: key -> entry

    def clear(self) -> None:
        self.slot_ids.clear()
        self.points.clear()
        self.new_ids.clear()
        self.keys.clear()


def _listed(items: Iterable[Any]) -> Sequence[Any]:
    return items if isinstance(items, list | tuple) else list(items)


class RecipientBook:
    """All contacts of a message with their status, pending queues and dedupe/exclusion sets."""

    __slots__ = (
        "addr",
        "addresses",
        "command_ids",
        "counts",
        "excluded_addresses",
        "excluded_ids",
        "more_by_address",
        "order",
        "prints",
        "queue_list",
        "queues",
        "reasons",
        "released_in",
        "slots",
        "status",
        "transitions",
        "zone",
    )

    def __init__(self) -> None:
        # Contact id -> current slot, and every slot's id (core/index.py: no str per contact).
        self.slots = IdIndex()
        # Per slot.
        self.status = bytearray()
        self.released_in = array("i")
        self.order = array("i")
        self.zone = array("H")
        self.prints = array("Q")
        self.addr = array("i")  # the slot's entry in ``addresses``
        # The distinct address keys: first holder, released flag, and the key -> entry table.
        self.addresses = AddressIndex()
        self.more_by_address: dict[int, list[int]] = {}  # entry -> further holders (rare)
        self.reasons: dict[str, str] = {}
        self.queues: dict[str, ZoneQueue] = {}
        self.queue_list: list[ZoneQueue] = []
        self.excluded_ids: set[str] = set()
        self.excluded_addresses: set[str] = set()
        self.counts: dict[RecipientStatus, int] = dict.fromkeys(RecipientStatus, 0)
        # Ids of the commands already applied: a repeat of one is a no-op (see core.decide).
        self.command_ids: set[UUID] = set()
        self.transitions: list[Transition] | None = None

    @property
    def ids(self) -> _IdsBySlot:
        """The contact id of each slot: ``book.ids[slot]``, ``book.ids.many(slots)``."""
        return _IdsBySlot(self.slots)

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

    def find(self, contact_ids: Sequence[str]) -> list[int]:
        """The current slot of each of ``contact_ids`` (-1: never in the message), vectorized."""
        found: list[int] = self.slots.find(contact_ids).tolist()
        return found

    def status_of(self, contact_id: str) -> RecipientStatus | None:
        """The contact's visible state, or ``None`` if it never joined this message."""
        slot = self.slots.get(contact_id)
        return None if slot is None else STATUSES[self.status[slot]]

    def with_status(self, contact_ids: Sequence[str], status: RecipientStatus) -> list[str]:
        """Those of ``contact_ids`` (in order, repeats kept) now in ``status``."""
        code = CODE[status]
        state = self.status
        return [
            cid
            for cid, slot in zip(contact_ids, self.find(contact_ids), strict=True)
            if slot >= 0 and state[slot] == code
        ]

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

    def address_key_of(self, slot: int) -> int:
        """The address key of a slot's contact (:func:`address_key` of its address)."""
        return self.addresses.key_of(self.addr[slot])

    def is_address_released(self, address: str) -> bool:
        """Whether a contact with this normalized address was released (and not given back)."""
        entry = self.addresses.entry_of(address_key(address))
        return entry >= 0 and bool(self.addresses.released[entry])

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
        return self.slots.ids_of(self._holders(self.addresses.entry_of(address_key(address))))

    def _holders(self, entry: int) -> list[int]:
        if entry < 0:
            return []
        first = self.addresses.first[entry]
        if first < 0:
            return []
        return [first, *self.more_by_address.get(entry, ())]

    def address_taken(self, key: int, contact_id: str) -> bool:
        """True when the first holder of the address ``key`` is another contact."""
        entry = self.addresses.entry_of(key)
        holder = self.addresses.first[entry] if entry >= 0 else -1
        return holder >= 0 and self.slots.id_of(holder) != contact_id

    def first_holders(self, keys: Sequence[int]) -> list[int]:
        """The slot of the first holder of each address key (-1: none), vectorized."""
        n = len(keys)
        lo = np.fromiter((k & _LOW64 for k in keys), np.uint64, n)
        hi = np.fromiter((k >> 64 for k in keys), np.uint32, n)
        found: list[int] = self.first_holders_of(lo, hi).tolist()
        return found

    def first_holders_of(self, lo: NDArray[np.uint64], hi: NDArray[np.uint32]) -> Slots:
        """:meth:`first_holders` of the keys given by their two parts (:func:`address_keys`)."""
        holders = np.full(len(lo), -1, np.int64)
        if not len(self.addresses):
            return holders
        entries = self.addresses.find_parts(lo, hi)
        first = np.frombuffer(self.addresses.first, np.int32)
        known = entries >= 0
        holders[known] = first[entries[known]]
        return holders

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

    def _new_slot(
        self, cid: str, entry: int, print_: int, code: int, queue: ZoneQueue | None
    ) -> int:
        slot = self.slots.append(cid)
        self.status.append(code)
        self.released_in.append(0)
        self.addr.append(entry)
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

    def _entry(self, key: int) -> int:
        """The address entry of ``key``, made if new (one at a time: the rare paths)."""
        entry = self.addresses.entry_of(key)
        if entry < 0:
            entry = self.addresses.append(key, -1)
            self.addresses.insert_new([entry])
        return entry

    def add(self, contacts: Iterable[Contact], due_for: Callable[[str], datetime | None]) -> None:
        """New (or previously removed) contacts become pending, unless they match an exclusion;
        a pending contact named again takes the new data (see core.audience).

        Contacts already in the book in any other state are left as they are: adding a released
        or delivered contact again never makes it pending again.

        The hot path of intake: the chunk's ids and address keys (:func:`address_keys`) are
        looked up at once. When every contact is new to the book and the chunk names each id and
        each address key once (the common case), the chunk joins in a few numpy passes
        (:meth:`_add_new`); otherwise contact after contact (:meth:`_add_each`). Both give the
        same book (tests/core/test_add_paths.py).
        """
        batch: Sequence[Contact] = _listed(contacts)
        if not batch:
            return
        ids = [c.contact_id for c in batch]
        # Contact emails are stored stripped, so lower() is normalize_address() here.
        lowered = [c.email.lower() for c in batch]
        located = self.slots.find(ids)
        lo, hi = address_keys(lowered)
        if not (located >= 0).any() and len(set(ids)) == len(ids) and len(np.unique(lo)) == len(lo):
            # The common case: every contact is new to the book, named once, and every address
            # key occurs once in the chunk (so no contact of it depends on another).
            self._add_new(batch, ids, lowered, lo, hi, due_for)
            return
        self._add_each(batch, lowered, located.tolist(), lo, hi, due_for)

    def _add_new(
        self,
        batch: Sequence[Contact],
        ids: list[str],
        lowered: list[str],
        lo: NDArray[np.uint64],
        hi: NDArray[np.uint32],
        due_for: Callable[[str], datetime | None],
    ) -> None:
        """:meth:`add` of contacts all new to the book, distinct ids and address keys: the same
        result as :meth:`_add_each`, in a few passes over the chunk (numpy) instead of a Python
        loop per contact."""
        n = len(batch)
        base = len(self.status)
        slots = np.arange(base, base + n, dtype=np.int64)
        excluded_ids = self.excluded_ids
        excluded_addresses = self.excluded_addresses
        zone_keys = [c.time_zone or "" for c in batch]
        if excluded_ids or excluded_addresses:
            barred = np.fromiter(
                (
                    cid in excluded_ids or a in excluded_addresses
                    for cid, a in zip(ids, lowered, strict=True)
                ),
                np.bool_,
                n,
            )
            joined = np.flatnonzero(~barred)
            joining = [zone_keys[i] for i in joined.tolist()]
        else:
            barred = None
            joined = np.arange(n)
            joining = zone_keys
        # The queues in the order the chunk first names them (made if new: may raise before any
        # contact joined).
        distinct = list(dict.fromkeys(joining))
        queues = [self._queue(key, due_for) for key in distinct]
        zone = np.full(n, NO_QUEUE, np.uint16)
        order = np.zeros(n, np.int32)
        if len(queues) == 1:
            groups: list[tuple[ZoneQueue, NDArray[np.int64]]] = [(queues[0], joined)]
        elif queues:
            index_of = {key: q.index for key, q in zip(distinct, queues, strict=True)}
            chosen = np.fromiter(map(index_of.__getitem__, joining), np.int64, len(joining))
            by_queue = np.argsort(chosen, kind="stable")  # chunk order within each queue
            ranked = chosen[by_queue]
            cuts = (np.flatnonzero(np.diff(ranked)) + 1).tolist()
            groups = [
                (self.queue_list[int(ranked[a])], joined[by_queue[a:b]])
                for a, b in zip([0, *cuts], [*cuts, len(ranked)], strict=True)
            ]
        else:
            groups = []
        for queue, members in groups:
            count = len(members)
            zone[members] = queue.index
            order[members] = np.arange(queue.added, queue.added + count, dtype=np.int32)
            queue.items.frombytes(slots[members].astype(np.int32).tobytes())
            queue.added += count
            queue.pending += count
        codes = np.full(n, C_PENDING, np.uint8)
        if barred is not None:
            codes[barred] = C_EXCLUDED
        # Address entries: a key new to the book gets one, its contact as the first holder; a
        # known key gets the contact as a holder.
        addresses = self.addresses
        entries = addresses.find_parts(lo, hi)
        known = np.flatnonzero(entries >= 0).tolist()
        fresh = np.flatnonzero(entries < 0)
        start = len(addresses)
        new_entries = np.arange(start, start + len(fresh), dtype=np.int64)
        entries[fresh] = new_entries
        addresses.lo.frombytes(lo[fresh].tobytes())
        addresses.hi.frombytes(hi[fresh].tobytes())
        addresses.first.frombytes(slots[fresh].astype(np.int32).tobytes())
        addresses.released += bytes(len(fresh))
        for i in known:
            self._index_address(int(entries[i]), base + i)
        self.status += codes.tobytes()
        self.released_in.frombytes(bytes(4 * n))
        self.addr.frombytes(entries.astype(np.int32).tobytes())
        self.prints.frombytes(fingerprints(batch).tobytes())
        self.zone.frombytes(zone.tobytes())
        self.order.frombytes(order.tobytes())
        self.slots.extend(ids)
        self.slots.insert_new(slots.tolist())
        addresses.insert_new(new_entries.tolist())
        joined_count = len(joined)
        self.counts[PENDING] += joined_count
        self.counts[EXCLUDED] += n - joined_count
        found = self.transitions
        if found is not None:
            if barred is None:
                found.extend([Transition(cid, None, PENDING, True) for cid in ids])
            else:
                found.extend(
                    [
                        Transition(cid, None, EXCLUDED if out else PENDING, True)
                        for cid, out in zip(ids, barred.tolist(), strict=True)
                    ]
                )

    def _add_each(
        self,
        batch: Sequence[Contact],
        lowered: list[str],
        located: list[int],
        lo: NDArray[np.uint64],
        hi: NDArray[np.uint32],
        due_for: Callable[[str], datetime | None],
    ) -> None:
        """:meth:`add`, one contact after the other (a chunk naming contacts of the book, an id
        or an address key twice): a new contact's slot and address entry are appended inline,
        and the chunk's new ids (their bytes, hashes and table places) and new keys join at once
        at the end (:meth:`_join`). Until then ``fresh`` (ids) and ``joining.keys`` answer for
        them."""
        slots = self.slots
        addresses = self.addresses
        status = self.status
        counts = self.counts
        excluded_ids = self.excluded_ids
        excluded_addresses = self.excluded_addresses
        keys = [low | (high << 64) for low, high in zip(lo.tolist(), hi.tolist(), strict=True)]
        found: list[int] | None = located
        entries: list[int] | None = addresses.find_parts(lo, hi).tolist()
        fresh: dict[str, int] = {}  # ids this call gave a slot: id -> slot
        joining = _Joining()
        new_ids = joining.new_ids
        new_keys = joining.keys
        slot_ids_append = joining.slot_ids.append
        first = addresses.first
        lo_append = addresses.lo.append
        hi_append = addresses.hi.append
        first_append = first.append
        flag_append = addresses.released.append
        more = self.more_by_address
        status_append = status.append
        released_append = self.released_in.append
        addr_append = self.addr.append
        prints_append = self.prints.append
        zone_append = self.zone.append
        order_append = self.order.append
        tracking = self.transitions is not None
        queue: ZoneQueue | None = None
        items_append = None
        added = 0
        for i, contact in enumerate(batch):
            cid = contact.contact_id
            old = fresh.get(cid)
            if old is None:
                old = found[i] if found is not None else slots.get(cid, -1)
            before: int | None = None
            if old is not None and old >= 0:
                before = status[old]
                if before == C_PENDING:
                    # Rare: a pending contact's data changes. The tables must know every id and
                    # key first; the lookups made at the start may be stale afterwards.
                    self._join(joining)
                    self._update(old, contact, due_for)
                    fresh[cid] = slots[cid]
                    found = entries = None
                    continue
                if before != C_REMOVED:
                    continue
            else:
                old = None
            key = keys[i]
            entry = new_keys.get(key, -1)
            if entry < 0:
                entry = entries[i] if entries is not None else addresses.entry_of(key)
                if entry < 0:
                    entry = new_keys[key] = len(first)
                    lo_append(key & _LOW64)
                    hi_append(key >> 64)
                    first_append(-1)
                    flag_append(0)
            address = lowered[i]
            slot = len(status)
            slot_ids_append(cid)
            if cid in excluded_ids or address in excluded_addresses:
                status_append(C_EXCLUDED)
                released_append(0)
                addr_append(entry)
                prints_append(fingerprint(contact))
                zone_append(NO_QUEUE)
                order_append(0)
                counts[EXCLUDED] += 1
                code = C_EXCLUDED
            else:
                zone_key = contact.time_zone or ""
                if queue is None or queue.key != zone_key:
                    queue = self._queue(zone_key, due_for)
                    items_append = queue.items.append
                assert items_append is not None
                status_append(C_PENDING)
                released_append(0)
                addr_append(entry)
                prints_append(fingerprint(contact))
                zone_append(queue.index)
                order_append(queue.added)
                queue.added += 1
                items_append(slot)
                queue.pending += 1
                added += 1
                code = C_PENDING
            if old is None:
                if first[entry] < 0:
                    first[entry] = slot
                else:
                    more.setdefault(entry, []).append(slot)
                new_ids.append(slot)
            else:
                counts[REMOVED] -= 1
                old_entry = self.addr[old]
                if old_entry != entry:
                    self._unindex_address(old_entry, old)
                    self._index_address(entry, slot)
                else:
                    self._reindex_address(entry, old, slot)
                joining.points.append((cid, slot))
            fresh[cid] = slot
            if tracking:
                self._note(cid, before, code, True)
        self._join(joining)
        counts[PENDING] += added
        # Per-queue pending counts were kept above; nothing else depends on the audience size.

    def _join(self, joining: _Joining) -> None:
        """What an add made so far joins the indexes: the new slots' ids, then the re-added
        contacts' new slots, the new contacts and the new address keys (and ``joining`` is
        emptied)."""
        self.slots.extend(joining.slot_ids)
        for cid, slot in joining.points:
            self.slots.point(cid, slot)
        self.slots.insert_new(joining.new_ids)
        self.addresses.insert_new(list(joining.keys.values()))
        joining.clear()

    def _update(
        self, slot: int, contact: Contact, due_for: Callable[[str], datetime | None]
    ) -> None:
        """A pending contact's data is replaced: address index, zone queue and exclusion follow."""
        cid = contact.contact_id
        address = contact.email.lower()
        entry = self._entry(address_key(address))
        old_entry = self.addr[slot]
        if entry != old_entry:
            self._unindex_address(old_entry, slot)
            self._index_address(entry, slot)
            self.addr[slot] = entry
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
            new = self._new_slot(cid, entry, fingerprint(contact), C_PENDING, queue)
            self._reindex_address(entry, slot, new)
            self.slots.point(cid, new)
        self._note(cid, C_PENDING, C_PENDING, True)
        if cid in self.excluded_ids or address in self.excluded_addresses:
            self._leave_pending((cid,), EXCLUDED)

    def _index_address(self, entry: int, slot: int) -> None:
        """Remember who holds ``entry`` (one slot in the common case, a list on collisions)."""
        first = self.addresses.first
        if first[entry] < 0:
            first[entry] = slot
        elif first[entry] != slot:
            self.more_by_address.setdefault(entry, []).append(slot)

    def _unindex_address(self, entry: int, slot: int) -> None:
        first = self.addresses.first
        if first[entry] == slot:
            others = self.more_by_address.get(entry)
            if others:
                first[entry] = others.pop(0)
                if not others:
                    del self.more_by_address[entry]
            else:
                first[entry] = -1
        elif entry in self.more_by_address:
            self.more_by_address[entry].remove(slot)

    def _reindex_address(self, entry: int, old: int, new: int) -> None:
        """The contact holding ``entry`` in slot ``old`` now holds it in slot ``new`` (same place
        among the holders)."""
        first = self.addresses.first
        if first[entry] == old:
            first[entry] = new
        else:
            others = self.more_by_address.get(entry)
            if others is not None and old in others:
                others[others.index(old)] = new
            else:
                self._index_address(entry, new)

    def _leave_pending(self, ids: Iterable[str], new: RecipientStatus) -> list[str]:
        """Pending contacts among ``ids`` move to ``new``; returns those that moved."""
        named = _listed(ids)
        status = self.status
        zone = self.zone
        queue_list = self.queue_list
        code = CODE[new]
        touched: set[int] = set()
        moved: list[str] = []
        for cid, slot in zip(named, self.find(named), strict=True):
            if slot < 0 or status[slot] != C_PENDING:
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

        The hot path of the planner, vectorized over the chunk (one lookup pass, then numpy).
        """
        if self.transitions is not None:
            return self._release_tracked(contact_ids, sequence)
        named = _listed(contact_ids)
        if not named or not len(self.slots):
            return 0
        found = self.slots.find(named)
        status = np.frombuffer(self.status, np.uint8)
        found = found[found >= 0]
        chosen = np.unique(found[status[found] == C_PENDING])
        moved = len(chosen)
        if not moved:
            return 0
        status[chosen] = C_RELEASED
        np.frombuffer(self.released_in, np.int32)[chosen] = sequence
        entries = np.frombuffer(self.addr, np.int32)[chosen]
        np.frombuffer(self.addresses.released, np.uint8)[entries] = 1
        per_queue = np.bincount(np.frombuffer(self.zone, np.uint16)[chosen])
        del status
        queue_list = self.queue_list
        touched = np.flatnonzero(per_queue).tolist()
        for q in touched:
            queue_list[q].pending -= int(per_queue[q])
        self.counts[PENDING] -= moved
        self.counts[RELEASED] += moved
        for q in touched:
            queue_list[q].advance()
        return moved

    def _release_tracked(self, contact_ids: Iterable[str], sequence: int) -> int:
        """:meth:`release`, reporting each transition (the projector)."""
        named = _listed(contact_ids)
        status = self.status
        released = self.addresses.released
        touched: set[int] = set()
        moved = 0
        for cid, slot in zip(named, self.find(named), strict=True):
            if slot < 0 or status[slot] != C_PENDING:
                continue
            status[slot] = C_RELEASED
            self.released_in[slot] = sequence
            released[self.addr[slot]] = 1
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
        named = _listed(contact_ids)
        status = self.status
        order = self.order
        released = self.addresses.released
        moved = 0
        for cid, slot in zip(named, self.find(named), strict=True):
            if slot < 0 or status[slot] != C_RELEASED:
                continue
            queue = self.queue_list[self.zone[slot]]
            status[slot] = C_PENDING
            released[self.addr[slot]] = 0
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
        named = _listed(contact_ids)
        status = self.status
        code = CODE[outcome]
        reason_list = list(reasons)
        tracking = self.transitions is not None
        if not reason_list and not tracking:
            # Delivered or unknown in the dispatcher: one vectorized pass over the chunk.
            found = self.slots.find(named)
            state = np.frombuffer(status, np.uint8) if len(status) else None
            if state is not None:
                found = found[found >= 0]
                chosen = np.unique(found[state[found] == C_RELEASED])
                state[chosen] = code
                del state
                self.counts[RELEASED] -= len(chosen)
                self.counts[outcome] += len(chosen)
            return
        moved = 0
        for i, (cid, slot) in enumerate(zip(named, self.find(named), strict=True)):
            if slot < 0 or status[slot] != C_RELEASED:
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
        addresses = self.addresses
        ids = self.ids
        return {
            "entries": {
                cid: (
                    self.prints[s],
                    self.address_key_of(s),
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
                    "returned": ids.many(q.returned),
                    "added": q.added,
                    "pending": q.pending,
                    "due": q.due,
                }
                for key, q in self.queues.items()
            },
            "by_address": dict(
                sorted(
                    (addresses.key_of(e), ids.many(self._holders(e)))
                    for e in range(len(addresses))
                    if addresses.first[e] >= 0
                )
            ),
            "released_addresses": sorted(
                addresses.key_of(e) for e in range(len(addresses)) if addresses.released[e]
            ),
            "excluded_ids": sorted(self.excluded_ids),
            "excluded_addresses": sorted(self.excluded_addresses),
            "counts": {str(k): v for k, v in self.counts.items()},
            "command_ids": sorted(str(c) for c in self.command_ids),
        }
