"""The projection worker's Kafka side: reads `<prefix>.events` (read_committed) in a consumer group
and writes each partition's view changes with its offset in one Postgres transaction
(services/projections/store.py). Exactly once: the offsets live beside the rows, so a crash
before a commit loses the batch and the next owner reads it again from the stored offset; a crash
after it finds the offset moved on.

The folded messages of a partition (:class:`services.projections.views.Projector`) are a cache:
on assignment they are rebuilt by reading the partition from the beginning up to the stored
offset (nothing is written meanwhile); after any failed transaction they are dropped and rebuilt
the same way, and the consumer is moved back to the stored offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from core import EventOutOfOrderError
from schemas import decode_event
from services.common.kafka import client_options
from services.common.ownership import Ownership
from services.common.reading import read_range
from services.common.settings import Settings
from services.common.topics import Topics
from services.common.worker import unless_stopped
from services.projections.store import (
    DeadLetterRow,
    OffsetMovedError,
    PartitionBatch,
    Writer,
    is_record_fault,
    load_dead_offsets,
    load_offsets,
)
from services.projections.views import Projector

log = structlog.get_logger(__name__)
#: Ids bound for a unit of work: every log line inside it carries them (docs/projections.md).
bound = structlog.contextvars.bound_contextvars

#: The consumer name under which the live views store their offsets.
LIVE = "views"

#: A batch is written once it would change this many rows (recipients coalesced, history, message
#: rows), once it is this old, or as soon as its partition has nothing more to read right away.
#: Large batches make a catch-up cheap (a contact released and delivered within one batch is
#: written once); several batches let Postgres write one while the next is folded (figures in
#: docs/projections.md).
MAX_BATCH_ROWS = 200_000
MAX_BATCH_AGE_S = 30.0


#: After a batch this large, the objects it added to the folds are frozen for the cyclic GC.
FREEZE_AFTER_ROWS = 10_000

#: A catch-up's first batch is closed at this many rows and each next full one at twice as many,
#: up to the batch limit: Postgres starts writing after a short fold instead of a full batch's
#: (the first fold is the one that nothing overlaps).
FIRST_BATCH_ROWS = 25_000

#: A write in flight for longer than this marks the worker stuck in /health (a lock held, a
#: Postgres that stopped answering).
STUCK_AFTER_S = 60.0

#: Retrying a batch that failed for a reason of the database's (not of its rows) waits this long
#: after the first failure, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


class TakeFailedError(Exception):
    """Raised when a partition cannot be taken (Postgres or Kafka failing): retried later."""


@dataclass
class Narrowing:
    """What the failures of one partition's batches taught about its records, carried from a
    failed batch to the partition taken again (its fold rebuilt, the records read again).

    A failed batch of several records is bisected: ``cuts`` are offsets after which a batch is
    closed (the last record of its first half, and its own last record), so the halves are
    written as batches of their own, and a half that fails is cut again. A record that fails
    alone is the record at fault: ``skip`` holds it with the error, and it is dead-lettered, not
    folded (every record before it was written or dead-lettered, every one after it is read on).
    Whatever the first split into batches, the same records end up dead-lettered: a record is
    dead-lettered exactly when its rows cannot be written after the records before it.
    """

    cuts: set[int] = field(default_factory=set)
    skip: dict[int, str] = field(default_factory=dict)
    until: int = 0  # after the last batch that failed

    def learn(self, failed: PartitionBatch, error: BaseException) -> bool:
        """Take note of ``failed`` failing with ``error`` (a record fault); False when there is
        nothing to narrow (it held no record, or only one already dead-lettered)."""
        records = failed.records
        if len(records) > 1:
            self.cuts.add(records[len(records) // 2 - 1])
            self.cuts.add(records[-1])
            self.until = max(self.until, failed.next_offset)
            return True
        if records and records[0] not in self.skip:
            self.skip[records[0]] = f"unstorable: {error!r}"[:2000]
            self.until = max(self.until, failed.next_offset)
            return True
        return False

    def closes(self, work: PartitionBatch) -> bool:
        """Whether ``work`` ends at a cut (is one half of a failed batch)."""
        return bool(work.records) and work.records[-1] in self.cuts

    def done(self, stored: int) -> bool:
        """Whether everything it knows is in the views (the dead letters are then stored)."""
        return stored >= self.until


@dataclass
class Retrying:
    """A partition whose last write failed and that has not committed since."""

    error: str
    since: float
    attempts: int = 1


@dataclass
class Partition:
    """One owned partition of the events topic: its fold, its stored offset, its open batch."""

    number: int
    stored: int  # committed in Postgres
    projector: Projector = field(default_factory=Projector)
    pending: PartitionBatch | None = None
    opened_at: float = 0.0
    received: bool = False
    submitted: int = -1  # after the last batch handed to the writer (committed or in flight)
    ramp: int = 0  # full batches closed in a row (the batch limit doubles with each)
    narrowing: Narrowing = field(default_factory=Narrowing)
    # Dead letters of the partition stored in Postgres (read when taken, plus those committed
    # since): the same figure whichever process owns the partition, before or after a restart.
    dead_stored: int = 0

    def __post_init__(self) -> None:
        if self.submitted < 0:
            self.submitted = self.stored

    @property
    def position(self) -> int:
        """The next offset to read: after the open batch, or after the last one written."""
        return self.pending.next_offset if self.pending is not None else self.submitted

    def limit(self, max_rows: int) -> int:
        """The size at which the open batch is closed: ``FIRST_BATCH_ROWS`` after a batch that
        was not full (caught up), doubling with each full one, up to ``max_rows``."""
        return min(max_rows, FIRST_BATCH_ROWS << min(self.ramp, 32))

    def full(self, max_rows: int) -> bool:
        work = self.pending
        if work is None:
            return False
        if self.narrowing.closes(work):
            return True  # narrowing a failed batch down to its record at fault
        return len(work.batch) + len(work.dead) >= self.limit(max_rows)

    def close_batch(self, max_rows: int) -> tuple[PartitionBatch, list[tuple[Any, ...]]]:
        """Hand over the open batch with its message rows as they stand now."""
        work = self.pending
        assert work is not None
        self.ramp = self.ramp + 1 if self.full(max_rows) else 0
        rows = self.projector.message_rows(work.batch.messages)
        self.pending = None
        self.submitted = work.next_offset
        return work, rows


def _dead(number: int, record: ConsumerRecord[Any, Any], error: str) -> DeadLetterRow:
    return DeadLetterRow(number, record.offset, record.key, record.value, error[:2000])


def apply_record(part: Partition, record: ConsumerRecord[Any, Any]) -> None:
    """Fold one record into the partition's open batch (opening one if needed).

    One unit of work: its log lines carry the partition and offset, and the message id and
    event type once the record is decoded, bound once here through structlog's contextvars.
    """
    with bound(partition=part.number, offset=record.offset):
        _apply_record(part, record)


def _apply_record(part: Partition, record: ConsumerRecord[Any, Any]) -> None:
    if part.pending is None:
        part.pending = PartitionBatch(part.number, part.submitted, part.submitted)
        part.opened_at = time.monotonic()
    work = part.pending
    work.records.append(record.offset)
    unstorable = part.narrowing.skip.get(record.offset)
    if unstorable is not None:
        # It failed alone: its rows cannot be written. Kept as a dead letter and not folded, as
        # an event the fold refuses (a rebuild narrows down to it and does the same).
        log.error("event dead-lettered", error=unstorable)
        work.dead.append(_dead(part.number, record, unstorable))
        work.next_offset = record.offset + 1
        return
    try:
        event = decode_event(record.value)
    except (ValidationError, ValueError) as error:
        _refused(part, work, record, error)
        return
    with bound(message_id=str(event.message_id), event_type=event.type):
        try:
            part.projector.apply(event, work.batch)
        except (ValidationError, ValueError, EventOutOfOrderError) as error:
            _refused(part, work, record, error)
            return
    work.next_offset = record.offset + 1


def _refused(
    part: Partition, work: PartitionBatch, record: ConsumerRecord[Any, Any], error: Exception
) -> None:
    """An undecodable record, or an event the fold refuses (raised before anything changed):
    kept with the error in the batch's transaction; processing goes on."""
    log.error("event dead-lettered", error=repr(error))
    work.dead.append(_dead(part.number, record, repr(error)))
    work.next_offset = record.offset + 1


async def load_stored(dsn: str, consumer: str, topic: str, number: int) -> tuple[int, set[int]]:
    """The partition's stored next offset and the offsets of its dead letters."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        offsets = await load_offsets(conn, consumer, topic, [number])
        return offsets[number], await load_dead_offsets(conn, consumer, topic, number)
    finally:
        await conn.close()


def fold_record(projector: Projector, value: bytes) -> None:
    """Fold a record already written to the views (rebuilding the cache): no rows recorded."""
    # A record that fails was dead-lettered when it was first read; it is skipped the same way.
    with contextlib.suppress(ValidationError, ValueError, EventOutOfOrderError):
        projector.apply(decode_event(value))


class ViewsWorker:
    """Owns partitions of the events topic (consumer group `<prefix>-projections`) and keeps the
    views of their messages up to date in Postgres."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        *,
        consumer_name: str = LIVE,
        max_batch_rows: int = MAX_BATCH_ROWS,
        max_batch_age_s: float = MAX_BATCH_AGE_S,
        stuck_after_s: float = STUCK_AFTER_S,
    ) -> None:
        self.stuck_after_s = stuck_after_s
        self.settings = settings
        self.topics = topics
        self.consumer_name = consumer_name
        self.max_batch_rows = max_batch_rows
        self.max_batch_age_s = max_batch_age_s
        # The shared ownership piece (services/common/ownership.py). The take seeks the input
        # itself, to the offset stored with the views (not Kafka's committed offset).
        self.ownership: Ownership[Partition] = Ownership(
            topics.events,
            take=self._take,
            drop=self._drop,
            position=lambda part: part.stored,
            rewind=False,
            concurrent=False,
            revoked=self._revoked,
            # Taken by the loop, not inside the rebalance callback: aiokafka sends no heartbeat
            # while the callback runs, and a stop signal could not reach a take there (the
            # processor's reason too, docs/services.md "Takes outside the rebalance callback").
            deferred=True,
        )
        self.partitions = self.ownership.partitions
        self.orphans = self.ownership.orphans
        self.running = False
        self.events = 0
        self.batches = 0
        self.dead_letters = 0
        self.retries = 0
        self.retrying: dict[int, Retrying] = {}
        self.narrowings: dict[int, Narrowing] = {}
        self._lock = self.ownership.lock
        self._consumer: AIOKafkaConsumer | None = None
        self._writer: Writer | None = None

    @property
    def group(self) -> str:
        return f"{self.topics.prefix}-projections"

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.group,
            # Static membership: a restarted process under the same id gets its partitions back
            # at once instead of after the dead member's session timeout (issue 17's recovery).
            group_instance_id=self.settings.projections_instance_id,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.settings.max_record_bytes,
        )
        self._consumer = consumer
        self.ownership.attach(consumer)
        consumer.subscribe([self.topics.events], listener=self.ownership.listener())
        await consumer.start()
        self.running = True
        try:
            while not stop.is_set():
                # A take folds the partition's whole history (tens of seconds on a large one,
                # and it may wait for Postgres): a SIGTERM meanwhile abandons it (it only reads).
                if not await unless_stopped(self.ownership.retake_orphans(), stop):
                    break
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                async with self._lock:
                    # The owners the records were fetched for: a failed write noticed below
                    # retakes its partition and seeks back to the stored offset, and records
                    # fetched before that seek must not go into the new fold (they would follow
                    # the stored offset with a gap, and the offset would pass the gap unwritten).
                    fetched_for = dict(self.partitions)
                    await self._collect()
                    for owned in self.partitions.values():
                        owned.received = False
                    for tp, records in batches.items():
                        found = fetched_for.get(tp.partition)
                        if found is None or self.partitions.get(tp.partition) is not found:
                            continue  # not ours (any more), or retaken: it reads them again
                        for record in records:
                            if self.partitions.get(tp.partition) is not found:
                                break  # a failed write dropped it: it reads again when retaken
                            # After a seek back, records already in the open batch come again.
                            if record.offset >= found.position:
                                apply_record(found, record)
                                found.received = True
                                if self._full(found):
                                    await self._flush(found)
                                # Let the writer send its next statement meanwhile.
                                await asyncio.sleep(0)
                    for part in list(self.partitions.values()):
                        if part.pending is None or not self._full(part):
                            await self._skip_markers(part)
                        if part.pending is not None and self._due(part):
                            await self._flush(part)
        finally:
            self.running = False
            async with self._lock:
                self.partitions.clear()
            await consumer.stop()
            if self._writer is not None:
                # A batch in flight commits (or not) before exit.
                await self._writer.close()

    def _full(self, part: Partition) -> bool:
        return part.full(self.max_batch_rows)

    async def _skip_markers(self, part: Partition) -> None:
        """Move past offsets that hold no record (the processor's transaction markers): the
        stored offset follows the consumer's position, so a caught-up partition shows no lag
        and a restart does not read the marker region again."""
        consumer = self._consumer
        tp = TopicPartition(self.topics.events, part.number)
        if consumer is None or tp not in consumer.assignment():
            return
        position = await consumer.position(tp)
        if position > part.position:
            if part.pending is None:
                part.pending = PartitionBatch(part.number, part.submitted, part.submitted)
                part.opened_at = time.monotonic()
            part.pending.next_offset = position

    def _due(self, part: Partition) -> bool:
        work = part.pending
        assert work is not None
        if not part.received:
            return True  # nothing more to read right now: do not keep the views waiting
        if self._full(part):
            return True
        if time.monotonic() - part.opened_at >= self.max_batch_age_s:
            return True
        end = self._end(part.number)
        return end is not None and work.next_offset >= end

    def _end(self, number: int) -> int | None:
        consumer = self._consumer
        if consumer is None:
            return None
        end: int | None = consumer.last_stable_offset(TopicPartition(self.topics.events, number))
        return end

    async def _writer_ready(self) -> Writer:
        if self._writer is not None and self._writer.closed():
            await self._writer.close()
            self._writer = None
        if self._writer is None:
            self._writer = await Writer.open(
                self.settings.database_url, self.consumer_name, self.topics.events
            )
        return self._writer

    async def _flush(self, part: Partition) -> None:
        """Hand the partition's open batch to the writer (it commits in the background)."""
        # The write in flight first: if it failed, its partition is dropped and taken again, and
        # a batch closed now would expect an offset that is not stored (at most one in flight).
        await self._collect(wait=True)
        if self.partitions.get(part.number) is not part:
            return  # dropped by that failure: the open batch is read again once retaken
        work, rows = part.close_batch(self.max_batch_rows)
        try:
            writer = await self._writer_ready()
            self._committed(await writer.submit(work, rows))
        except Exception as error:
            await self._write_failed(error, work)

    async def _collect(self, wait: bool = False) -> None:
        """Take note of a finished write (or wait for the one in flight)."""
        writer = self._writer
        if writer is None or (writer.busy() and not wait):
            return
        try:
            self._committed(await writer.wait())
        except Exception as error:
            await self._write_failed(error, writer.failed)

    def _committed(self, work: PartitionBatch | None) -> None:
        if work is None:
            return
        if len(work.batch) >= FREEZE_AFTER_ROWS:
            # A catch-up grows the folds by large steps: freeze them too (they are freed by
            # refcount when the partition is dropped; only cyclic garbage would wait).
            gc.freeze()
        part = self.partitions.get(work.partition)
        if part is not None and part.stored == work.expected:
            part.stored = work.next_offset
            part.dead_stored += len(work.dead)
            narrowing = self.narrowings.get(work.partition)
            if narrowing is not None and narrowing.done(part.stored):
                self.narrowings.pop(work.partition, None)
        self.retrying.pop(work.partition, None)
        self.events += work.batch.events
        self.batches += 1
        self.dead_letters += len(work.dead)
        log.info(
            "views written",
            partition=work.partition,
            events=work.batch.events,
            rows=len(work.batch),
            next_offset=work.next_offset,
        )

    async def _write_failed(self, error: BaseException, failed: PartitionBatch | None) -> None:
        # Rolled back (another writer moved the offset, Postgres failed, or a row could not be
        # stored): the fold holds what the views do not. Rebuild it from the log up to the stored
        # offset and read again from there. The connection is replaced: it may be the cause.
        writer, self._writer = self._writer, None
        number = failed.partition if failed is not None else None
        self.retries += 1
        narrowed = False
        if failed is not None and is_record_fault(error):
            # The batch's own rows: written again they fail again. Narrow it down to the
            # record at fault (bisected: its halves are written as batches of their own), which
            # is then dead-lettered; the records before and after it are written (no backoff:
            # each retry makes progress).
            narrowing = self.narrowings.setdefault(failed.partition, Narrowing())
            narrowed = narrowing.learn(failed, error)
        log.error(
            "batch not written; retaking the partition",
            partition=number,
            error=repr(error),
            narrowing=narrowed,
        )
        if writer is not None:
            await writer.close()
        now = time.monotonic()
        for other in [number] if number is not None else list(self.partitions):
            if self.partitions.pop(other, None) is None and other not in self.orphans:
                continue  # not ours any more
            if isinstance(error, OffsetMovedError):
                # Another instance wrote the partition (a rebalance): nothing is wrong, the
                # partition is taken again from what that one stored.
                await self.ownership.try_take(other)
                continue
            was = self.retrying.get(other)
            attempts = 1 if was is None else was.attempts + 1
            since = now if was is None else was.since
            self.retrying[other] = Retrying(f"{error!r}"[:500], since, attempts)
            if narrowed:
                await self.ownership.try_take(other)
            else:
                # The database's state (down, a lock, a privilege): wait before the next try,
                # with the partition paused; /health shows it retrying meanwhile.
                delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(attempts - 1, 16))
                self.ownership.orphan(other, delay)

    # ------------------------------------------------------------------ ownership

    async def _take(self, number: int) -> Partition:
        started = time.perf_counter()
        try:
            stored, dead = await load_stored(
                self.settings.database_url, self.consumer_name, self.topics.events, number
            )
            part = Partition(number, stored, dead_stored=len(dead))
            part.narrowing = self.narrowings.get(number, part.narrowing)
            folded = 0
            async for record in read_range(self.settings, self.topics.events, number, 0, stored):
                if record.offset not in dead:  # dead letters were not folded when first read
                    fold_record(part.projector, record.value)
                folded += 1
        except Exception as error:
            raise TakeFailedError(f"partition {number}: {error!r}") from error
        tp = TopicPartition(self.topics.events, number)
        consumer = self._consumer
        if consumer is not None and tp in consumer.assignment():
            consumer.seek(tp, stored)
        # The folded states live as long as the partition: keep the cyclic GC from walking them
        # at every collection (as the processor does; docs/projections.md, figures).
        gc.collect()
        gc.freeze()
        log.info(
            "partition taken",
            partition=number,
            stored_offset=stored,
            folded=folded,
            messages=len(part.projector.states),
            take_s=round(time.perf_counter() - started, 3),
        )
        return part

    async def _drop(self, number: int, part: Partition) -> None:
        # An open batch is not written: the next owner reads it again from the offset.
        gc.unfreeze()  # let the dropped fold be collected

    def _revoked(self, number: int) -> None:
        self.retrying.pop(number, None)

    # ------------------------------------------------------------------ reporting

    def owned(self) -> list[int]:
        return self.ownership.owned()

    def lag(self) -> dict[int, int | None]:
        """Per owned partition: committed records of the events topic not yet in the views."""
        lags: dict[int, int | None] = {}
        for number, part in sorted(self.partitions.items()):
            end = self._end(number)
            lags[number] = None if end is None else max(0, end - part.stored)
        return lags

    def problem(self, number: int) -> str | None:
        """Why partition ``number`` is not being kept up to date right now (None: it is)."""
        now = time.monotonic()
        retrying = self.retrying.get(number)
        if retrying is not None:
            return (
                f"retrying: {retrying.attempts} failed writes in"
                f" {now - retrying.since:.1f}s, last: {retrying.error}"
            )
        if number in self.orphans:
            return "assigned but not taken (Kafka or Postgres failing); retrying"
        writer = self._writer
        if writer is not None and writer.since is not None and writer.busy():
            waited = now - writer.since
            if waited > self.stuck_after_s:
                return f"stuck: a write has been in flight for {waited:.0f}s"
        return None

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "partitions": self.owned(),
            "orphaned": sorted(self.orphans),
            "lag": {str(k): v for k, v in self.lag().items()},
            "stored_offsets": {str(k): p.stored for k, p in sorted(self.partitions.items())},
            "events": self.events,
            "batches": self.batches,
            "dead_letters": self.dead_letters,
            "dead_letters_stored": {
                str(k): p.dead_stored for k, p in sorted(self.partitions.items())
            },
            "retries": self.retries,
            "retrying": {
                str(k): {"attempts": r.attempts, "error": r.error}
                for k, r in sorted(self.retrying.items())
            },
        }

    async def check(self) -> None:
        if not self.running:
            raise RuntimeError("the projection worker is not consuming")
        self.ownership.check()
