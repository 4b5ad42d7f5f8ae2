"""The dispatcher's contact store: the contacts' data of its partitions, in a local file.

The book keeps no contact data (core/book.py, docs/scale.md). The data is in the committed log
(the ``RecipientsAdded`` events); this store is derived from it as the partition is folded: each
contact's JSON (the bytes of ``Contact.model_dump_json``: the form a send record carries; an
event's contacts are encoded in one orjson call and cut at the contacts' boundaries,
`schemas.fast.contact_json_spans`) is appended to one unnamed temporary file per partition
(an event's contacts separated by commas), and the store keeps per slot its position and length
(12 bytes). A release reads its contacts back in the order they were added within their zone,
which is the order they were appended, so a release's reads are one contiguous span of the file
in the common case (one ``pread``).

Without a path the file is unnamed, lives as long as the partition's state, is rebuilt with it
(a take folds the log again) and is deleted by the OS when closed or when the process dies. With a
path (the partition's state directory, services/dispatcher/snapshots.py) it outlives the process:
a snapshot pickles the positions and the file's length, and a restore reopens the file and cuts
it back to that length, so the records folded after the snapshot are appended again. Implements
core.contacts.ContactStore.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO
from uuid import UUID

from core.book import RecipientBook
from core.state import MessageState
from schemas import Contact, Event, RecipientsAdded
from schemas.fast import contact_json_spans

__all__ = ["FileContacts"]

#: Buffered bytes written to the file at once.
_FLUSH_AT = 1 << 20


class FileContacts:
    """Contact JSON by (message, slot) in an append-only temporary file."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._file = self._open(path, truncate=True)
        self._fd = self._file.fileno()
        self._buffer = bytearray()
        self._written = 0  # bytes in the file (the buffer follows them)
        self._positions: dict[UUID, array[int]] = {}
        self._lengths: dict[UUID, array[int]] = {}

    @staticmethod
    def _open(path: Path | None, truncate: bool) -> BinaryIO:
        # Lives as long as the store (closed by close()), not one block.
        if path is None:
            return tempfile.TemporaryFile(buffering=0)
        return path.open("w+b" if truncate else "r+b", buffering=0)

    def close(self) -> None:
        self._file.close()

    @property
    def length(self) -> int:
        """The bytes written (after :meth:`flush`, all in the file)."""
        return self._written + len(self._buffer)

    def flush(self) -> None:
        self._flush()

    def __getstate__(self) -> dict[str, Any]:
        if self._path is None:
            raise TypeError("an unnamed contact file cannot be part of a snapshot")
        self._flush()
        return {
            "path": str(self._path),
            "written": self._written,
            "positions": self._positions,
            "lengths": self._lengths,
        }

    def __setstate__(self, kept: dict[str, Any]) -> None:
        path = Path(kept["path"])
        written = int(kept["written"])
        handle = self._open(path, truncate=False)
        if os.fstat(handle.fileno()).st_size < written:
            handle.close()
            raise ValueError(f"the contact file {path} is shorter than the snapshot says")
        # What was appended after the snapshot is folded (and appended) again.
        os.ftruncate(handle.fileno(), written)
        self._path = path
        self._file = handle
        self._fd = handle.fileno()
        self._buffer = bytearray()
        self._written = written
        self._positions = kept["positions"]
        self._lengths = kept["lengths"]

    def observe(self, event: Event, state: MessageState) -> None:
        if not isinstance(event, RecipientsAdded):
            return
        book = state.book
        positions = self._positions.get(event.message_id)
        lengths = self._lengths.get(event.message_id)
        if positions is None or lengths is None:
            positions = self._positions[event.message_id] = array("q")
            lengths = self._lengths[event.message_id] = array("I")
        grow = len(book.ids) - len(positions)
        if grow > 0:
            positions.extend(array("q", [-1]) * grow)
            lengths.extend(array("I", bytes(4 * grow)))
        buffer = self._buffer
        contacts = event.contacts
        found = book.find([c.contact_id for c in contacts])
        kept = [(contact, slot) for contact, slot in zip(contacts, found, strict=True) if slot >= 0]
        # The kept contacts' JSON in one call, each contact's the bytes model_dump_json writes
        # (schemas/fast.py).
        data, starts, sizes = contact_json_spans([contact for contact, _ in kept])
        at = self._written + len(buffer)
        for (_, slot), start, size in zip(kept, starts, sizes, strict=True):
            positions[slot] = at + start
            lengths[slot] = size
        buffer += data
        if len(buffer) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            os.pwrite(self._fd, self._buffer, self._written)
            self._written += len(self._buffer)
            self._buffer = bytearray()

    def _raw(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[bytes]:
        positions = self._positions.get(message_id)
        lengths = self._lengths.get(message_id)
        if positions is None or lengths is None:
            if not contact_ids:
                return []
            raise KeyError(f"no contact data kept for message {message_id}")
        spans = []
        for cid, slot in zip(contact_ids, book.find(contact_ids), strict=True):
            if slot < 0:
                raise KeyError(cid)
            start = positions[slot]
            if start < 0:
                raise KeyError(f"no data kept for contact {cid!r} of message {message_id}")
            spans.append((start, lengths[slot]))
        if not spans:
            return []
        self._flush()
        low = min(s for s, _ in spans)
        high = max(s + n for s, n in spans)
        total = sum(n for _, n in spans)
        if high - low <= 4 * total + 4096:
            # The common case: one contiguous span (a release in add order).
            block = os.pread(self._fd, high - low, low)
            return [block[s - low : s - low + n] for s, n in spans]
        return [os.pread(self._fd, n, s) for s, n in spans]

    def read(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[Contact]:
        return [
            Contact.model_validate_json(raw) for raw in self._raw(message_id, book, contact_ids)
        ]

    def read_json(
        self, message_id: UUID, book: RecipientBook, contact_ids: Sequence[str]
    ) -> list[str]:
        return [raw.decode() for raw in self._raw(message_id, book, contact_ids)]
