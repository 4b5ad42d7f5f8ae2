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
* the header, JSON: topic prefix, partition, ``events_end`` and ``results_end`` (the offsets of
  the first record of each topic it does not cover), ``input_offset`` (the committed input
  offset then), ``contacts_length`` (the bytes of the contact file it covers), the payload's
  length and its BLAKE2b-256 digest;
* the payload: the pickled :class:`PartitionState` (books, lifecycle, results, copies).

Written to a temporary name, fsynced and renamed, so a reader sees a whole file or none; the two
newest are kept. A snapshot is used only if its magic, version, prefix and partition are the
expected ones, its digest matches and its offsets are not beyond the log's ends (a snapshot of a
log that was since deleted or recreated is stale); otherwise the next older one is tried, and
with none the partition is folded from the beginning: never a wrong state. The payload is pickle,
read only from the owner's own state directory after its digest is checked: the directory must
not be writable by anyone the service does not trust (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from services.dispatcher.decider import PartitionState

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Checkpoint",
    "SnapshotError",
    "StateDirectory",
    "decode",
    "encode",
]

MAGIC = b"MCTLSNAP"
#: 2: the books pickle their compact indexes (core/index.py); a version-1 snapshot is refused.
FORMAT_VERSION = 2
_HEAD = struct.Struct(">8sHI")
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


def encode(state: PartitionState, checkpoint: Checkpoint) -> bytes:
    """The snapshot file's bytes for ``state`` at ``checkpoint``."""
    payload = pickle.dumps(state, protocol=5)
    header = json.dumps(
        {
            "prefix": checkpoint.prefix,
            "partition": checkpoint.partition,
            "events_end": checkpoint.events_end,
            "results_end": checkpoint.results_end,
            "input_offset": checkpoint.input_offset,
            "contacts_length": checkpoint.contacts_length,
            "payload_length": len(payload),
            "payload_blake2b": hashlib.blake2b(payload, digest_size=32).hexdigest(),
        }
    ).encode()
    return _HEAD.pack(MAGIC, FORMAT_VERSION, len(header)) + header + payload


def read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header of a snapshot and where its payload starts (raises SnapshotError)."""
    if len(data) < _HEAD.size:
        raise SnapshotError("truncated: no header")
    magic, version, length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError("not a snapshot (magic)")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"unknown snapshot version {version} (this build reads {FORMAT_VERSION})"
        )
    start = _HEAD.size + length
    try:
        header = json.loads(data[_HEAD.size : start])
    except ValueError as error:
        raise SnapshotError(f"unreadable header: {error}") from error
    if not isinstance(header, dict):
        raise SnapshotError("unreadable header")
    return header, start


def decode(data: bytes, prefix: str, partition: int) -> tuple[PartitionState, Checkpoint]:
    """The state and checkpoint of a snapshot of ``prefix``'s ``partition``; raises
    SnapshotError when it cannot be used as is."""
    header, start = read_header(data)
    if header.get("prefix") != prefix or header.get("partition") != partition:
        raise SnapshotError("a snapshot of another topic prefix or partition")
    payload = data[start:]
    if len(payload) != header.get("payload_length"):
        raise SnapshotError("truncated payload")
    if hashlib.blake2b(payload, digest_size=32).hexdigest() != header.get("payload_blake2b"):
        raise SnapshotError("corrupt payload (digest mismatch)")
    try:
        state = pickle.loads(payload)  # our own file, digest checked (module docstring)
    except Exception as error:
        raise SnapshotError(f"unreadable payload: {error!r}") from error
    if not isinstance(state, PartitionState) or state.number != partition:
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

    def write(self, data: bytes, events_end: int) -> Path:
        """Write a snapshot atomically (temporary name, fsync, rename); keep the newest KEEP."""
        final = self.path / f"snapshot-{events_end}.bin"
        partial = self.path / f".snapshot-{events_end}.partial"
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(final)
        for old in self.snapshots()[KEEP:]:
            with contextlib.suppress(OSError):
                old.unlink()
        return final

    def clear(self) -> None:
        """Forget every snapshot (their contact file is about to be rewritten from scratch)."""
        for old in self.snapshots():
            with contextlib.suppress(OSError):
                old.unlink()
