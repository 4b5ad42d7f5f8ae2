"""The book's compact indexes (core/index.py, issue 15 item 1): the id table and the address table
against dict models, through growth, forced hash collisions, re-pointing and pickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import core.index
from core.book import RecipientBook, RecipientStatus, address_key
from core.index import MAX_LOAD, AddressIndex, IdIndex

from .dsl import contact


@pytest.fixture
def colliding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every id hashes to one of four values: ids share hashes (and table places) all the time,
    so only the byte-for-byte comparison tells them apart."""
    monkeypatch.setattr(core.index, "_hash", lambda s: len(s) % 4)
    yield


def _filled(ids: list[str], batch: int) -> tuple[IdIndex, dict[str, int]]:
    index = IdIndex()
    model: dict[str, int] = {}
    pending: list[int] = []
    for cid in ids:
        slot = index.append(cid)
        model[cid] = slot
        pending.append(slot)
        if len(pending) == batch:
            index.insert_new(pending)
            pending = []
    index.insert_new(pending)
    return index, model


def _table_size(index: IdIndex) -> int:
    return len(index._table)


def test_the_id_table_grows_across_many_doublings_and_finds_every_id() -> None:
    ids = [f"contact-{i}" for i in range(60_000)]
    index, model = _filled(ids, batch=997)
    assert len(index) == 60_000
    assert _table_size(index) >= 60_000 / MAX_LOAD  # from 16 places: twelve doublings
    assert index.find(ids).tolist() == [model[c] for c in ids]
    assert all(index.get(c) == model[c] for c in ids[::101])
    # One at a time (point) grows it too.
    single = IdIndex()
    for i in range(5_000):
        single.point(f"s{i}", single.append(f"s{i}"))
    assert single.find([f"s{i}" for i in range(5_000)]).tolist() == list(range(5_000))
    assert len(single) <= _table_size(single) * MAX_LOAD


def test_absent_ids_are_not_found() -> None:
    index, _ = _filled(["a", "b", "ab", "é"], batch=2)
    absent = ["", "c", "ba", "a ", "A", "e", "ab\x00", "é" * 2]
    assert index.find(absent).tolist() == [-1] * len(absent)
    assert all(index.get(c) is None and c not in index for c in absent)
    with pytest.raises(KeyError):
        index["c"]
    assert IdIndex().find(["a"]).tolist() == [-1]
    assert index.find([]).tolist() == []


def test_ids_sharing_a_hash_are_told_apart_byte_for_byte(colliding: None) -> None:
    ids = ["a", "e", "i", "ab", "ba", "abcd", "dcba", "é", "ü", "x" * 200, "y" * 200]
    index, model = _filled(ids, batch=3)
    queries = [*ids, "o", "cd", "zz", "abcde", "y" * 199 + "x", "ö"]
    assert index.find(queries).tolist() == [model.get(q, -1) for q in queries]
    assert [index.get(q) for q in queries] == [model.get(q) for q in queries]
    assert index.ids_of(range(len(ids))) == ids


def test_a_contact_added_again_points_to_its_new_slot_and_keeps_its_join_place() -> None:
    index, _ = _filled(["a", "b", "c"], batch=10)
    new = index.append("a")  # "a" re-added (after a removal or a zone change): a new slot
    index.point("a", new)
    index.point("d", index.append("d"))
    assert index.get("a") == new == 3
    assert index.id_of(0) == index.id_of(3) == "a"  # the old slot still names its contact
    assert list(index.items()) == [("a", 3), ("b", 1), ("c", 2), ("d", 4)]
    assert len(index) == 4 and index.slot_count == 5
    again = pickle.loads(pickle.dumps(index))
    assert list(again.items()) == list(index.items())
    assert again.find(["a", "b", "c", "d", "e"]).tolist() == [3, 1, 2, 4, -1]


def test_the_table_is_pickled_with_a_hash_every_process_shares() -> None:
    index, model = _filled([f"c{i}" for i in range(3_000)], batch=500)
    loaded = pickle.loads(pickle.dumps(index))
    # Loaded as it was (a restart hashes nothing again), and it answers as before.
    assert loaded._table == index._table and loaded._hashes == index._hashes
    assert loaded.find(list(model)).tolist() == list(model.values())
    assert loaded.get("c2999") == 2999 and loaded.get("c3000") is None
    # The batch hash is the one-id hash, and every process computes the same (Python's own
    # str hash would differ with each process's PYTHONHASHSEED and make the pickled table wrong).
    probes = ["c1", "é\x00", "", "x" * 300]
    assert core.index._hashes(probes).tolist() == [core.index._hash(p) for p in probes]
    code = f"import core.index as i; print(*(i._hash(p) for p in {probes!r}))"
    for seed in ("1", "2"):
        shown = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert shown == [str(core.index._hash(p)) for p in probes]


_IDS = st.text(alphabet="abcé\x00", min_size=0, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["batch", "point", "pickle"]), st.lists(_IDS, max_size=12)),
        max_size=25,
    ),
    collide=st.booleans(),
)
def test_the_id_table_behaves_like_a_dict(
    steps: list[tuple[str, list[str]]], collide: bool
) -> None:
    original = core.index._hash
    if collide:
        core.index._hash = lambda s: len(s) % 3  # type: ignore[assignment]
    try:
        index = IdIndex()
        model: dict[str, int] = {}
        slots: list[str] = []
        for op, ids in steps:
            if op == "batch":  # an add: the chunk's new ids get slots and join at once
                fresh = [cid for cid in dict.fromkeys(ids) if cid not in model]
                new = list(range(index.slot_count, index.slot_count + len(fresh)))
                index.extend(fresh)
                slots.extend(fresh)
                model.update(zip(fresh, new, strict=True))
                index.insert_new(new)
            elif op == "point":  # one at a time, new or re-added
                for cid in ids:
                    slot = index.append(cid)
                    slots.append(cid)
                    index.point(cid, slot)
                    model[cid] = slot
            else:
                index = pickle.loads(pickle.dumps(index))
            probe = [*ids, *model, "never"]
            assert index.find(probe).tolist() == [model.get(c, -1) for c in probe]
            assert [index.get(c) for c in probe] == [model.get(c) for c in probe]
            assert dict(index.items()) == model
            assert [c for c, _ in index.items()] == list(model)  # the join order
            assert len(index) == len(model)
            assert index.ids_of(range(len(slots))) == slots
    finally:
        core.index._hash = original


def test_the_address_table_grows_and_tells_keys_apart_by_all_their_bits() -> None:
    addresses = AddressIndex()
    keys = [address_key(f"user{i}@example.org") for i in range(20_000)]
    for start in range(0, len(keys), 3_000):
        addresses.insert_new(
            [addresses.append(k, i) for i, k in enumerate(keys[start : start + 3_000], start)]
        )
    assert addresses.find(keys).tolist() == list(range(20_000))
    assert len(addresses.table) >= 20_000 / MAX_LOAD
    # Same low 64 bits (same table place and first compare), another high part: another key.
    twin = keys[7] ^ (1 << 70)
    assert addresses.entry_of(twin) == -1 and addresses.find([twin]).tolist() == [-1]
    entry = addresses.append(twin, -1)
    addresses.insert_new([entry])
    assert addresses.entry_of(twin) == entry and addresses.entry_of(keys[7]) == 7
    assert addresses.key_of(entry) == twin
    assert addresses.find([address_key("absent@example.org")]).tolist() == [-1]
    loaded = pickle.loads(pickle.dumps(addresses))
    assert loaded.find([*keys[:50], twin]).tolist() == [*range(50), entry]


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.lists(st.integers(0, (1 << 90) - 1) | st.integers(0, 40), max_size=30)))
def test_the_address_table_behaves_like_a_dict(keys: list[list[int]]) -> None:
    addresses = AddressIndex()
    model: dict[int, int] = {}
    for chunk in keys:
        new = []
        for key in dict.fromkeys(chunk):
            if key not in model:
                model[key] = addresses.append(key, -1)
                new.append(model[key])
        addresses.insert_new(new)
        probe = [*chunk, *model, 1 << 89]
        assert addresses.find(probe).tolist() == [model.get(k, -1) for k in probe]
        assert [addresses.entry_of(k) for k in probe] == [model.get(k, -1) for k in probe]


def test_a_book_with_colliding_id_hashes_keeps_every_rule(colliding: None) -> None:
    book = RecipientBook()
    book.add([contact(c) for c in ("a", "e", "ab", "ba")], lambda _key: None)
    book.remove(["e"])
    book.add([contact("e", email="other@example.org"), contact("i")], lambda _key: None)
    assert book.release(["a", "ba", "zz", "a"], sequence=1) == 2
    assert book.status_of("a") is RecipientStatus.RELEASED
    assert book.status_of("ab") is RecipientStatus.PENDING
    assert book.status_of("e") is RecipientStatus.PENDING
    assert book.holders_of("other@example.org") == ["e"]
    assert book.audience_ids() == ["a", "e", "ab", "ba", "i"]
    assert pickle.loads(pickle.dumps(book)).snapshot() == book.snapshot()
