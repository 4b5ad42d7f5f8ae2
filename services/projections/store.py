"""Postgres side of the projections: a batch of view changes and the consumer's offset, written in
one transaction (asyncpg), with bulk paths: COPY for new rows, one statement over arrays for
updates. Also the schema helpers the CLI and the tests use (fresh schemas, migrations).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from services.common.migrations import MIGRATIONS_DIR, apply_migrations, load_migrations
from services.projections.views import (
    HISTORY_COLUMNS,
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    Batch,
)

__all__ = [
    "VIEW_TABLES",
    "DeadLetterRow",
    "OffsetMovedError",
    "ViewsOutOfStepError",
    "create_schema",
    "is_record_fault",
    "load_dead_offsets",
    "load_offsets",
    "migrate",
    "quote_ident",
    "write_batch",
]

#: The tables a rebuild recreates and compares, with their primary keys.
VIEW_TABLES: dict[str, tuple[str, ...]] = {
    "view_messages": ("message_id",),
    "view_recipients": ("message_id", "contact_id"),
    "view_history": ("message_id", "sequence"),
}

T = TypeVar("T")

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class OffsetMovedError(Exception):
    """Raised when the stored offset is not the one the batch was read from: another worker
    wrote this partition meanwhile. The transaction is rolled back; nothing is counted twice."""


class ViewsOutOfStepError(Exception):
    """Raised when the rows in Postgres do not match the fold (a row to update is missing): the
    batch is rolled back rather than written over views that someone changed by hand."""


@dataclass(frozen=True)
class DeadLetterRow:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


@dataclass
class PartitionBatch:
    """What one transaction writes for one partition: the batch and the offsets around it."""

    partition: int
    expected: int  # the stored next offset the batch was read from
    next_offset: int  # the stored next offset after it
    batch: Batch = field(default_factory=Batch)
    dead: list[DeadLetterRow] = field(default_factory=list)
    records: list[int] = field(default_factory=list)  # offsets of its records, in order


#: Errors a batch's own data causes (the same rows fail the same way every time): a value
#: Postgres cannot hold (class 22: NUL, a number past a column's range, bad JSON), a broken
#: constraint (class 23), a row past a limit (class 54: an index entry too large), or the client
#: refusing to encode a value (a lone surrogate, an int past int32 in COPY). Anything else (a
#: connection lost, a privilege revoked, a lock timeout) is the database's state: retried as is.
RECORD_FAULTS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    UnicodeError,
    OverflowError,
)


def is_record_fault(error: BaseException) -> bool:
    """Whether ``error`` comes from the rows written (retrying them can only fail again)."""
    return isinstance(error, RECORD_FAULTS) and not isinstance(error, ViewsOutOfStepError)


def quote_ident(name: str) -> str:
    """A schema name checked to be plain (lower-case letters, digits, underscores)."""
    if _IDENT.match(name) is None:
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


async def migrate(conn: asyncpg.Connection) -> None:
    """Bring the connection's current schema up to date (every migration of the service)."""
    await apply_migrations(conn, load_migrations(MIGRATIONS_DIR))


async def create_schema(dsn: str, schema: str) -> None:
    """Create ``schema`` and apply every migration in it (fresh, empty views)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        await conn.execute(f"SET search_path TO {quote_ident(schema)}")
        await migrate(conn)
    finally:
        await conn.close()


async def load_offsets(
    conn: asyncpg.Connection, consumer: str, topic: str, partitions: Sequence[int]
) -> dict[int, int]:
    """The stored next offset of each partition (0, and a row created, for one never read)."""
    await conn.executemany(
        "INSERT INTO projection_offsets (consumer, topic, partition, next_offset)"
        " VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
        [(consumer, topic, p) for p in partitions],
    )
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM projection_offsets"
        " WHERE consumer = $1 AND topic = $2 AND partition = ANY($3::int[])",
        consumer,
        topic,
        list(partitions),
    )
    return {int(r["partition"]): int(r["next_offset"]) for r in rows}


async def load_dead_offsets(
    conn: asyncpg.Connection, consumer: str, topic: str, partition: int
) -> set[int]:
    """The offsets of the partition's records kept as dead letters (not in the views): a
    catch-up fold skips them, as the batch that dead-lettered them did."""
    rows = await conn.fetch(
        'SELECT "offset" FROM projection_dead_letters'
        " WHERE consumer = $1 AND topic = $2 AND partition = $3",
        consumer,
        topic,
        partition,
    )
    return {int(r["offset"]) for r in rows}


_UPDATE_STATE = """
UPDATE view_recipients AS r
   SET state = u.state, reason = u.reason, state_at = u.state_at, sequence = u.sequence,
       released_at = coalesce(u.released_at, r.released_at), batch = coalesce(u.batch, r.batch)
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[],
              $7::timestamptz[], $8::int[])
       AS u(message_id, contact_id, state, reason, batch, released_at, state_at, sequence)
 WHERE r.message_id = u.message_id AND r.contact_id = u.contact_id
"""

_REWRITE = """
UPDATE view_recipients AS r
   SET email = u.email, time_zone = u.time_zone, state = u.state, reason = u.reason,
       batch = u.batch, added_at = u.added_at, released_at = u.released_at,
       state_at = u.state_at, sequence = u.sequence, attributes = u.attributes
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
              $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::int[], $12::text[])
       AS u(message_id, contact_id, email, time_zone, state, reason, batch, added_at,
            released_at, state_at, sequence, attributes)
 WHERE r.message_id = u.message_id AND r.contact_id = u.contact_id
"""


_UPDATE_GROUP = """
UPDATE view_recipients
   SET state = $3, reason = $4, batch = coalesce($5, batch),
       released_at = coalesce($6, released_at), state_at = $7, sequence = $8
 WHERE message_id = $1 AND contact_id = ANY($2::text[])
"""

#: Above this many distinct new values per row updated, one statement over arrays of every
#: column is cheaper than one statement per group of identical values.
_GROUPS_PER_ROW = 0.01


async def _update_states(conn: asyncpg.Connection, batch: Batch) -> tuple[int, int]:
    """Apply state changes to existing recipient rows; returns (rows changed, rows expected).

    The rows of one release or outcome event share their new values, so they are grouped by
    them: one `contact_id = ANY(...)` statement per group (measured faster than a join with
    unnest arrays); a batch of mostly distinct values takes the array join instead.
    """
    groups = batch.update_groups()
    expected = sum(len(ids) for ids in groups.values())
    if not groups:
        return 0, 0
    if len(groups) > max(100, expected * _GROUPS_PER_ROW):
        updates = batch.updates()
        picked = [(r[0], r[1], r[4], r[5], r[6], r[8], r[9], r[10]) for r in updates]
        return _count(await conn.execute(_UPDATE_STATE, *_columns(picked, 8))), expected
    changed = 0
    for (message, state, reason, number, released_at, state_at, sequence), ids in groups.items():
        status = await conn.execute(
            _UPDATE_GROUP, message, ids, state, reason, number, released_at, state_at, sequence
        )
        changed += _count(status)
    return changed, expected


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def _count(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 42".
    return int(status.rsplit(" ", 1)[-1])


async def write_batch(
    conn: asyncpg.Connection,
    consumer: str,
    topic: str,
    work: PartitionBatch,
    message_rows: list[tuple[Any, ...]],
) -> None:
    """Write one partition's batch and move its stored offset, in one transaction.

    ``message_rows`` are the rows of the batch's messages (``Projector.message_rows``), taken
    when the batch was closed: the fold moves on while the batch is being written.

    Raises :class:`OffsetMovedError` (rolled back) when the stored offset is not
    ``work.expected``.
    """
    batch = work.batch
    async with conn.transaction():
        # First, so that a second worker writing the same partition waits on this row's lock
        # and then finds the offset moved: of two writers of one batch only one commits.
        status = await conn.execute(
            "UPDATE projection_offsets SET next_offset = $4, updated_at = now()"
            " WHERE consumer = $1 AND topic = $2 AND partition = $3 AND next_offset = $5",
            consumer,
            topic,
            work.partition,
            work.next_offset,
            work.expected,
        )
        if _count(status) != 1:
            raise OffsetMovedError(
                f"{topic}[{work.partition}]: stored offset is not {work.expected}"
            )
        if batch.history:
            await conn.copy_records_to_table(
                "view_history", records=batch.history, columns=HISTORY_COLUMNS
            )
        inserts = batch.inserts()
        if inserts:
            await conn.copy_records_to_table(
                "view_recipients", records=inserts, columns=RECIPIENT_COLUMNS
            )
        rewrites = batch.rewrites()
        if rewrites:
            status = await conn.execute(_REWRITE, *_columns(rewrites, len(RECIPIENT_COLUMNS)))
            if _count(status) != len(rewrites):
                raise ViewsOutOfStepError("recipient rows to rewrite are missing")
        changed, expected = await _update_states(conn, batch)
        if changed != expected:
            raise ViewsOutOfStepError("recipient rows to update are missing")
        if message_rows:
            ids = [row[0] for row in message_rows]
            await conn.execute("DELETE FROM view_messages WHERE message_id = ANY($1::uuid[])", ids)
            await conn.copy_records_to_table(
                "view_messages", records=message_rows, columns=MESSAGE_COLUMNS
            )
        if work.dead:
            await conn.executemany(
                "INSERT INTO projection_dead_letters"
                ' (consumer, topic, partition, "offset", key, value, error)'
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (consumer, topic, d.partition, d.offset, d.key, d.value, d.error)
                    for d in work.dead
                ],
            )


class Writer:
    """Writes closed batches one after the other, in the background, on one connection that
    lives in a thread of its own (with its own event loop).

    While Postgres applies batch N (on its own core), the caller folds batch N+1: a catch-up
    costs about the larger of the two instead of their sum. The thread keeps Postgres fed with
    statements whatever the caller's loop is busy with; the caller's CPU work holds the GIL, the
    writer mostly waits on its socket. At most one write is in flight; its failure is raised by
    the next :meth:`submit` or :meth:`wait`, with the batch that failed in ``failed``, and the
    caller drops that partition's fold and takes it again.
    """

    def __init__(self, consumer: str, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self.conn: asyncpg.Connection | None = None
        self.failed: PartitionBatch | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="views-writer", daemon=True
        )
        self._thread.start()
        self._future: concurrent.futures.Future[None] | None = None
        self._work: PartitionBatch | None = None
        self.since: float | None = None  # monotonic time the write in flight was started

    @classmethod
    async def open(cls, dsn: str, consumer: str, topic: str, schema: str | None = None) -> Writer:
        writer = cls(consumer, topic)
        settings = {"search_path": schema} if schema is not None else None
        try:
            writer.conn = await writer._call(
                asyncpg.connect(dsn, timeout=10, server_settings=settings)
            )
        except BaseException:
            await writer.close()
            raise
        return writer

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def closed(self) -> bool:
        return self.conn is None or self.conn.is_closed()

    async def submit(
        self, work: PartitionBatch, message_rows: list[tuple[Any, ...]]
    ) -> PartitionBatch | None:
        """Start writing ``work``; returns the batch whose write completed meanwhile (if any)."""
        done = await self.wait()
        assert self.conn is not None
        self._work = work
        self.since = time.monotonic()
        self._future = asyncio.run_coroutine_threadsafe(
            write_batch(self.conn, self.consumer, self.topic, work, message_rows), self._loop
        )
        return done

    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    async def wait(self) -> PartitionBatch | None:
        """Wait for the write in flight; returns its batch once committed (raises its error)."""
        future, work = self._future, self._work
        self._future = self._work = None
        if future is None:
            self.since = None
            return None
        try:
            await asyncio.wrap_future(future)
        except BaseException:
            self.failed = work
            raise
        finally:
            self.since = None
        return work

    async def close(self) -> None:
        """Wait for the write in flight (its outcome ignored), close the connection and the
        thread."""
        with contextlib.suppress(Exception):
            await self.wait()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self._call(self.conn.close(timeout=5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        if not self._thread.is_alive():
            self._loop.close()
