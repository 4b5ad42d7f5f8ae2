"""Partition ownership, shared by the dispatcher's processor, the delivery worker and the
projections consumer (docs/services.md, "Partition ownership").

A worker subscribes its consumer with `Ownership.listener()` and supplies only three things:
its `take` (fence the previous owner, rebuild its state; returns what it holds for the
partition), its `drop` and the input `position` of what it holds (for the lag). This piece
does the rest, once for all three:

* the rebalance listener: a revoked partition is dropped, an assigned one taken (concurrently);
* a take that fails (Kafka or Postgres down during a rebalance) pauses the partition in the
  consumer and leaves it *orphaned*: `/health` reports it unowned (`check` raises, `status`
  lists it) and `retake_orphans`, called by the worker's loop, tries again after
  `retry_s`; the retry first moves the input back to the committed offset, so nothing fetched
  meanwhile is skipped;
* `lost` (the worker was fenced, or its transaction failed) drops a partition and pauses it or
  takes it again;
* owned partitions and their lag, from what the consumer already knows (no request).

`lock` is held while partitions change hands; a worker holds it while it processes a batch,
so a revocation never drops a partition in the middle of its work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from services.common.health import lag_problem

log = structlog.get_logger(__name__)

P = TypeVar("P")

#: How long after a failed take the next attempt is made.
RETRY_S = 2.0


class Ownership(Generic[P]):
    """The partitions of one topic that one consumer owns."""

    def __init__(
        self,
        topic: str,
        *,
        take: Callable[[int], Awaitable[P]],
        drop: Callable[[int, P], Awaitable[None]],
        position: Callable[[P], int | None],
        retry_s: float = RETRY_S,
        fenced: tuple[type[BaseException], ...] = (),
        rewind: bool = True,
        concurrent: bool = True,
        revoked: Callable[[int], None] | None = None,
        deferred: bool = False,
    ) -> None:
        self.topic = topic
        self._take = take
        self._drop = drop
        self._position = position
        self.retry_s = retry_s
        # Errors of a take that mean another owner has the partition: paused, not retried.
        self.fenced = fenced
        # False for a worker whose take seeks the input itself (to an offset it stores).
        self.rewinds = rewind
        # Take the partitions of one assignment concurrently (each take mostly waits).
        self.concurrent = concurrent
        # Called for every revoked partition, owned or not (a worker's own bookkeeping).
        self._revoked = revoked
        # True: the rebalance listener only pauses and records an assigned partition; the
        # worker's loop takes it (`retake_orphans`). aiokafka sends no heartbeat while
        # on_partitions_assigned runs (its heartbeat task restarts only after the callback), so
        # a take longer than the session timeout inside the callback gets the member expelled,
        # the group rebalances, the takes start again: a livelock (docs/services.md).
        self.deferred = deferred
        self.partitions: dict[int, P] = {}
        # Assigned partitions that could not be taken: number -> earliest next attempt.
        self.orphans: dict[int, float] = {}
        self.lock = asyncio.Lock()
        # Takes under way in `retake_orphans`: number -> task (cancelled on revocation).
        self.taking: dict[int, asyncio.Task[bool]] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.takes_failed = 0

    def listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    def attach(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer

    def get(self, number: int) -> P | None:
        return self.partitions.get(number)

    # ------------------------------------------------------------------ taking

    async def try_take(self, number: int, *, rewind: bool = False) -> bool:
        """Take a partition (call with `lock` held). With `rewind` first move the input back to
        the committed offset: records may have been fetched and skipped since it was last
        owned. On a new assignment the consumer starts there by itself, and a second seek would
        make it read records twice. On failure the partition is paused and orphaned."""
        try:
            if rewind and self.rewinds:
                await self._rewind(number)
            part = await self._take(number)
        except self.fenced:
            log.warning("fenced while taking the partition", topic=self.topic, partition=number)
            self.orphans.pop(number, None)  # another owner has it: not retried
            self.pause(number)
            return False
        except Exception:
            self.takes_failed += 1
            log.exception(
                "partition could not be taken; will retry", topic=self.topic, partition=number
            )
            self.orphan(number, self.retry_s)
            return False
        self.partitions[number] = part
        self.orphans.pop(number, None)
        consumer = self.consumer
        tp = TopicPartition(self.topic, number)
        if consumer is not None and tp in consumer.assignment():
            consumer.resume(tp)
        return True

    async def retake_orphans(self) -> None:
        """Try again to take the orphaned partitions that are due (the worker's loop calls it)."""
        if not self.orphans or self.consumer is None:
            return
        now = time.monotonic()
        async with self.lock:
            assigned = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
            due_now: list[int] = []
            for number, due in sorted(self.orphans.items()):
                if number not in assigned:
                    self.orphans.pop(number, None)  # revoked meanwhile: not ours to take
                elif due <= now and number not in self.partitions:
                    due_now.append(number)
            # Each take is a task the rebalance listener cancels when its partition is revoked
            # meanwhile (the revocation waits for this lock: an obsolete take must not hold it,
            # nor the member's rejoin, for its whole length).
            if self.concurrent:
                await asyncio.gather(*(self._take_task(n) for n in due_now))
            else:
                for number in due_now:
                    await self._take_task(number)

    async def _take_task(self, number: int) -> None:
        task = asyncio.create_task(self.try_take(number, rewind=True))
        self.taking[number] = task
        try:
            await asyncio.wait({task})  # our own cancellation reaches the task below
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self.taking.pop(number, None)
        if task.cancelled():
            log.info("take abandoned: partition revoked", topic=self.topic, partition=number)
            return
        task.result()

    async def _rewind(self, number: int) -> None:
        consumer = self.consumer
        tp = TopicPartition(self.topic, number)
        if consumer is None or tp not in consumer.assignment():
            return
        committed = await consumer.committed(tp)
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)

    # ------------------------------------------------------------------ losing

    def orphan(self, number: int, delay: float) -> None:
        """Not owned, to be taken again after `delay` seconds; paused meanwhile."""
        self.pause(number)
        self.orphans[number] = time.monotonic() + delay

    def pause(self, number: int) -> None:
        tp = TopicPartition(self.topic, number)
        if self.consumer is not None and tp in self.consumer.assignment():
            self.consumer.pause(tp)

    async def drop(self, number: int) -> None:
        part = self.partitions.pop(number, None)
        if part is not None:
            await self._drop(number, part)
            log.info("partition dropped", topic=self.topic, partition=number)

    async def drop_all(self) -> None:
        for number in list(self.partitions):
            await self.drop(number)

    async def fenced_out(self, number: int) -> None:
        """Another owner has the partition: drop it and stop reading it until the group gives
        it back (call with `lock` held)."""
        await self.drop(number)
        self.pause(number)

    async def rebuild(self, number: int) -> None:
        """What is held may differ from the committed log: drop it and take the partition
        again from the committed offset (call with `lock` held)."""
        await self.drop(number)
        await self.try_take(number, rewind=True)

    # ------------------------------------------------------------------ reporting

    def owned(self) -> list[int]:
        return sorted(self.partitions)

    def lag(self) -> dict[str, int | None]:
        """Each owned partition's lag, from what the consumer already knows (no request)."""
        lag: dict[str, int | None] = {}
        consumer = self.consumer
        for number, part in sorted(self.partitions.items()):
            end = None
            if consumer is not None:
                end = consumer.last_stable_offset(TopicPartition(self.topic, number))
            position = self._position(part)
            lag[str(number)] = None if end is None or position is None else max(0, end - position)
        return lag

    def assigned(self) -> list[int]:
        """The partitions the group gave this consumer: owned or orphaned."""
        return sorted({*self.partitions, *self.orphans})

    def problem(self, number: int, max_lag: int, unit: str = "records") -> str | None:
        """The `partition-N` entry of /health: an orphaned partition is reported unowned, an
        owned one fails past `max_lag`."""
        if number in self.orphans:
            return "assigned but not taken (being taken, or Kafka or Postgres failing); retrying"
        return lag_problem(self.lag().get(str(number)), max_lag, unit)

    def status(self) -> dict[str, Any]:
        return {"partitions": self.owned(), "orphaned": sorted(self.orphans), "lag": self.lag()}

    def check(self) -> None:
        """Raises unless every partition the group gave this consumer is owned."""
        if self.orphans:
            raise RuntimeError(f"partitions assigned but not taken: {sorted(self.orphans)}")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, ownership: Ownership[Any]) -> None:
        self.ownership = ownership

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        ownership = self.ownership
        for tp in revoked:
            if tp.topic == ownership.topic and tp.partition in ownership.taking:
                ownership.taking[tp.partition].cancel()
        async with ownership.lock:
            for tp in revoked:
                ownership.orphans.pop(tp.partition, None)
                await ownership.drop(tp.partition)
                if ownership._revoked is not None:
                    ownership._revoked(tp.partition)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # The partitions are taken concurrently: each take is mostly waiting for the broker or
        # the database, so a restart resumes sooner.
        ownership = self.ownership
        if ownership.deferred:
            # Return at once, so the consumer's heartbeats start again: the worker's loop takes
            # them (paused until then; the take rewinds to the committed offset, so a record
            # fetched before the pause is read again, never skipped). No lock: a batch in
            # progress must not hold the callback (and the heartbeats) either.
            for tp in assigned:
                if tp.topic == ownership.topic and tp.partition not in ownership.partitions:
                    ownership.orphan(tp.partition, 0.0)
            return
        async with ownership.lock:
            numbers = [
                tp.partition
                for tp in sorted(assigned, key=lambda tp: tp.partition)
                if tp.partition not in ownership.partitions
            ]
            if ownership.concurrent:
                await asyncio.gather(*(ownership.try_take(number) for number in numbers))
            else:
                for number in numbers:
                    await ownership.try_take(number)
