"""Snapshots of a partition's folded state, beside the log (issue 15 item 2, docs/scale.md).

A restarted or new owner of a partition on the same host loads the newest valid snapshot and
folds only the records after it, instead of the whole history. The design follows Kafka Streams'
local state stores: a state directory per task (here: per topic prefix and partition), locked by
the process that owns it, a checkpoint that names the changelog offsets the local state covers,
and a restore that replays the changelog from those offsets. Our changelog is the log itself
(`<prefix>.events` and `<prefix>.command-results`, which the processor writes and nobody else),
so the snapshot only has to say how far into them it is.

A snapshot file is ``snapshot-<events_end>.bin``:

* ``MAGIC`` (8 bytes), the format version (2 bytes, big endian), the header's length (4 bytes);
* the header, JSON padded with spaces to ``HEADER_ROOM`` bytes: topic prefix, partition,
  ``events_end`` and ``results_end`` (the offsets of the first record of each topic it does not
  cover), ``input_offset`` (the committed input offset then), ``contacts_length`` (the bytes of
  the contact file it covers), the payload's length and its SHA-256 digest;
* the payload: the pickled :class:`PartitionState` (books, lifecycle, results, copies), streamed
  to the file as it is pickled and from it as it is unpickled (never whole in memory).

Written to a temporary name, fsynced and renamed, so a reader sees a whole file or none; the two
newest are kept. A snapshot is used only if its magic, version, prefix and partition are the
expected ones, its digest matches and its offsets are not beyond the log's ends (a snapshot of a
log that was since deleted or recreated is stale); otherwise the next older one is tried, and
with none the partition is folded from the beginning: never a wrong state. The payload is pickle,
read only from the owner's own state directory, and what it unpickled is used only once the
digest of the whole payload matches: the directory must not be writable by anyone the service
does not trust (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
import struct
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from services.dispatcher.decider import PartitionState

__all__ = [
    "BLOCK",
    "FORMAT_VERSION",
    "LARGE",
    "MAGIC",
    "Blocks",
    "Checkpoint",
    "SnapshotError",
    "StateDirectory",
    "close_contacts",
    "decode",
    "dump",
    "encode",
    "load",
    "read",
]

MAGIC = b"MCTLSNAP"
#: 2: the books pickle their compact indexes (core/index.py); 3: the id table is pickled too (its
#: hash is BLAKE2b, the same in every process), the header has a fixed room and the payload's
#: digest is SHA-256 (streamed); 4: the books' data fingerprints hash the contact's JSON
#: (core.book.fingerprint), so a version-3 book's would not match its contacts' any more. An
#: older snapshot is refused (the partition is folded).
FORMAT_VERSION = 4
_HEAD = struct.Struct(">8sHI")
#: The header's JSON is padded with spaces to this length, so that it can be written after the
#: streamed payload, once its length and digest are known.
HEADER_ROOM = 4096
READ_BUFFER = WRITE_BUFFER = 1 << 20
#: Arrays of the state of at least LARGE bytes go to the block store, in blocks of BLOCK bytes.
LARGE = 1 << 16
BLOCK = 1 << 22
#: Snapshots kept per partition (the newest first is tried, then the one before).
KEEP = 2


class SnapshotError(ValueError):
    """The snapshot cannot be used (corrupt, another version, another partition, stale)."""


@dataclass(frozen=True)
class Checkpoint:
    """How far into the log a snapshot's state is."""

    prefix: str
    partition: int
    events_end: int
    results_end: int
    input_offset: int | None
    contacts_length: int


class _Hashing:
    """A file-like view of the payload that digests what passes: :func:`dump` writes through it
    and :func:`load` reads through it, so the payload is never held whole in memory (at
    10,000,000 recipients it is about a gigabyte, beside a state of the same size)."""

    def __init__(self, raw: BinaryIO, left: int = -1) -> None:
        self.raw: Any = raw  # a buffered file or BytesIO: it has readinto
        self.digest = hashlib.sha256()
        self.length = 0
        self.left = left  # bytes that may still be read (-1: writing)

    def write(self, data: Any) -> int:
        self.digest.update(data)
        size = len(memoryview(data).cast("B"))
        self.raw.write(data)
        self.length += size
        return size

    def _take(self, data: bytes) -> bytes:
        self.digest.update(data)
        self.length += len(data)
        self.left -= len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        return self._take(self.raw.read(size))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self.left]
        got = self.raw.readinto(view) or 0
        self.digest.update(view[:got])
        self.length += got
        self.left -= got
        return got

    def readline(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        return self._take(self.raw.readline(size))

    def drain(self) -> None:
        while self.left > 0 and (data := self.raw.read(min(self.left, 1 << 22))):
            self._take(data)


BlockRef = tuple[str, int, int]  # (SHA-256 of the block, hex; its CRC-32; its length)


class Blocks:
    """The content-addressed block store of a state directory (``blocks/``): every large array
    of the state (:data:`LARGE` bytes or more) is cut into blocks of :data:`BLOCK` bytes, each
    stored once in a file named by its SHA-256 and referenced from the snapshot's payload. A
    block already stored (by an earlier snapshot) is not written again, so a snapshot writes what
    changed since the last one: during a release a few blocks of the status arrays, not the
    gigabyte of ids, keys and tables of a 10,000,000-recipient message (the incremental
    checkpoints of RocksDB-backed state stores share their unchanged files the same way)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.present: set[str] | None = None  # the stored blocks, listed once
        self.used: set[str] = set()  # the blocks the snapshot being written references
        self.written = 0  # bytes of new blocks it wrote

    def _stored(self) -> set[str]:
        if self.present is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self.present = {p.name for p in self.path.iterdir() if not p.name.startswith(".")}
        return self.present

    def put(self, data: memoryview) -> list[BlockRef]:
        """Store ``data``'s blocks (those not stored yet) and return their references."""
        stored = self._stored()
        refs: list[BlockRef] = []
        for start in range(0, len(data), BLOCK):
            chunk = data[start : start + BLOCK]
            name = hashlib.sha256(chunk).hexdigest()
            if name not in stored:
                partial = self.path / f".{name}.partial"
                with partial.open("wb") as out:
                    out.write(chunk)
                partial.replace(self.path / name)
                stored.add(name)
                self.written += len(chunk)
            self.used.add(name)
            refs.append((name, zlib.crc32(chunk), len(chunk)))
        return refs

    def read(self, refs: list[BlockRef], append: Callable[[memoryview], object]) -> None:
        """Read the blocks of ``refs`` in order, each checked against its CRC-32 (raises
        SnapshotError), and ``append`` each to the array being restored: every byte of it is
        written once (an array made at its size first, then read into, was written twice: the
        fill and the read; the first touch of fresh memory is most of a large load's time)."""
        scratch = memoryview(bytearray(max((length for _, _, length in refs), default=0)))
        for name, crc, length in refs:
            part = scratch[:length]
            try:
                with (self.path / name).open("rb", buffering=0) as source:
                    got = 0
                    while got < length and (n := source.readinto(part[got:])):
                        got += n
            except FileNotFoundError:
                raise SnapshotError(f"missing block {name}") from None
            if got != length or zlib.crc32(part) != crc:
                raise SnapshotError(f"corrupt block {name}")
            append(part)

    def keep_only(self, names: set[str]) -> None:
        """Delete every stored block not in ``names``."""
        stored = self._stored()
        for name in stored - names:
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        stored &= names


class _Pickler(pickle.Pickler):
    def __init__(self, out: Any, blocks: Blocks | None) -> None:
        super().__init__(out, protocol=5)
        self.blocks = blocks

    def persistent_id(self, obj: Any) -> Any:
        if self.blocks is None:
            return None
        kind = type(obj)
        if kind is array and len(obj) * obj.itemsize >= LARGE:
            with memoryview(obj) as view, view.cast("B") as raw:
                return ("array", obj.typecode, self.blocks.put(raw))
        if kind is bytearray and len(obj) >= LARGE:
            with memoryview(obj) as view:
                return ("bytearray", self.blocks.put(view))
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, source: Any, blocks: Blocks | None) -> None:
        super().__init__(source)
        self.blocks = blocks

    def persistent_load(self, pid: Any) -> Any:
        if self.blocks is None or not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError("a block reference without a block store")
        if pid[0] == "array":
            _, typecode, refs = pid
            loaded = array(typecode)
            if sum(length for _, _, length in refs) % loaded.itemsize:
                raise SnapshotError("block references of the wrong length")
            self.blocks.read(refs, loaded.frombytes)
            return loaded
        if pid[0] == "bytearray":
            _, refs = pid
            buffer = bytearray()
            self.blocks.read(refs, buffer.extend)
            return buffer
        raise pickle.UnpicklingError(f"unknown block reference {pid[0]!r}")


def dump(
    state: PartitionState, checkpoint: Checkpoint, out: BinaryIO, blocks: Blocks | None = None
) -> int:
    """Write the snapshot of ``state`` at ``checkpoint`` to ``out`` (seekable, positioned at
    its start), streaming the payload, its large arrays into ``blocks`` (None: all in the
    payload); returns the bytes written to ``out``."""
    out.write(bytes(_HEAD.size + HEADER_ROOM))  # the header's place, written last
    payload = _Hashing(out)
    _Pickler(payload, blocks).dump(state)
    header = json.dumps(
        {
            "prefix": checkpoint.prefix,
            "partition": checkpoint.partition,
            "events_end": checkpoint.events_end,
            "results_end": checkpoint.results_end,
            "input_offset": checkpoint.input_offset,
            "contacts_length": checkpoint.contacts_length,
            "payload_length": payload.length,
            "payload_sha256": payload.digest.hexdigest(),
        }
    ).encode()
    if len(header) > HEADER_ROOM:
        raise SnapshotError("header too long")  # a prefix of more than 3,000 bytes: none is
    out.seek(0)
    out.write(_HEAD.pack(MAGIC, FORMAT_VERSION, HEADER_ROOM) + header.ljust(HEADER_ROOM))
    out.seek(0, os.SEEK_END)
    return _HEAD.size + HEADER_ROOM + payload.length


def encode(state: PartitionState, checkpoint: Checkpoint) -> bytes:
    """The snapshot file's bytes for ``state`` at ``checkpoint`` (:func:`dump` into memory)."""
    out = io.BytesIO()
    dump(state, checkpoint, out)
    return out.getvalue()


def read_header(source: BinaryIO) -> dict[str, Any]:
    """The header of a snapshot (raises SnapshotError); ``source`` is left at the payload."""
    head = source.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise SnapshotError("truncated: no header")
    magic, version, length = _HEAD.unpack(head)
    if magic != MAGIC:
        raise SnapshotError("not a snapshot (magic)")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"unknown snapshot version {version} (this build reads {FORMAT_VERSION})"
        )
    text = source.read(length)
    try:
        header = json.loads(text)
    except ValueError as error:
        raise SnapshotError(f"unreadable header: {error}") from error
    if not isinstance(header, dict) or len(text) != length:
        raise SnapshotError("unreadable header")
    return header


def load(
    source: BinaryIO, prefix: str, partition: int, blocks: Blocks | None = None
) -> tuple[PartitionState, Checkpoint]:
    """The state and checkpoint of the snapshot in ``source`` (seekable, at its start) of
    ``prefix``'s ``partition``; raises SnapshotError when it cannot be used as is.

    The payload is unpickled as it is read and digested on the way; whatever it unpickled is
    used only if the digest of every payload byte matches the header's (a torn or damaged
    file is refused, never folded on)."""
    header = read_header(source)
    if header.get("prefix") != prefix or header.get("partition") != partition:
        raise SnapshotError("a snapshot of another topic prefix or partition")
    expected = header.get("payload_length")
    here = source.tell()
    if not isinstance(expected, int) or source.seek(0, os.SEEK_END) - here != expected:
        raise SnapshotError("truncated payload")
    source.seek(here)
    payload = _Hashing(source, expected)
    state: Any = None
    failure: Exception | None = None
    try:
        state = _Unpickler(payload, blocks).load()  # our own file (module docstring)
    except Exception as error:  # a SnapshotError: a block missing or damaged
        failure = error
    payload.drain()
    if payload.digest.hexdigest() != header.get("payload_sha256"):
        close_contacts(state)
        raise SnapshotError("corrupt payload (digest mismatch)")
    if isinstance(failure, SnapshotError):
        close_contacts(state)
        raise failure
    if failure is not None:
        raise SnapshotError(f"unreadable payload: {failure!r}") from failure
    if payload.length != expected or not isinstance(state, PartitionState):
        close_contacts(state)
        raise SnapshotError("the payload is not a partition's state")
    if state.number != partition:
        close_contacts(state)
        raise SnapshotError("the payload is not this partition's state")
    checkpoint = Checkpoint(
        prefix=prefix,
        partition=partition,
        events_end=int(header["events_end"]),
        results_end=int(header["results_end"]),
        input_offset=header.get("input_offset"),
        contacts_length=int(header["contacts_length"]),
    )
    return state, checkpoint


def decode(data: bytes, prefix: str, partition: int) -> tuple[PartitionState, Checkpoint]:
    """:func:`load` of a snapshot's bytes."""
    return load(io.BytesIO(data), prefix, partition)


def read(path: Path, prefix: str, partition: int) -> tuple[PartitionState, Checkpoint]:
    """:func:`load` of a snapshot file of a state directory (its blocks beside it)."""
    with path.open("rb", buffering=READ_BUFFER) as source:
        return load(source, prefix, partition, Blocks(path.parent / "blocks"))


def close_contacts(state: Any) -> None:
    """Close the contact file of a state (a restored state that is not used, a dropped one)."""
    close = getattr(getattr(state, "contacts", None), "close", None)
    if close is not None:
        close()


class StateDirectory:
    """One partition's local state directory: its lock, its snapshots, its contact file.

    ``acquire`` takes an exclusive lock on the directory (as a Kafka Streams task locks its
    state directory): two owners of one partition on one host (a zombie and its successor) never
    share it; the one that does not get the lock works without snapshots.
    """

    def __init__(self, root: Path, prefix: str, partition: int) -> None:
        self.path = root / prefix / f"p{partition}"
        self.prefix = prefix
        self.partition = partition
        self._lock: BinaryIO | None = None
        self._blocks: Blocks | None = None

    @property
    def contacts_path(self) -> Path:
        return self.path / "contacts.bin"

    def acquire(self) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        handle = (self.path / "lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock = handle
        return True

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def snapshots(self) -> list[Path]:
        """The snapshot files, newest (largest events offset) first."""

        def end(path: Path) -> int:
            try:
                return int(path.stem.split("-", 1)[1])
            except (IndexError, ValueError):
                return -1

        found = [p for p in self.path.glob("snapshot-*.bin") if end(p) >= 0]
        return sorted(found, key=end, reverse=True)

    @property
    def blocks_path(self) -> Path:
        return self.path / "blocks"

    def write(self, events_end: int, fill: Callable[[BinaryIO, Blocks], object]) -> Path:
        """Write a snapshot atomically: ``fill`` writes it to a temporary file (and its large
        arrays to the block store), which is fsynced and renamed, beside the list of the blocks
        it references (``snapshot-<n>.refs``); the newest KEEP are kept, and the blocks they
        reference."""
        final = self.path / f"snapshot-{events_end}.bin"
        partial = self.path / f".snapshot-{events_end}.partial"
        if self._blocks is None:
            self._blocks = Blocks(self.blocks_path)
        blocks = self._blocks
        blocks.used = set()
        blocks.written = 0
        with partial.open("w+b", buffering=WRITE_BUFFER) as out:
            fill(out, blocks)
            out.flush()
            os.fsync(out.fileno())
        _refs_of(final).write_text("".join(f"{name}\n" for name in sorted(blocks.used)))
        partial.replace(final)
        kept = self.snapshots()
        for old in kept[KEEP:]:
            for path in (old, _refs_of(old)):
                with contextlib.suppress(OSError):
                    path.unlink()
        referenced: set[str] = set()
        for snapshot in kept[:KEEP]:
            try:
                referenced |= set(_refs_of(snapshot).read_text().split())
            except OSError:
                return final  # a snapshot whose blocks are not known: delete none
        blocks.keep_only(referenced)
        return final

    @property
    def written(self) -> int:
        """The bytes of new blocks the last snapshot wrote."""
        return 0 if self._blocks is None else self._blocks.written

    def clear(self) -> None:
        """Forget every snapshot and block (their contact file is about to be rewritten from
        scratch)."""
        for old in self.snapshots():
            for path in (old, _refs_of(old)):
                with contextlib.suppress(OSError):
                    path.unlink()
        Blocks(self.blocks_path).keep_only(set())
        self._blocks = None


def _refs_of(snapshot: Path) -> Path:
    return snapshot.with_suffix(".refs")
