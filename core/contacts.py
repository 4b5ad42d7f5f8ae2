"""Where the contacts' data lives once the book no longer holds it (issue 15, docs/scale.md).

The book (core/book.py) keeps per recipient only what deciding needs. A contact's address and
merge attributes are in the committed log, in the ``RecipientsAdded`` event that added them;
a shell keeps a store derived from those events and reads the data back when it needs it:

* the send records of a release (the dispatcher), one contact per released id, in order;
* the audience of a copy (``Context.audience``, see :func:`copy_context`).

:class:`ContactStore` is that port. Its stores are keyed by the book's slot (the contact's
current entry), so a store holds per recipient a position, not a second index of ids. This
module does no I/O: :class:`MemoryContacts` keeps the data in memory (tests, small shells); the
dispatcher's store is a local file (services/dispatcher/contacts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol
from uuid import UUID

from core.book import RecipientBook
from core.context import Context
from core.state import MessageState
from schemas import Contact, Event, RecipientsAdded

__all__ = ["ContactStore", "MemoryContacts", "copy_context"]


class ContactStore(Protocol):
    """The contacts' data of the messages a shell folds, keyed by slot."""

    def observe(self, event: Event, state: MessageState) -> None:
        """``event`` was just folded into ``state``: keep the data of the contacts it added."""

    def read(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[Contact]:
        """The data of ``contact_ids`` (each in the book) as last added, in order."""
        ...

    def read_json(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[str]:
        """The same as JSON text (``Contact.model_dump_json``), for the send records."""
        ...


class MemoryContacts:
    """A :class:`ContactStore` in memory: one reference per slot."""

    def __init__(self) -> None:
        self._by_message: dict[UUID, list[Contact | None]] = {}

    def observe(self, event: Event, state: MessageState) -> None:
        if not isinstance(event, RecipientsAdded):
            return
        book = state.book
        kept = self._by_message.setdefault(event.message_id, [])
        if len(kept) < len(book.ids):
            kept.extend([None] * (len(book.ids) - len(kept)))
        found = book.find([c.contact_id for c in event.contacts])
        for contact, slot in zip(event.contacts, found, strict=True):
            if slot >= 0:
                kept[slot] = contact

    def read(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[Contact]:
        kept = self._by_message.get(message_id, [])
        found: list[Contact] = []
        for cid, slot in zip(contact_ids, book.find(contact_ids), strict=True):
            contact = kept[slot] if slot >= 0 else None
            if contact is None:
                raise KeyError(f"no data kept for contact {cid!r} of message {message_id}")
            found.append(contact)
        return found

    def read_json(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[str]:
        return [c.model_dump_json() for c in self.read(message_id, book, contact_ids)]


def copy_context(ctx: Context, state: MessageState | None, store: ContactStore) -> Context:
    """``ctx`` with the audience a copy of ``state`` needs, read from ``store``."""
    if state is None:
        return ctx
    book = state.book
    return replace(ctx, audience=tuple(store.read(state.message_id, book, book.audience_ids())))
