"""Hand-written fakes for running the projection worker's loop (`ViewsWorker.run`) without
servers: a one-topic log with a consumer over it, and a database that keeps the view tables in
memory with Postgres' limits (no NUL in text, int columns within int32) and the offset check of
`store.write_batch`. A test installs them with :func:`install` (monkeypatch) and can make writes
fail (a privilege revoked) or hang (a lock held)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition

from schemas import Event, encode
from services.common.settings import Settings
from services.common.topics import Topics
from services.projections import consumer as consumer_module
from services.projections.consumer import ViewsWorker
from services.projections.store import DeadLetterRow, OffsetMovedError, PartitionBatch
from services.projections.views import HISTORY_COLUMNS, MESSAGE_COLUMNS, RECIPIENT_COLUMNS
from tests.projections.poison import INT32

PREFIX = "fake"
TOPIC = Topics(PREFIX).events


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Log:
    """Partition 0 of the events topic."""

    records: list[Record] = field(default_factory=list)

    def append(self, value: bytes, key: bytes | None = None) -> int:
        self.records.append(Record(TOPIC, 0, len(self.records), key, value))
        return len(self.records) - 1

    def events(self, events: list[Event]) -> None:
        for event in events:
            self.append(encode(event), str(event.message_id).encode())


class FakeConsumer:
    """The part of AIOKafkaConsumer the worker uses, over a :class:`Log` (one partition)."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.tp = TopicPartition(TOPIC, 0)
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.listener: Any = None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def start(self) -> None:
        self.positions[self.tp] = 0
        await self.listener.on_partitions_assigned([self.tp])

    async def stop(self) -> None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return len(self.log.records)

    async def getmany(self, timeout_ms: int = 0, max_records: int = 0) -> dict[Any, list[Record]]:
        out: dict[Any, list[Record]] = {}
        for tp, position in self.positions.items():
            if tp in self.paused:
                continue
            records = self.log.records[position : position + max_records]
            if records:
                out[tp] = records
                self.positions[tp] = records[-1].offset + 1
        if not out:
            await asyncio.sleep(0.002)  # a poll that found nothing
        return out


@dataclass
class Database:
    """The view tables, the offsets and the dead letters of one schema, in memory."""

    offsets: dict[int, int] = field(default_factory=dict)
    messages: dict[Any, dict[str, Any]] = field(default_factory=dict)
    recipients: dict[tuple[Any, str], dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple[Any, int], dict[str, Any]] = field(default_factory=dict)
    dead: dict[int, DeadLetterRow] = field(default_factory=dict)
    writes: int = 0
    # Called with each batch before it is written: raising fails the write (rolled back).
    before_write: Callable[[PartitionBatch], None] | None = None
    # While set, a write waits for it (a lock held by someone else).
    hold: asyncio.Event | None = None

    def tables(self) -> tuple[Any, ...]:
        """Everything a rebuild must reproduce (compare's tables), for equality."""
        dead = {o: (d.key, d.value, d.error) for o, d in self.dead.items()}
        return self.messages, self.recipients, self.history, dead

    def write(self, work: PartitionBatch, message_rows: list[tuple[Any, ...]]) -> None:
        """`store.write_batch`: all or nothing."""
        self.writes += 1
        if self.before_write is not None:
            self.before_write(work)
        if self.offsets.get(work.partition, 0) != work.expected:
            raise OffsetMovedError(f"stored offset is not {work.expected}")
        batch = work.batch
        history = [dict(zip(HISTORY_COLUMNS, _check(r), strict=True)) for r in batch.history]
        inserts = [dict(zip(RECIPIENT_COLUMNS, _check(r), strict=True)) for r in batch.inserts()]
        rewrites = [dict(zip(RECIPIENT_COLUMNS, _check(r), strict=True)) for r in batch.rewrites()]
        updates = [dict(zip(RECIPIENT_COLUMNS, _check(r), strict=True)) for r in batch.updates()]
        messages = [dict(zip(MESSAGE_COLUMNS, _check(r), strict=True)) for r in message_rows]
        for row in history:
            assert (row["message_id"], row["sequence"]) not in self.history, "written twice"
        # Nothing failed: commit.
        self.offsets[work.partition] = work.next_offset
        for row in history:
            self.history[(row["message_id"], row["sequence"])] = row
        for row in inserts + rewrites:
            self.recipients[(row["message_id"], row["contact_id"])] = row
        for row in updates:
            old = self.recipients[(row["message_id"], row["contact_id"])]
            for name in ("state", "reason", "state_at", "sequence"):
                old[name] = row[name]
            for name in ("released_at", "batch"):
                if row[name] is not None:
                    old[name] = row[name]
        for row in messages:
            self.messages[row["message_id"]] = row
        for d in work.dead:
            self.dead[d.offset] = d


def _check(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Refuse what Postgres refuses, with the errors asyncpg raises."""
    for value in row:
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and "\x00" in item:
                raise asyncpg.exceptions.CharacterNotInRepertoireError(
                    'invalid byte sequence for encoding "UTF8": 0x00'
                )
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT32:
                raise OverflowError("value out of int32 range")
    return row


class FakeWriter:
    """`store.Writer` over a :class:`Database`: the write runs as a task (so it can hang)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.failed: PartitionBatch | None = None
        self.since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._work: PartitionBatch | None = None
        self._closed = False

    def closed(self) -> bool:
        return self._closed

    async def _write(self, work: PartitionBatch, rows: list[tuple[Any, ...]]) -> None:
        if self.db.hold is not None:
            await self.db.hold.wait()
        self.db.write(work, rows)

    async def submit(
        self, work: PartitionBatch, message_rows: list[tuple[Any, ...]]
    ) -> PartitionBatch | None:
        done = await self.wait()
        self._work = work
        self.since = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._write(work, message_rows))
        await asyncio.sleep(0)
        return done

    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self) -> PartitionBatch | None:
        task, work = self._task, self._work
        self._task = self._work = None
        if task is None:
            self.since = None
            return None
        try:
            await task
        except BaseException:
            self.failed = work
            raise
        finally:
            self.since = None
        return work

    async def close(self) -> None:
        try:
            await self.wait()
        except Exception:  # its outcome is ignored, as the real one's
            self._closed = True
        self._closed = True


def install(monkeypatch: pytest.MonkeyPatch, log: Log, db: Database) -> None:
    """Make `ViewsWorker` read ``log`` and write ``db``."""

    def consumer(**_: Any) -> FakeConsumer:
        return FakeConsumer(log)

    class _Writer:
        @staticmethod
        async def open(*_: Any, **__: Any) -> FakeWriter:
            return FakeWriter(db)

    async def load_stored(dsn: str, name: str, topic: str, number: int) -> tuple[int, set[int]]:
        return db.offsets.get(number, 0), set(db.dead)

    async def read_range(
        settings: Settings, topic: str, partition: int, start: int = 0, end: int | None = None
    ) -> AsyncIterator[Record]:
        for record in log.records[start:end]:
            yield record

    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", consumer)
    monkeypatch.setattr(consumer_module, "Writer", _Writer)
    monkeypatch.setattr(consumer_module, "load_stored", load_stored)
    monkeypatch.setattr(consumer_module, "read_range", read_range)


def new_worker(**kwargs: Any) -> ViewsWorker:
    settings = Settings(topic_prefix=PREFIX, kafka_partitions=1)
    return ViewsWorker(settings, Topics(PREFIX), **kwargs)


async def wait_until(
    what: str, condition: Callable[[], bool], within: float = 10.0, every: float = 0.005
) -> None:
    """Poll ``condition`` until it holds (bounded): no sleep-and-hope."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


class Running:
    """``async with Running(worker):`` runs the worker's loop in a task, stopped on exit."""

    def __init__(self, worker: ViewsWorker) -> None:
        self.worker = worker
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ViewsWorker:
        self.task = asyncio.create_task(self.worker.run(self.stop))
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)
