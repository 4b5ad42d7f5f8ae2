"""The compact book (issue 15 item 1, docs/scale.md): no contact data in the core, dedupe keys
that do not merge distinct contacts, and the transitions the book reports (issue 13 item 4)."""

from core.book import (
    RecipientBook,
    RecipientStatus,
    Transition,
    address_key,
    fingerprint,
    fingerprints,
)
from core.contacts import MemoryContacts
from schemas import AddRecipients, Contact, ScheduleMessage

from .dsl import T0, Sim, cmd, contact, contacts

P = RecipientStatus.PENDING


def _no_due(_key: str) -> None:
    return None


def test_the_book_holds_no_contact_payload() -> None:
    book = RecipientBook()
    book.add([contact("a", email="Secret.Person@example.org")], _no_due)
    held = [
        *book.ids.many(range(len(book.ids))),
        *book.slots,
        bytes(book.slots.__getstate__()["buf"]),
        *map(book.address_key_of, range(len(book.ids))),
    ]
    # Neither the address nor the attributes are kept, in any form a reader could print.
    assert not any("secret" in str(x).lower() for x in held)
    assert book.holders_of("secret.person@example.org") == ["a"]


def test_distinct_addresses_get_distinct_keys_and_equal_ones_equal_keys() -> None:
    keys = {address_key(f"user{i}@example.org") for i in range(100_000)}
    assert len(keys) == 100_000
    assert address_key("a@example.org") == address_key("a@example.org")
    assert address_key("a@example.org").bit_length() <= 90


def test_the_fingerprint_tells_changed_data_from_the_same_data() -> None:
    base = Contact(contact_id="a", email="a@example.org", attributes={"x": 1, "y": "z"})
    same = Contact(contact_id="a", email="a@example.org", attributes={"y": "z", "x": 1})
    assert fingerprint(base) == fingerprint(same)
    for other in (
        Contact(contact_id="a", email="b@example.org", attributes={"x": 1, "y": "z"}),
        Contact(contact_id="a", email="a@example.org", attributes={"x": 2, "y": "z"}),
        Contact(
            contact_id="a",
            email="a@example.org",
            time_zone="Asia/Tokyo",
            attributes={"x": 1, "y": "z"},
        ),
    ):
        assert fingerprint(other) != fingerprint(base)


def test_the_fingerprint_of_a_contact_is_the_one_its_logged_form_gets() -> None:
    # The log writes NaN as null (pydantic's JSON): the live fold and a replay must print alike.
    live = Contact(contact_id="a", email="a@example.org", attributes={"x": float("nan")})
    replayed = Contact.model_validate_json(live.model_dump_json())
    assert replayed.attributes == {"x": None}
    assert fingerprint(live) == fingerprint(replayed)
    assert list(fingerprints([live, replayed])) == [fingerprint(live)] * 2


def test_the_fingerprint_holds_integers_past_64_bits_and_tells_them_apart() -> None:
    big = Contact(contact_id="a", email="a@example.org", attributes={"n": 2**64})
    bigger = Contact(contact_id="a", email="a@example.org", attributes={"n": 2**64 + 1})
    small = Contact(contact_id="a", email="a@example.org", attributes={"n": 1})
    prints = {fingerprint(big), fingerprint(bigger), fingerprint(small)}
    assert len(prints) == 3
    assert list(fingerprints([big, bigger, small])) == [
        fingerprint(big),
        fingerprint(bigger),
        fingerprint(small),
    ]
    assert fingerprint(big) == fingerprint(big.model_copy())


def test_the_fingerprint_tells_values_python_calls_equal_apart() -> None:
    prints = {
        fingerprint(Contact(contact_id="a", email="a@example.org", attributes={"x": v}))
        for v in (1, 1.0, True, "1", None)
    }
    assert len(prints) == 5


def test_two_contacts_sharing_an_address_are_both_kept_and_only_one_released() -> None:
    sim = Sim(audience=(*contacts("a"), contact("twin", email="a@example.org")))
    assert sim.s.book.holders_of("a@example.org") == ["a", "twin"]
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    assert sim.released == ["a"]
    assert sim.s.book.status_of("twin") is RecipientStatus.SKIPPED


def test_the_book_reports_its_transitions_when_tracked() -> None:
    book = RecipientBook()
    book.add([contact("a")], _no_due)
    assert book.take_transitions() == []  # not tracked: nothing kept
    book.track()
    book.add([contact("b"), contact("a", email="new@example.org")], _no_due)
    book.release(["a"], sequence=5)
    book.record_outcome(["a"], RecipientStatus.DELIVERED)
    book.skip(["b"], "duplicate_address")
    book.release(["b"], sequence=6)  # not pending: no transition
    assert book.take_transitions() == [
        Transition("b", None, P, True),
        Transition("a", P, P, True),
        Transition("a", P, RecipientStatus.RELEASED, False),
        Transition("a", RecipientStatus.RELEASED, RecipientStatus.DELIVERED, False),
        Transition("b", P, RecipientStatus.SKIPPED, False),
    ]
    assert book.take_transitions() == []


def test_a_store_reads_back_the_data_last_added_for_the_current_entry() -> None:
    sim = Sim(audience=contacts("a", "b"))
    sim.do(
        cmd(AddRecipients, contacts=(contact("a", email="moved@example.org", zone="Asia/Tokyo"),))
    )
    store: MemoryContacts = sim.contacts
    got = store.read(sim.s.message_id, sim.s.book, ["b", "a"])
    assert [(c.contact_id, c.email, c.time_zone) for c in got] == [
        ("b", "b@example.org", None),
        ("a", "moved@example.org", "Asia/Tokyo"),
    ]
