"""Compact indexes of the recipient book (issue 15 item 1, docs/scale.md "State layout").

Two open-addressing hash tables over flat arrays, in place of the dicts of Python objects the
book used to keep (a str, an int and a dict entry per contact: ~190 bytes):

* :class:`IdIndex`: every slot's contact id (UTF-8, in one growing ``bytearray`` with an offsets
  array) and the table contact id -> current slot. A lookup probes by the id's hash and then
  compares the id **byte for byte** with the slot's id: no hash is trusted for identity. The hash
  is 64 bits of BLAKE2b over the id's UTF-8, as the address table's (uniform, and the same in
  every process), so the table and the per-slot hashes are pickled as they are: a restarted
  owner loads them instead of hashing every id again (issue 15 item 2's restart time).
* :class:`AddressIndex`: the distinct address keys (90-bit :func:`core.book.address_key`, kept as
  a 64-bit low part and a 32-bit high part), each with its first holder's slot and a "released"
  flag, and the table key -> entry. The table is probed by the key's low 64 bits, which are
  BLAKE2b output (uniform, and deterministic: this table is pickled as it is); an entry is found
  only if both parts of the key are equal.

Both tables use linear probing, a power-of-two size, a load of at most 0.7 and growth by doubling.
Nothing is ever deleted from them (the book never forgets a contact or an address: a removed
contact keeps its slot; an address whose holders all left keeps its entry with no holder).

Batch operations (:meth:`IdIndex.find`, :meth:`IdIndex.insert_new`, :meth:`AddressIndex.find`,
:meth:`AddressIndex.insert_new`) work on a whole chunk with numpy, so the planner's release of
10,000 contacts or an add of 10,000 costs a few numpy passes instead of 10,000 dict operations.
numpy is computation only: the core stays pure (no I/O, clock or random).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from hashlib import blake2b
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_LOAD", "AddressIndex", "IdIndex"]

#: A table grows (doubles) before more than this share of its places is taken.
MAX_LOAD = 0.7
_MIN_SIZE = 16
_TAIL = 24  # a batch lookup probes the last few ids one at a time
_FIRST = 1  # flags: the contact's first slot (its place in the join order)
_STALE = 2  # flags: no longer the contact's current slot (it was added again, in a new slot)

Slots = NDArray[np.int64]


def _blake(contact_id: str) -> int:
    """64 bits of BLAKE2b over the id's UTF-8, as a signed int (the per-slot hash array's type)."""
    digest = blake2b(contact_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


#: The id table's hash (tests replace it to force collisions: tests/core/test_index.py).
_hash = _blake


def _hashes(contact_ids: Sequence[str]) -> NDArray[np.int64]:
    """:func:`_hash` of each id, as one array (the digests joined and read at once). Read-only:
    the last two chunks' are cached, since an add looks a chunk up when it is decided, again when
    it is folded, and then appends its new ids (each id of a chunk is hashed once)."""
    if _hash is not _blake:  # a test's hash
        return np.fromiter(map(_hash, contact_ids), np.int64, len(contact_ids))
    return _blake_hashes(tuple(contact_ids))


@lru_cache(maxsize=2)
def _blake_hashes(contact_ids: tuple[str, ...]) -> NDArray[np.int64]:
    if not contact_ids:
        return np.empty(0, np.int64)
    digests = b"".join([blake2b(c.encode(), digest_size=8).digest() for c in contact_ids])
    hashes = np.frombuffer(digests, "<i8").astype(np.int64)
    hashes.flags.writeable = False
    return hashes


def _size_for(count: int, size: int) -> int:
    while count > size * MAX_LOAD:
        size *= 2
    return size


def _empty_table(size: int) -> array[int]:
    return array("i", [-1]) * size


def _view(buffer: Any, dtype: Any) -> NDArray[Any]:
    """A numpy view of an ``array``/``bytearray`` (the buffer must not be resized while the view
    lives: every view here is local to one call)."""
    if not len(buffer):
        return np.empty(0, dtype)
    return np.frombuffer(buffer, dtype)


def _place(table: NDArray[np.int32], pos: Slots, values: NDArray[Any], mask: int) -> None:
    """Linear-probing insertion of ``values`` (absent, distinct keys) starting at ``pos``: each
    round, every value whose place is free is written there; of those aiming at one place, the
    one read back from it took it (numpy writes repeated places in order: the last one), the
    others, and those whose place was taken, move one place on. Every place between a value's
    home and its place is taken, as linear probing needs. ``pos`` is consumed."""
    todo = np.arange(len(values))
    while todo.size:
        at = pos[todo]
        free = table[at] < 0
        if free.any():
            contenders = todo[free]
            places = at[free]
            table[places] = values[contenders]
            lost = table[places] != values[contenders]
            todo = np.concatenate((todo[~free], contenders[lost]))
        pos[todo] = (pos[todo] + 1) & mask


class IdIndex:
    """Contact ids by slot, and the table contact id -> the contact's current slot.

    Mapping-like for the readers of the book (``get``, ``[]``, ``in``, iteration and ``items()``
    in the order the contacts first joined, ``len``: the number of contacts); :meth:`id_of` and
    :meth:`ids_of` read a slot's id back.
    """

    __slots__ = ("_buf", "_count", "_flags", "_hashes", "_off", "_table")

    def __init__(self) -> None:
        self._buf = bytearray()  # the ids, UTF-8, slot after slot
        self._off = array("q", [0])  # slot s's id is _buf[_off[s]:_off[s + 1]]
        self._flags = bytearray()  # per slot: _FIRST, _STALE
        self._hashes = array("q")  # per slot: _hash of its id
        self._table = _empty_table(_MIN_SIZE)  # slot numbers, -1: free
        self._count = 0  # contacts (entries in the table)

    # -- pickling: everything, the table too (its hash is the same in every process) -----------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "buf": self._buf,
            "off": self._off,
            "flags": self._flags,
            "hashes": self._hashes,
            "table": self._table,
            "count": self._count,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._buf = state["buf"]
        self._off = state["off"]
        self._flags = state["flags"]
        self._hashes = state["hashes"]
        self._table = state["table"]
        self._count = state["count"]

    # -- per slot -------------------------------------------------------------------------------

    @property
    def slot_count(self) -> int:
        """How many slots hold an id (a contact may have had several)."""
        return len(self._flags)

    def id_of(self, slot: int) -> str:
        off = self._off
        return self._buf[off[slot] : off[slot + 1]].decode()

    def ids_of(self, slots: Iterable[int]) -> list[str]:
        """The ids of ``slots``, in order (one gather and one decode for the lot)."""
        wanted = np.fromiter(slots, np.int64)
        if not wanted.size:
            return []
        off = _view(self._off, np.int64)
        starts = off[wanted]
        lengths = off[wanted + 1] - starts
        data = _gather(_view(self._buf, np.uint8), starts, lengths).tobytes()
        text = data.decode()
        ends = np.cumsum(lengths)
        bounds = zip((ends - lengths).tolist(), ends.tolist(), strict=True)
        if len(text) == len(data):  # ASCII: byte offsets are character offsets
            return [text[a:b] for a, b in bounds]
        return [data[a:b].decode() for a, b in bounds]

    def append(self, contact_id: str) -> int:
        """A new slot holding ``contact_id`` (not yet the contact's current slot: see
        :meth:`point` and :meth:`insert_new`). Returns the slot."""
        slot = len(self._flags)
        self._buf += contact_id.encode()
        self._off.append(len(self._buf))
        self._hashes.append(_hash(contact_id))
        self._flags.append(0)
        return slot

    def extend(self, contact_ids: list[str]) -> None:
        """New slots holding ``contact_ids``, in order, at once (see :meth:`append`)."""
        if not contact_ids:
            return
        data, lengths = _encoded(contact_ids)
        ends = np.cumsum(lengths) + len(self._buf)
        self._buf += data
        self._off.frombytes(ends.tobytes())
        self._hashes.frombytes(_hashes(contact_ids).tobytes())
        self._flags += bytes(len(contact_ids))

    # -- the table ------------------------------------------------------------------------------

    def _probe(self, contact_id: str) -> tuple[int, int]:
        """(place, slot) of ``contact_id``'s entry; slot -1 (and its free place) if absent."""
        h = _hash(contact_id)
        table = self._table
        mask = len(table) - 1
        hashes = self._hashes
        off = self._off
        buf = self._buf
        encoded: bytes | None = None
        i = h & mask
        while True:
            slot = table[i]
            if slot < 0:
                return i, -1
            if hashes[slot] == h:
                if encoded is None:
                    encoded = contact_id.encode()
                if buf[off[slot] : off[slot + 1]] == encoded:
                    return i, slot
            i = (i + 1) & mask

    def get(self, contact_id: str, default: int | None = None) -> int | None:
        slot = self._probe(contact_id)[1]
        return default if slot < 0 else slot

    def __getitem__(self, contact_id: str) -> int:
        slot = self._probe(contact_id)[1]
        if slot < 0:
            raise KeyError(contact_id)
        return slot

    def __contains__(self, contact_id: object) -> bool:
        return isinstance(contact_id, str) and self._probe(contact_id)[1] >= 0

    def __len__(self) -> int:
        return self._count

    def point(self, contact_id: str, slot: int) -> None:
        """``slot`` (holding ``contact_id``) becomes the contact's current slot."""
        place, old = self._probe(contact_id)
        if old >= 0:
            self._table[place] = slot
            self._flags[old] |= _STALE
            return
        self._flags[slot] |= _FIRST
        self._table[place] = slot
        self._count += 1
        if self._count > len(self._table) * MAX_LOAD:
            self._grow(0)

    def insert_new(self, slots: Sequence[int]) -> None:
        """The contacts of ``slots`` (new: not in the table, distinct ids) join, at once."""
        if not slots:
            return
        wanted = np.asarray(slots, dtype=np.int64)
        _view(self._flags, np.uint8)[wanted] |= _FIRST
        self._grow(len(wanted))
        self._insert(wanted)

    def _grow(self, more: int) -> None:
        size = _size_for(self._count + more, len(self._table))
        if size == len(self._table):
            return
        held = _view(self._table, np.int32)
        held = held[held >= 0].astype(np.int64)
        self._table = _empty_table(size)
        self._count = 0
        self._insert(held)

    def _insert(self, slots: Slots) -> None:
        if not slots.size:
            return
        table = _view(self._table, np.int32)
        mask = len(table) - 1
        pos = _view(self._hashes, np.int64)[slots] & mask
        _place(table, pos, slots.astype(np.int32), mask)
        self._count += len(slots)

    def find(self, contact_ids: Sequence[str]) -> Slots:
        """The current slot of each of ``contact_ids`` (-1: not in the book), vectorized.

        Probing stops at the first slot with an equal hash (or a free place); the candidates
        are then compared with the ids byte for byte in one pass. A candidate that is another id
        with the same hash (rare) is looked up again one at a time, comparing every id met."""
        n = len(contact_ids)
        result = np.full(n, -1, dtype=np.int64)
        if not n or not self._count:
            return result
        wanted = _hashes(contact_ids)
        table = _view(self._table, np.int32)
        hashes = _view(self._hashes, np.int64)
        mask = len(table) - 1
        pos = wanted & mask
        candidate = np.full(n, -1, dtype=np.int64)
        todo = np.arange(n)
        while len(todo) > _TAIL:
            slot = table[pos[todo]].astype(np.int64)
            go_on = slot >= 0
            hit = go_on.copy()
            hit[go_on] = hashes[slot[go_on]] == wanted[todo[go_on]]
            candidate[todo[hit]] = slot[hit]
            todo = todo[go_on & ~hit]
            pos[todo] = (pos[todo] + 1) & mask
        if len(todo):
            # The last few, which probe furthest: one at a time.
            py_table = self._table
            py_hashes = self._hashes
            for i in todo.tolist():
                h = int(wanted[i])
                at = int(pos[i])
                while (slot_ := py_table[at]) >= 0 and py_hashes[slot_] != h:
                    at = (at + 1) & mask
                candidate[i] = slot_
        got = np.flatnonzero(candidate >= 0)
        if not len(got):
            return result
        if len(got) == n:
            named = contact_ids if isinstance(contact_ids, list) else list(contact_ids)
        else:
            named = [contact_ids[i] for i in got.tolist()]
        same = self._same_ids(candidate[got], named)
        result[got[same]] = candidate[got[same]]
        for i in got[~same].tolist():
            result[i] = self._probe(contact_ids[i])[1]
        return result

    def _same_ids(self, slots: Slots, contact_ids: list[str]) -> NDArray[np.bool_]:
        """For each slot, whether its id is byte for byte the matching one of ``contact_ids``."""
        data, lengths = _encoded(contact_ids)
        off = _view(self._off, np.int64)
        starts = off[slots]
        same: NDArray[np.bool_] = (off[slots + 1] - starts) == lengths
        query = np.frombuffer(data, np.uint8) if data else np.empty(0, np.uint8)
        if not same.all():
            query = query[np.repeat(same, lengths)]
            starts = starts[same]
            lengths = lengths[same]
        held = _gather(_view(self._buf, np.uint8), starts, lengths)
        if held.tobytes() == query.tobytes():
            return same
        segment = np.repeat(np.arange(len(lengths)), lengths)
        bad = np.bincount(segment[held != query], minlength=len(lengths)) > 0
        same[np.flatnonzero(same)[bad]] = False
        return same

    # -- the join order -------------------------------------------------------------------------

    def items(self) -> Iterator[tuple[str, int]]:
        """(contact id, current slot) of every contact, in the order they first joined."""
        if not self._count:
            return iter(())
        flags = _view(self._flags, np.uint8)
        firsts = np.flatnonzero(flags & _FIRST)
        current = firsts.astype(np.int64)
        ids = self.ids_of(firsts.tolist())
        stale = np.flatnonzero(flags[firsts] & _STALE)
        if stale.size:
            current[stale] = self.find([ids[i] for i in stale.tolist()])
        return zip(ids, current.tolist(), strict=True)

    def __iter__(self) -> Iterator[str]:
        return (cid for cid, _ in self.items())


def _gather(data: NDArray[np.uint8], starts: Slots, lengths: Slots) -> NDArray[np.uint8]:
    """The bytes ``data[starts[i]:starts[i] + lengths[i]]`` of every i, concatenated."""
    total = int(lengths.sum())
    if not total:
        return np.empty(0, np.uint8)
    ends = np.cumsum(lengths)
    index = np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
    gathered: NDArray[np.uint8] = data[index]
    return gathered


class AddressIndex:
    """The distinct address keys of a book: per entry the key (low 64 + high 32 bits), the slot of
    its first holder (-1: none now) and whether the address counts as released; and the table
    key -> entry."""

    __slots__ = ("first", "hi", "lo", "released", "table")

    def __init__(self) -> None:
        self.lo = array("Q")
        self.hi = array("I")
        self.first = array("i")
        self.released = bytearray()
        self.table = _empty_table(_MIN_SIZE)

    def __len__(self) -> int:
        return len(self.first)

    def key_of(self, entry: int) -> int:
        return self.lo[entry] | (self.hi[entry] << 64)

    def entry_of(self, key: int) -> int:
        """The entry of ``key`` (-1: no such address in the book)."""
        lo = key & 0xFFFFFFFFFFFFFFFF
        hi = key >> 64
        table = self.table
        mask = len(table) - 1
        los = self.lo
        i = lo & mask
        while True:
            entry = table[i]
            if entry < 0:
                return -1
            if los[entry] == lo and self.hi[entry] == hi:
                return entry
            i = (i + 1) & mask

    def append(self, key: int, first: int) -> int:
        """A new entry for ``key`` (not in the table until :meth:`insert_new`)."""
        entry = len(self.first)
        self.lo.append(key & 0xFFFFFFFFFFFFFFFF)
        self.hi.append(key >> 64)
        self.first.append(first)
        self.released.append(0)
        return entry

    def insert_new(self, entries: Sequence[int]) -> None:
        """The entries (appended, distinct keys not in the table) join the table, at once."""
        if not entries:
            return
        size = _size_for(len(self.first), len(self.table))
        if size != len(self.table):
            # Grown: every entry (the new ones too) is placed in the new table.
            self.table = _empty_table(size)
            self._insert(np.arange(len(self.first), dtype=np.int64))
            return
        self._insert(np.asarray(entries, dtype=np.int64))

    def _insert(self, entries: Slots) -> None:
        if not entries.size:
            return
        table = _view(self.table, np.int32)
        mask = len(table) - 1
        pos = (_view(self.lo, np.uint64)[entries] & np.uint64(mask)).astype(np.int64)
        _place(table, pos, entries.astype(np.int32), mask)

    def find(self, keys: Sequence[int]) -> Slots:
        """The entry of each key (-1: absent), vectorized."""
        n = len(keys)
        if not n or not len(self.first):
            return np.full(n, -1, dtype=np.int64)
        lo = np.fromiter((k & 0xFFFFFFFFFFFFFFFF for k in keys), np.uint64, n)
        hi = np.fromiter((k >> 64 for k in keys), np.uint32, n)
        return self.find_parts(lo, hi)

    def find_parts(self, lo: NDArray[np.uint64], hi: NDArray[np.uint32]) -> Slots:
        """:meth:`find` of the keys given by their two parts (``core.book.address_keys``)."""
        n = len(lo)
        result = np.full(n, -1, dtype=np.int64)
        if not n or not len(self.first):
            return result
        table = _view(self.table, np.int32)
        los = _view(self.lo, np.uint64)
        his = _view(self.hi, np.uint32)
        mask = len(table) - 1
        pos = (lo & np.uint64(mask)).astype(np.int64)
        todo = np.arange(n)
        while todo.size:
            entry = table[pos[todo]].astype(np.int64)
            taken = entry >= 0
            hit = np.zeros(len(todo), dtype=bool)
            held = entry[taken]
            hit[taken] = (los[held] == lo[todo[taken]]) & (his[held] == hi[todo[taken]])
            result[todo[hit]] = entry[hit]
            todo = todo[taken & ~hit]
            pos[todo] = (pos[todo] + 1) & mask
        return result


def _encoded(contact_ids: Sequence[str]) -> tuple[bytes, NDArray[np.int64]]:
    """The ids' UTF-8 bytes joined, and each id's length in bytes (one encode when all are
    ASCII, the common case). Cached as :func:`_hashes` is (the lengths are read-only)."""
    return _joined(tuple(contact_ids))


@lru_cache(maxsize=2)
def _joined(contact_ids: tuple[str, ...]) -> tuple[bytes, NDArray[np.int64]]:
    joined = "".join(contact_ids)
    data = joined.encode()
    if len(data) == len(joined):
        lengths = np.fromiter(map(len, contact_ids), np.int64, len(contact_ids))
    else:
        encoded = [c.encode() for c in contact_ids]
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    lengths.flags.writeable = False
    return data, lengths
