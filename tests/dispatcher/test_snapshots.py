"""Snapshots of a partition's state (services/dispatcher/snapshots.py, docs/scale.md): a
snapshot plus the fold of the records after it equals the fold of the whole history, and a
snapshot that cannot be trusted is refused (the processor then folds from the log)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Contact, DeliveryPlan, Event
from services.dispatcher import snapshots
from services.dispatcher.contacts import FileContacts
from services.dispatcher.decider import PartitionState
from services.dispatcher.snapshots import (
    FORMAT_VERSION,
    MAGIC,
    Checkpoint,
    SnapshotError,
    StateDirectory,
    decode,
    encode,
)
from tests.core.test_properties import execute, programs

PREFIX = "t-snap"


def _fold(events: list[Event], path: Path) -> PartitionState:
    state = PartitionState(0, contacts=FileContacts(path))
    for event in events:
        state.fold(event)
    return state


def _checkpoint(state: PartitionState, events_end: int) -> Checkpoint:
    contacts = state.contacts
    assert isinstance(contacts, FileContacts)
    contacts.flush()
    return Checkpoint(PREFIX, 0, events_end, 0, None, contacts.length)


def _picture(state: PartitionState) -> dict[str, Any]:
    """Everything the state decides with, contacts' data included."""
    out: dict[str, Any] = {"active": sorted(map(str, state.active))}
    for message_id, message in state.messages.items():
        book = message.book
        ids = book.audience_ids()
        out[str(message_id)] = (
            message.snapshot(),
            state.contacts.read_json(message_id, book, ids),
        )
    return out


@settings(max_examples=60, deadline=None)
@given(programs, st.floats(min_value=0, max_value=1))
def test_a_snapshot_and_the_tail_fold_equal_the_full_fold(
    program: tuple[DeliveryPlan, list[Contact], list[tuple[Any, ...]]], where: float
) -> None:
    run = execute(*program)
    log = run.log
    cut = int(where * len(log))
    with tempfile.TemporaryDirectory() as tmp:
        full = _fold(log, Path(tmp) / "full.bin")
        part = _fold(log[:cut], Path(tmp) / "part.bin")
        data = encode(part, _checkpoint(part, cut))
        part.contacts.close()  # type: ignore[attr-defined]
        restored, checkpoint = decode(data, PREFIX, 0)
        assert checkpoint.events_end == cut
        for event in log[cut:]:
            restored.fold(event)
        assert _picture(restored) == _picture(full)


def _one_snapshot(tmp: Path) -> bytes:
    run = execute(DeliveryPlan(), [Contact(contact_id="a", email="a@example.org")], [])
    state = _fold(run.log, tmp / "contacts.bin")
    return encode(state, _checkpoint(state, len(run.log)))


def test_a_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    data = bytearray(_one_snapshot(tmp_path))
    data[-10] ^= 0xFF
    with pytest.raises(SnapshotError, match="corrupt"):
        decode(bytes(data), PREFIX, 0)


def test_a_truncated_snapshot_or_another_file_is_refused(tmp_path: Path) -> None:
    data = _one_snapshot(tmp_path)
    with pytest.raises(SnapshotError, match="truncated"):
        decode(data[:-1], PREFIX, 0)
    with pytest.raises(SnapshotError):
        decode(b"not a snapshot at all", PREFIX, 0)
    with pytest.raises(SnapshotError):
        decode(b"", PREFIX, 0)


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    data = _one_snapshot(tmp_path)
    head = len(MAGIC)
    for version in (FORMAT_VERSION + 1, 1):  # 1: the books' dict indexes, before core/index.py
        other = data[:head] + version.to_bytes(2, "big") + data[head + 2 :]
        with pytest.raises(SnapshotError, match="unknown snapshot version"):
            decode(other, PREFIX, 0)


def test_a_snapshot_of_another_partition_or_prefix_is_refused(tmp_path: Path) -> None:
    data = _one_snapshot(tmp_path)
    with pytest.raises(SnapshotError, match="another"):
        decode(data, PREFIX, 1)
    with pytest.raises(SnapshotError, match="another"):
        decode(data, "other-prefix", 0)


def test_a_snapshot_whose_contact_file_was_cut_short_is_refused(tmp_path: Path) -> None:
    data = _one_snapshot(tmp_path)
    (tmp_path / "contacts.bin").write_bytes(b"")
    with pytest.raises(SnapshotError, match="unreadable payload"):
        decode(data, PREFIX, 0)


def test_the_state_directory_is_locked_and_keeps_the_newest_two(tmp_path: Path) -> None:
    first = StateDirectory(tmp_path, PREFIX, 3)
    second = StateDirectory(tmp_path, PREFIX, 3)
    assert first.acquire()
    assert not second.acquire()  # another owner on this host: it works without snapshots
    for end in (10, 30, 20):
        first.write(end, lambda out, blocks: out.write(b"x"))
    assert [p.name for p in first.snapshots()] == ["snapshot-30.bin", "snapshot-20.bin"]
    first.release()
    assert second.acquire()
    second.release()


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every array of a few bytes goes to the block store, in blocks of 64 bytes: the small
    states of these tests take the path a 10,000,000-recipient state takes."""
    monkeypatch.setattr(snapshots, "LARGE", 8)
    monkeypatch.setattr(snapshots, "BLOCK", 64)


def _write(directory: StateDirectory, state: PartitionState, events_end: int) -> Path:
    checkpoint = _checkpoint(state, events_end)
    return directory.write(
        events_end, lambda out, blocks: snapshots.dump(state, checkpoint, out, blocks)
    )


@settings(max_examples=25, deadline=None)
@given(programs, st.floats(min_value=0, max_value=1))
def test_through_the_block_store_a_snapshot_and_the_tail_fold_equal_the_full_fold(
    program: tuple[DeliveryPlan, list[Contact], list[tuple[Any, ...]]], where: float
) -> None:
    run = execute(*program)
    log = run.log
    cut = int(where * len(log))
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr(snapshots, "LARGE", 8)
        patch.setattr(snapshots, "BLOCK", 64)
        full = _fold(log, Path(tmp) / "full.bin")
        directory = StateDirectory(Path(tmp) / "state", PREFIX, 0)
        assert directory.acquire()
        part = _fold(log[:cut], directory.contacts_path)
        path = _write(directory, part, cut)
        part.contacts.close()  # type: ignore[attr-defined]
        restored, checkpoint = snapshots.read(path, PREFIX, 0)
        assert checkpoint.events_end == cut
        for event in log[cut:]:
            restored.fold(event)
        assert _picture(restored) == _picture(full)
        directory.release()


def test_a_later_snapshot_writes_only_the_blocks_that_changed_and_old_blocks_go(
    tmp_path: Path, tiny_blocks: None
) -> None:
    contacts = [Contact(contact_id=f"c{i}", email=f"c{i}@example.org") for i in range(300)]
    run = execute(DeliveryPlan(release_rate=10), contacts, [("tick", 600), ("tick", 1)])
    cut = len(run.log) - 1  # the last release comes after the first snapshot
    directory = StateDirectory(tmp_path, PREFIX, 0)
    assert directory.acquire()
    state = _fold(run.log[:cut], directory.contacts_path)
    first = _write(directory, state, cut)
    stored = {p.name for p in directory.blocks_path.iterdir()}
    total = directory.written
    assert total > 0 and len(stored) > 10  # the arrays went to blocks
    assert set(_refs(first)) == stored
    again = _write(directory, state, cut + 1)  # nothing changed: no block written
    assert directory.written == 0 and _refs(again) == _refs(first)
    state.fold(run.log[cut])  # a release: a few status blocks change, not the ids or tables
    third = _write(directory, state, cut + 2)
    assert 0 < directory.written < total / 4
    assert [p.name for p in directory.snapshots()] == [third.name, again.name]
    assert not first.exists() and not _refs_path(first).exists()
    referenced = set(_refs(third)) | set(_refs(again))
    assert {p.name for p in directory.blocks_path.iterdir()} == referenced
    restored, _ = snapshots.read(third, PREFIX, 0)
    assert _picture(restored) == _picture(state)
    older, _ = snapshots.read(again, PREFIX, 0)  # its blocks were kept
    older.fold(run.log[cut])
    assert _picture(older) == _picture(state)
    directory.release()


def _refs_path(snapshot: Path) -> Path:
    return snapshot.with_suffix(".refs")


def _refs(snapshot: Path) -> list[str]:
    return _refs_path(snapshot).read_text().split()


def test_a_missing_or_damaged_block_makes_the_snapshot_unusable(
    tmp_path: Path, tiny_blocks: None
) -> None:
    run = execute(DeliveryPlan(), [Contact(contact_id="a", email="a@example.org")], [])
    directory = StateDirectory(tmp_path, PREFIX, 0)
    assert directory.acquire()
    state = _fold(run.log, directory.contacts_path)
    path = _write(directory, state, len(run.log))
    names = _refs(path)
    block = directory.blocks_path / names[0]
    data = bytearray(block.read_bytes())
    data[0] ^= 0xFF
    block.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="corrupt block"):
        snapshots.read(path, PREFIX, 0)
    block.unlink()
    with pytest.raises(SnapshotError, match="missing block"):
        snapshots.read(path, PREFIX, 0)
    # A payload referencing blocks, read without its store, is refused too.
    with pytest.raises(SnapshotError, match="unreadable payload"):
        decode(path.read_bytes(), PREFIX, 0)
    directory.release()
