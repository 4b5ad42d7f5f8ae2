"""No single record stops the views of a partition, and none is skipped (issue 10): the worker's
loop over a fake log and an in-memory database with Postgres' limits (tests/projections/
fake_log.py). A batch that cannot be written is narrowed down to the record at fault, which is
dead-lettered while the others are written; text Postgres cannot hold is stored with U+FFFD; the
stored offset never passes a record that was not applied; a worker retrying or stuck is red."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from bench.harness.histories import CONTENT, Simulator
from schemas import Event
from services.common.health import run_checks
from services.projections.consumer import Narrowing, Partition, ViewsWorker
from services.projections.service import health_checks, metrics_text
from services.projections.store import OffsetMovedError, PartitionBatch, is_record_fault
from services.projections.views import history_row, storable
from tests.projections.fake_log import (
    Database,
    Log,
    Running,
    install,
    new_worker,
    wait_until,
)
from tests.projections.poison import poisoned_history


async def project(
    monkeypatch: pytest.MonkeyPatch, events: list[Event], *, one_by_one: bool = False
) -> tuple[Database, ViewsWorker]:
    """Run a worker over ``events`` until every offset is stored; ``one_by_one``: the records
    arrive one at a time, each after the last was written (another split into batches)."""
    log, db = Log(), Database()
    install(monkeypatch, log, db)
    worker = new_worker()
    async with Running(worker):
        if one_by_one:
            for event in events:
                log.events([event])
                await wait_until(
                    "the record written", lambda: db.offsets.get(0) == len(log.records)
                )
        else:
            log.events(events)
        await wait_until("every offset stored", lambda: db.offsets.get(0) == len(events))
        await wait_until(
            "the commit noticed", lambda: worker.status()["stored_offsets"] == {"0": len(events)}
        )
    return db, worker


async def test_a_poisoned_record_is_narrowed_down_and_the_partition_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, ids, at = poisoned_history()
    db, worker = await project(monkeypatch, events)

    # Every good message of both accounts is in the views, written after the poisoned ones.
    for name in ("a1", "b2", "a2"):
        assert ids[name] in db.messages, name
    assert db.messages[ids["b2"]]["account_id"] == "acct-b"
    # The NULs are stored as U+FFFD; the history keeps the original, escaped.
    nul = db.messages[ids["nul"]]
    assert (nul["name"], nul["subject"]) == ("Nul\ufffdname", "Hi\ufffdthere")
    detail = json.loads(db.history[(ids["nul"], 1)]["detail"])
    assert detail["content"]["body"] == "a\ufffdb"
    assert json.loads(detail["unstorable"]["content.subject"]) == "Hi\x00there"
    assert json.loads(detail["unstorable"]["content.body"]) == "a\x00b"
    # The release past int32 could not be stored in any form: a dead letter with the reason;
    # the message's later events follow it there (out of order), nothing is skipped silently.
    assert "OverflowError" in db.dead[at["big"]].error
    assert db.dead[at["big"]].error.startswith("unstorable:")
    applied = {(k[0], k[1]) for k in db.history}
    for offset, event in enumerate(events):
        assert ((event.message_id, event.sequence) in applied) != (offset in db.dead), offset
    assert db.messages[ids["big"]]["status"] == "sending"
    assert db.messages[ids["big"]]["released"] == 0
    assert worker.dead_letters == len(db.dead) >= 2
    assert worker.retries >= 2  # the batch, then the record alone
    assert worker.retrying == {} and worker.problem(0) is None  # written since: green again


async def test_any_split_into_batches_dead_letters_and_sanitizes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a rebuild relies on: the live worker met the records in other batches.
    events, _, _ = poisoned_history()
    whole, _ = await project(monkeypatch, events)
    single, _ = await project(monkeypatch, events, one_by_one=True)
    assert whole.tables() == single.tables()


async def test_a_retaken_partition_ignores_records_fetched_before_its_seek(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bug that let the stored offset pass unwritten events: a failed write was noticed
    after the next poll had fetched newer records; the partition was taken again (folded up to
    the stored offset, consumer moved back there) and those newer records went into the new
    fold, so the next batch moved the offset over the failed batch's records."""
    sim = Simulator()
    for _ in range(3):
        sim.create()
    first, second, third = sim.events
    log, db = Log(), Database()
    install(monkeypatch, log, db)

    def fail_once(work: PartitionBatch) -> None:
        if db.writes == 1:
            # Postgres refuses this batch; meanwhile another event is committed to the log.
            log.events([third])
            raise asyncpg.exceptions.DataError("invalid input syntax")

    db.before_write = fail_once
    log.events([first, second])
    worker = new_worker()
    async with Running(worker):
        await wait_until("every offset stored", lambda: db.offsets.get(0) == 3)
    assert sorted(db.messages) == sorted(e.message_id for e in (first, second, third))
    assert db.dead == {}


async def test_a_failing_database_turns_health_red_with_the_reason_until_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Simulator()
    message = sim.create()
    log, db = Log(), Database()
    install(monkeypatch, log, db)
    revoked = True

    def permission(work: PartitionBatch) -> None:
        if revoked:
            raise asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table")

    db.before_write = permission
    log.events(sim.events)
    worker = new_worker()
    checks = health_checks({}, worker)
    async with Running(worker):
        await wait_until("two failed writes", lambda: worker.retries >= 2)
        healthy, report = await run_checks("projections", checks, 1.0)
        assert not healthy
        error = report["checks"]["partition-0"]["error"]
        assert "retrying" in error and "InsufficientPrivilegeError" in error
        metrics = metrics_text(worker)
        assert 'mailctl_projection_retrying{partition="0"} 1' in metrics
        assert f"mailctl_projection_retries_total {worker.retries}" in metrics
        assert db.offsets.get(0, 0) == 0 and db.dead == {}  # nothing dead-lettered meanwhile
        revoked = False
        await wait_until("the views written", lambda: db.offsets.get(0) == len(log.records))
        # Green once the worker has seen its write committed.
        await wait_until("the commit noticed", lambda: worker.problem(0) is None)
        healthy, _ = await run_checks("projections", checks, 1.0)
        assert healthy
        assert 'mailctl_projection_retrying{partition="0"} 0' in metrics_text(worker)
    assert message in db.messages


async def test_a_write_held_by_a_lock_turns_health_red_as_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Simulator()
    sim.create()
    log, db = Log(), Database()
    install(monkeypatch, log, db)
    db.hold = asyncio.Event()
    log.events(sim.events)
    worker = new_worker(stuck_after_s=0.0)
    checks = health_checks({}, worker)
    async with Running(worker):
        await wait_until("a write in flight", lambda: db.writes == 0 and worker._writer is not None)
        await wait_until("stuck", lambda: (worker.problem(0) or "").startswith("stuck"))
        healthy, report = await run_checks("projections", checks, 1.0)
        assert not healthy
        assert "in flight" in report["checks"]["partition-0"]["error"]
        db.hold.set()
        await wait_until("the views written", lambda: db.offsets.get(0) == len(log.records))
        await wait_until("the commit noticed", lambda: worker.problem(0) is None)


async def test_a_batch_another_instance_wrote_first_is_read_again_without_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim = Simulator()
    sim.create()
    log, db = Log(), Database()
    install(monkeypatch, log, db)
    worker = new_worker()
    problems: list[str | None] = []

    def moved_once(work: PartitionBatch) -> None:
        if db.writes == 1:
            raise OffsetMovedError("stored offset is not 0")
        problems.append(worker.problem(0))  # as the batch is written again

    db.before_write = moved_once
    log.events(sim.events)
    async with Running(worker):
        await wait_until("the views written", lambda: db.offsets.get(0) == len(log.records))
    assert problems == [None]  # a rebalance's race is not a failure to report
    assert worker.retries == 1 and db.dead == {}


def test_a_failed_batch_is_bisected_down_to_its_record_at_fault() -> None:
    narrowing = Narrowing()
    error = OverflowError("value out of int32 range")
    # Records 10..17 failed together: written again as two halves, 10..13 and 14..17.
    assert narrowing.learn(PartitionBatch(0, 10, 18, records=list(range(10, 18))), error)
    assert narrowing.cuts == {13, 17} and narrowing.until == 18
    part = Partition(0, 10, narrowing=narrowing)
    part.pending = PartitionBatch(0, 10, 13, records=[10, 11, 12])
    assert not part.full(200_000)
    part.pending.records.append(13)
    assert part.full(200_000)  # the first half is a batch of its own
    # The second half fails too: cut again, then the record that fails alone is dead-lettered.
    assert narrowing.learn(PartitionBatch(0, 14, 18, records=[14, 15, 16, 17]), error)
    assert narrowing.cuts == {13, 15, 17}
    assert narrowing.learn(PartitionBatch(0, 14, 16, records=[14, 15]), error)
    assert narrowing.learn(PartitionBatch(0, 15, 16, records=[15]), error)
    assert narrowing.skip == {15: "unstorable: OverflowError('value out of int32 range')"}
    assert not narrowing.learn(PartitionBatch(0, 15, 16, records=[15]), error)
    assert not narrowing.done(17) and narrowing.done(18)


def test_only_errors_of_the_rows_themselves_are_record_faults() -> None:
    assert is_record_fault(asyncpg.exceptions.CharacterNotInRepertoireError("0x00"))
    assert is_record_fault(OverflowError("value out of int32 range"))
    assert is_record_fault(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"))
    assert is_record_fault(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not is_record_fault(asyncpg.exceptions.InsufficientPrivilegeError("denied"))
    assert not is_record_fault(ConnectionResetError())
    assert not is_record_fault(asyncpg.exceptions.LockNotAvailableError("lock"))


def test_content_is_kept_as_stored_when_it_holds_nothing_unstorable() -> None:
    assert storable("plain") == "plain"
    assert storable("zoë\x00\ud800") == "zoë\ufffd\ufffd"
    sim = Simulator()
    sim.create()
    detail = json.loads(history_row(sim.events[0])[-1])
    assert "unstorable" not in detail
    assert detail["content"]["subject"] == CONTENT.subject
