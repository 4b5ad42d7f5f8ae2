"""The shared partition-ownership piece (services/common/ownership.py), on a consumer fake
that keeps positions the way aiokafka does: a take that fails once is retried, the partition
is reported unowned meanwhile, and the retry reads again from the committed offset."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from services.common.health import PartitionChecks, run_checks
from services.common.ownership import Ownership

TOPIC = "t.sends"


@dataclass
class FakeConsumer:
    assigned: set[TopicPartition] = field(default_factory=set)
    paused: set[TopicPartition] = field(default_factory=set)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    commits: dict[TopicPartition, int] = field(default_factory=dict)
    end: int = 10

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = 0

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.end

    def fetch(self, tp: TopicPartition) -> list[int]:
        """The offsets a fetch returns (and moves past), unless the partition is paused."""
        if tp in self.paused or tp not in self.assigned:
            return []
        start = self.positions.get(tp, 0)
        self.positions[tp] = self.end
        return list(range(start, self.end))


@dataclass
class Held:
    number: int
    next_offset: int | None = None


class FlakyTake:
    """A take that fails `failures` times (the ledger down during a rebalance), then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, number: int) -> Held:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("the database is down")
        return Held(number)


async def dropped(number: int, held: Held) -> None:
    pass


def ownership_on(consumer: FakeConsumer, take: FlakyTake) -> Ownership[Held]:
    ownership: Ownership[Held] = Ownership(
        TOPIC, take=take, drop=dropped, position=lambda h: h.next_offset, retry_s=0.0
    )
    ownership.attach(consumer)  # type: ignore[arg-type]  # the fake has what it uses
    return ownership


async def health(ownership: Ownership[Held]) -> tuple[bool, dict[str, object]]:
    async def ok() -> None:
        return None

    checks = PartitionChecks(
        {"worker": ok}, ownership.assigned, lambda n: ownership.problem(n, 1000)
    )
    return await run_checks("test", checks, 1.0)


def test_a_failed_take_is_retried_from_the_committed_offset_and_shown_unowned_meanwhile() -> None:
    async def scenario() -> None:
        tp = TopicPartition(TOPIC, 0)
        consumer = FakeConsumer(assigned={tp}, commits={tp: 3})
        consumer.positions[tp] = 3  # a new assignment starts at the committed offset
        take = FlakyTake(failures=1)
        ownership = ownership_on(consumer, take)

        await ownership.listener().on_partitions_assigned([tp])

        # Not taken: paused (nothing fetched is lost), and /health says so.
        assert ownership.owned() == [] and ownership.orphans.keys() == {0}
        assert tp in consumer.paused and consumer.fetch(tp) == []
        healthy, report = await health(ownership)
        assert not healthy
        entry = report["checks"]["partition-0"]  # type: ignore[index]
        assert entry["ok"] is False and "not taken" in entry["error"]
        try:
            ownership.check()
            raise AssertionError("check passed with an orphaned partition")
        except RuntimeError as error:
            assert "[0]" in str(error)

        # Meanwhile a fetch that raced the pause moved the position past records 3..9.
        consumer.positions[tp] = consumer.end

        await ownership.retake_orphans()

        assert take.calls == 2 and ownership.owned() == [0] and not ownership.orphans
        assert tp not in consumer.paused
        assert consumer.fetch(tp) == list(range(3, 10)), "records skipped"
        ownership.check()
        healthy, _ = await health(ownership)
        assert healthy

    asyncio.run(scenario())


def test_a_partition_revoked_while_orphaned_is_not_taken() -> None:
    async def scenario() -> None:
        tp = TopicPartition(TOPIC, 1)
        consumer = FakeConsumer(assigned={tp})
        take = FlakyTake(failures=1)
        ownership = ownership_on(consumer, take)
        await ownership.listener().on_partitions_assigned([tp])
        consumer.assigned.clear()

        await ownership.retake_orphans()

        assert take.calls == 1 and ownership.owned() == [] and not ownership.orphans
        ownership.check()

    asyncio.run(scenario())


def test_a_revoked_partition_is_dropped_and_lag_is_from_the_position() -> None:
    async def scenario() -> None:
        tp = TopicPartition(TOPIC, 2)
        consumer = FakeConsumer(assigned={tp})
        drops: list[int] = []

        async def drop(number: int, held: Held) -> None:
            drops.append(number)

        ownership: Ownership[Held] = Ownership(
            TOPIC, take=FlakyTake(0), drop=drop, position=lambda h: h.next_offset
        )
        ownership.attach(consumer)  # type: ignore[arg-type]
        await ownership.listener().on_partitions_assigned([tp])
        held = ownership.get(2)
        assert held is not None
        assert ownership.lag() == {"2": None}
        held.next_offset = 4
        assert ownership.lag() == {"2": 6}

        await ownership.listener().on_partitions_revoked([tp])

        assert drops == [2] and ownership.owned() == []

    asyncio.run(scenario())


class FlakyLedger:
    """The delivery ledger's take, failing once (Postgres down during a rebalance)."""

    def __init__(self) -> None:
        self.calls = 0

    async def take(self, topic: str, partition: int, owner: str) -> tuple[int, int]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("the database is down")
        return 7, 0


def test_the_delivery_worker_retakes_a_partition_whose_take_failed() -> None:
    from services.common.settings import Settings
    from services.common.topics import Topics
    from services.delivery.worker import DeliveryWorker

    async def scenario() -> None:
        topics = Topics("t")
        worker = DeliveryWorker(Settings(), topics)
        worker._ledger = FlakyLedger()  # type: ignore[assignment]
        worker.running = True
        tp = TopicPartition(topics.sends, 0)
        consumer = FakeConsumer(assigned={tp}, commits={tp: 2})
        consumer.positions[tp] = 2
        worker.ownership.attach(consumer)  # type: ignore[arg-type]

        await worker.ownership.listener().on_partitions_assigned([tp])

        assert worker.status()["orphaned"] == [0] and worker.status()["partitions"] == []
        try:
            await worker.check()
            raise AssertionError("the worker reported healthy with a partition not taken")
        except RuntimeError as error:
            assert "not taken" in str(error)
        consumer.positions[tp] = consumer.end  # records fetched meanwhile
        worker.ownership.retry_s = 0.0
        worker.ownership.orphans[0] = 0.0

        await worker.ownership.retake_orphans()

        assert worker.status()["partitions"] == [0] and worker.owned[0].epoch == 7
        assert consumer.fetch(tp) == list(range(2, 10)), "sends skipped"
        await worker.check()

    asyncio.run(scenario())


class BlockingTake:
    """A take that waits until `release` is set (a large partition's rebuild), recording whether
    it was cancelled."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def __call__(self, number: int) -> Held:
        self.started.append(number)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        return Held(number)


def deferred_on(consumer: FakeConsumer, take: BlockingTake) -> Ownership[Held]:
    ownership: Ownership[Held] = Ownership(
        TOPIC, take=take, drop=dropped, position=lambda h: h.next_offset, deferred=True
    )
    ownership.attach(consumer)  # type: ignore[arg-type]
    return ownership


async def spin(turns: int = 20) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def test_a_deferred_assignment_returns_before_the_take_so_heartbeats_go_on() -> None:
    """aiokafka sends no heartbeat while on_partitions_assigned runs: a take inside it that
    outlasts the session timeout gets the member expelled (the zombie-dispatcher livelock). With
    `deferred` the callback returns at once, even while a batch holds the lock, and the loop's
    `retake_orphans` takes the partition from the committed offset."""

    async def scenario() -> None:
        tp = TopicPartition(TOPIC, 0)
        consumer = FakeConsumer(assigned={tp}, commits={tp: 3})
        take = BlockingTake()
        ownership = deferred_on(consumer, take)

        async with ownership.lock:  # a batch in progress
            callback = asyncio.create_task(ownership.listener().on_partitions_assigned([tp]))
            await spin()
            assert callback.done(), "the rebalance callback waited (no heartbeats meanwhile)"
        assert take.started == [] and ownership.orphans.keys() == {0}
        assert tp in consumer.paused and consumer.fetch(tp) == []

        consumer.positions[tp] = consumer.end  # a fetch that raced the pause
        loop_turn = asyncio.create_task(ownership.retake_orphans())
        await spin()
        assert take.started == [0] and not loop_turn.done()
        take.release.set()
        await loop_turn

        assert ownership.owned() == [0] and not ownership.orphans and not ownership.taking
        assert consumer.fetch(tp) == list(range(3, 10)), "records skipped"

    asyncio.run(scenario())


def test_a_partition_revoked_mid_take_is_abandoned_at_once() -> None:
    async def scenario() -> None:
        tp = TopicPartition(TOPIC, 1)
        consumer = FakeConsumer(assigned={tp})
        take = BlockingTake()
        ownership = deferred_on(consumer, take)
        await ownership.listener().on_partitions_assigned([tp])
        loop_turn = asyncio.create_task(ownership.retake_orphans())
        await spin()
        assert take.started == [1]

        consumer.assigned.clear()
        revoke = asyncio.create_task(ownership.listener().on_partitions_revoked([tp]))
        await spin()

        assert take.cancelled == [1], "the obsolete take went on"
        assert revoke.done() and loop_turn.done()
        await revoke
        await loop_turn  # the loop goes on
        assert ownership.owned() == [] and not ownership.orphans and not ownership.taking

    asyncio.run(scenario())


def test_a_take_fenced_after_a_deferred_assignment_is_not_retried() -> None:
    class Fenced(Exception):
        pass

    async def scenario() -> None:
        tp = TopicPartition(TOPIC, 2)
        consumer = FakeConsumer(assigned={tp})
        calls: list[int] = []

        async def take(number: int) -> Held:
            calls.append(number)
            raise Fenced

        ownership: Ownership[Held] = Ownership(
            TOPIC,
            take=take,
            drop=dropped,
            position=lambda h: h.next_offset,
            fenced=(Fenced,),
            deferred=True,
        )
        ownership.attach(consumer)  # type: ignore[arg-type]
        await ownership.listener().on_partitions_assigned([tp])
        await ownership.retake_orphans()
        await ownership.retake_orphans()

        # One attempt (each would fence the other owner again), paused, not orphaned.
        assert calls == [2] and not ownership.orphans and tp in consumer.paused

    asyncio.run(scenario())
