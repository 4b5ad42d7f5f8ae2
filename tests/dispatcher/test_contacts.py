"""The dispatcher's contact store (services/dispatcher/contacts.py): the contacts' data read
back from a local file derived from the folded events, for the send records of a release."""

import json
import uuid

from core import MessageState, evolve
from schemas import AddRecipients, Contact, Event, RecipientsAdded
from services.dispatcher.contacts import FileContacts
from tests.core.dsl import Sim, cmd, contact


def _folded(sim: Sim, store: FileContacts) -> MessageState:
    state: MessageState | None = None
    for event in sim.log:
        state = evolve(state, event)
        store.observe(event, state)
    assert state is not None
    return state


def test_the_store_reads_back_each_contacts_last_data_in_the_order_asked() -> None:
    people = [
        Contact(contact_id=f"c{i}", email=f"c{i}@example.org", attributes={"n": i})
        for i in range(2000)
    ]
    sim = Sim(audience=people)
    sim.do(cmd(AddRecipients, contacts=(contact("c7", email="moved@example.org"),)))
    store = FileContacts()
    try:
        state = _folded(sim, store)
        ids = ["c5", "c7", "c1999", "c0"]
        texts = store.read_json(state.message_id, state.book, ids)
        assert [json.loads(t)["contact_id"] for t in texts] == ids
        assert json.loads(texts[1])["email"] == "moved@example.org"
        assert json.loads(texts[0])["attributes"] == {"n": 5}
        assert store.read(state.message_id, state.book, ["c7"])[0].email == "moved@example.org"
    finally:
        store.close()


def test_a_far_apart_read_and_a_message_without_contacts() -> None:
    store = FileContacts()
    try:
        sim = Sim(audience=[contact(f"c{i}") for i in range(50)])
        state = _folded(sim, store)
        assert store.read_json(uuid.uuid4(), state.book, []) == []
        # Spread reads (not one contiguous span) come back the same.
        texts = store.read_json(state.message_id, state.book, ["c49", "c0"])
        assert [json.loads(t)["contact_id"] for t in texts] == ["c49", "c0"]
    finally:
        store.close()


def test_only_added_contacts_are_stored() -> None:
    store = FileContacts()
    try:
        sim = Sim(audience=[contact("a")])
        state = _folded(sim, store)
        other: Event = next(e for e in sim.log if not isinstance(e, RecipientsAdded))
        store.observe(other, state)  # not an add: nothing kept
        assert store.read(state.message_id, state.book, ["a"])[0].contact_id == "a"
    finally:
        store.close()
