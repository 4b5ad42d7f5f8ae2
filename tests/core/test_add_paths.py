"""The two paths of ``RecipientBook.add`` and of ``core.audience.sort_added`` (core/book.py,
core/audience.py, docs/scale.md "The add's two paths"): a chunk of contacts all new to the book,
each id and address key once, is taken in a few numpy passes (``_add_new``, and ``sort_added``'s
own fast path); any other chunk contact after contact (``_add_each``, ``_sort_each``). Both must
leave the same book, report the same transitions and sort the chunk the same way, whatever came
before; and the batch hashes must be the scalar ones (``address_keys``, ``fingerprints``)."""

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.audience import _sort_each, sort_added
from core.book import (
    RecipientBook,
    RecipientStatus,
    address_key,
    address_keys,
    fingerprint,
    fingerprints,
)
from schemas import Contact

_ZONES = (None, "Asia/Tokyo", "Europe/Paris")


def _no_due(_key: str) -> None:
    return None


def _contact(i: int, address: int, zone: int, attribute: int) -> Contact:
    return Contact(
        contact_id=f"c{i}",
        email=f"User{address}@Example.org" if address % 2 else f"user{address}@example.org",
        time_zone=_ZONES[zone],
        attributes={"n": attribute, "tier": "gold"} if attribute else {},
    )


def _add_each(book: RecipientBook, contacts: list[Contact]) -> None:
    """What ``add`` does when it cannot take its fast path, forced."""
    if not contacts:
        return
    lowered = [c.email.lower() for c in contacts]
    located = book.slots.find([c.contact_id for c in contacts]).tolist()
    lo, hi = address_keys(lowered)
    book._add_each(contacts, lowered, located, lo, hi, _no_due)


def _sort_added_each(contacts: list[Contact], book: RecipientBook) -> object:
    lowered = [c.email.lower() for c in contacts]
    found = book.slots.find([c.contact_id for c in contacts]).tolist()
    return _sort_each(
        contacts, book, lowered, found, book.first_holders_of(*address_keys(lowered)).tolist()
    )


_CONTACT = st.builds(
    _contact,
    st.integers(0, 40),
    st.integers(0, 12),
    st.integers(0, len(_ZONES) - 1),
    st.integers(0, 2),
)
_IDS = st.lists(st.integers(0, 40).map(lambda i: f"c{i}"), max_size=6)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(_CONTACT, max_size=8)),
        st.tuples(st.just("remove"), _IDS),
        st.tuples(st.just("release"), _IDS),
        st.tuples(
            st.just("exclude"),
            _IDS,
            st.lists(st.integers(0, 12).map(lambda a: f"user{a}@example.org"), max_size=2),
        ),
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_both_paths_of_an_add_leave_the_same_book(ops: list[tuple[Any, ...]]) -> None:
    either, each = RecipientBook(), RecipientBook()
    either.track()
    each.track()
    for op in ops:
        if op[0] == "add":
            assert sort_added(op[1], either) == _sort_added_each(op[1], either)
            either.add(op[1], _no_due)
            _add_each(each, op[1])
        else:
            for book in (either, each):
                if op[0] == "remove":
                    book.remove(op[1])
                elif op[0] == "release":
                    book.release(op[1], 1)
                else:
                    book.exclude(op[1], op[2])
        assert either.take_transitions() == each.take_transitions()
        assert either.snapshot() == each.snapshot()
        assert bytes(either.addr) == bytes(each.addr)
        assert either.more_by_address == each.more_by_address


def test_a_chunk_of_new_contacts_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    book = RecipientBook()
    book.add([_contact(0, 0, 0, 0)], _no_due)
    book.exclude(["c3"], ["user4@example.org"])

    def refuse(*_args: object) -> None:
        raise AssertionError("took the contact-by-contact path")

    monkeypatch.setattr(RecipientBook, "_add_each", refuse)
    # New ids; a known address (user0), an excluded id and an excluded address, three zones.
    chunk = [_contact(1, 0, 1, 0), *(_contact(i, i, i % 3, i % 2) for i in range(2, 8))]
    book.add(chunk, _no_due)
    assert len(book) == 8
    assert book.holders_of("user0@example.org") == ["c0", "c1"]
    assert book.status_of("c3") == book.status_of("c4") == RecipientStatus.EXCLUDED
    assert book.counts[RecipientStatus.EXCLUDED] == 2
    assert book.counts[RecipientStatus.PENDING] == 6
    assert {key: list(q.live()) for key, q in book.queues.items()} == {
        "": ["c0", "c6"],
        "Asia/Tokyo": ["c1", "c7"],
        "Europe/Paris": ["c2", "c5"],
    }


@pytest.mark.parametrize(
    "chunk",
    [
        [_contact(1, 1, 0, 0), _contact(1, 2, 0, 0)],  # an id twice
        [_contact(1, 1, 0, 0), _contact(2, 1, 0, 0)],  # an address twice
        [_contact(0, 5, 0, 0)],  # a contact of the book
    ],
)
def test_other_chunks_go_contact_by_contact(
    chunk: list[Contact], monkeypatch: pytest.MonkeyPatch
) -> None:
    book = RecipientBook()
    book.add([_contact(0, 0, 0, 0)], _no_due)

    def refuse(*_args: object) -> None:
        raise AssertionError("took the fast path")

    monkeypatch.setattr(RecipientBook, "_add_new", refuse)
    book.add(chunk, _no_due)


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    addresses=st.lists(_TEXT, max_size=20),
    contacts=st.lists(
        st.builds(
            Contact.model_construct,
            contact_id=st.just("x"),
            email=_TEXT,
            time_zone=st.none() | st.sampled_from(["Asia/Tokyo", ""]),
            attributes=st.dictionaries(
                _TEXT, st.none() | st.booleans() | st.integers() | st.floats() | _TEXT
            ),
        ),
        max_size=20,
    ),
)
def test_the_batch_hashes_are_the_scalar_ones(
    addresses: list[str], contacts: list[Contact]
) -> None:
    lo, hi = address_keys(addresses)
    assert lo.dtype == np.uint64 and hi.dtype == np.uint32
    assert [low | (high << 64) for low, high in zip(lo.tolist(), hi.tolist(), strict=True)] == [
        address_key(a) for a in addresses
    ]
    assert fingerprints(contacts).tolist() == [fingerprint(c) for c in contacts]
