"""Rebuild, compare and export: the audit side of the projections (the CLI is
services/projections/cli.py).

* :func:`rebuild` replays the events topic, read_committed, from the beginning, into the view
  tables of a fresh schema, with the same pure function and the same writes as the live worker
  (batches and offsets in one transaction each), up to given offsets or the current end.
* :func:`compare` rebuilds up to exactly the offsets the live views stand at, then compares the
  tables row for row in one snapshot that also re-reads the live offsets (if the live worker moved
  on meanwhile, the rebuild catches up and compares again).
* :func:`export` yields one message's whole history, from the log, as JSON lines.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from schemas import decode_event, encode
from services.common.kafka import client_options
from services.common.reading import read_range
from services.common.settings import Settings
from services.common.topics import Topics
from services.projections.consumer import (
    LIVE,
    MAX_BATCH_ROWS,
    Partition,
    apply_record,
    fold_record,
)
from services.projections.store import (
    VIEW_TABLES,
    Writer,
    load_offsets,
    quote_ident,
)

__all__ = [
    "Comparison",
    "TableDifference",
    "compare",
    "current_schema",
    "export",
    "partition_count",
    "rebuild",
]


async def partition_count(settings: Settings, topic: str) -> int:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        if not described.get("partitions"):
            raise LookupError(f"topic {topic} not found")
        return len(described["partitions"])
    finally:
        await admin.close()


async def current_schema(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        name: str = await conn.fetchval("SELECT current_schema()")
        return name
    finally:
        await conn.close()


async def _connect(dsn: str, schema: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"search_path": schema})


async def rebuild(
    settings: Settings,
    schema: str,
    targets: Mapping[int, int] | None = None,
    *,
    max_batch_rows: int = MAX_BATCH_ROWS,
    partitions: dict[int, Partition] | None = None,
) -> dict[int, int]:
    """Project the events topic into the (migrated) views of ``schema`` up to ``targets``
    (partition -> next offset; default: each partition's current end). Resumable: it continues
    from the offsets stored in ``schema``; pass the same ``partitions`` dict to a later call to
    keep the folds instead of rebuilding them. Returns the offsets reached."""
    topic = Topics(settings.topic_prefix).events
    count = await partition_count(settings, topic)
    numbers = list(range(count))
    conn = await _connect(settings.database_url, schema)
    reached: dict[int, int] = {}
    parts = partitions if partitions is not None else {}
    writer = await Writer.open(settings.database_url, LIVE, topic, schema)
    try:
        stored = await load_offsets(conn, LIVE, topic, numbers)
        for number in numbers:
            part = parts.get(number)
            if part is None or part.stored != stored[number]:
                part = parts[number] = Partition(number, stored[number])
                async for record in read_range(settings, topic, number, 0, stored[number]):
                    fold_record(part.projector, record.value)
            # The folds live as long as the run: keep the cyclic GC from walking them at every
            # collection (as the processor does). Frozen objects are still freed by refcount.
            gc.collect()
            gc.freeze()
            end = None if targets is None else targets.get(number, 0)
            async for record in read_range(settings, topic, number, part.submitted, end):
                apply_record(part, record)
                if part.full(max_batch_rows):
                    await writer.submit(*part.close_batch(max_batch_rows))
                    gc.freeze()
                await asyncio.sleep(0)  # let the writer send its next statement
            if part.pending is not None:
                await writer.submit(*part.close_batch(max_batch_rows))
            await writer.wait()
            part.stored = part.submitted
            if end is not None and part.stored < end:
                # Offsets past the last record (transaction markers): nothing more to fold.
                await conn.execute(
                    "UPDATE projection_offsets SET next_offset = $4"
                    " WHERE consumer = $1 AND topic = $2 AND partition = $3",
                    LIVE,
                    topic,
                    number,
                    end,
                )
                part.stored = part.submitted = end
            reached[number] = part.stored
    finally:
        await writer.close()
        await conn.close()
    return reached


@dataclass
class TableDifference:
    table: str
    only_live: int
    only_rebuilt: int
    examples_live: list[dict[str, Any]] = field(default_factory=list)
    examples_rebuilt: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Comparison:
    live_schema: str
    rebuilt_schema: str
    offsets: dict[int, int]
    rows: dict[str, int]
    differences: list[TableDifference]
    attempts: int

    @property
    def equal(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "live_schema": self.live_schema,
            "rebuilt_schema": self.rebuilt_schema,
            "offsets": {str(k): v for k, v in sorted(self.offsets.items())},
            "rows": self.rows,
            "differences": [d.__dict__ for d in self.differences],
            "attempts": self.attempts,
        }


def _jsonable(row: asyncpg.Record) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, int | float | bool | type(None)) else str(v)) for k, v in row.items()
    }


async def _live_offsets(conn: asyncpg.Connection, live: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        f"SELECT partition, next_offset FROM {quote_ident(live)}.projection_offsets"
        " WHERE consumer = $1 AND topic = $2",
        LIVE,
        topic,
    )
    return {int(r["partition"]): int(r["next_offset"]) for r in rows}


async def compare(
    settings: Settings,
    live: str,
    rebuilt: str,
    *,
    examples: int = 20,
    attempts: int = 20,
    max_batch_rows: int = MAX_BATCH_ROWS,
) -> Comparison:
    """Rebuild ``rebuilt`` (a migrated schema) up to the offsets of the live views in ``live``
    and compare every view table, row for row. The comparison runs in one REPEATABLE READ
    snapshot in which the live offsets are read again: it compares the live views exactly as
    they stood at those offsets with a replay of exactly those records."""
    topic = Topics(settings.topic_prefix).events
    parts: dict[int, Partition] = {}
    conn = await asyncpg.connect(settings.database_url)
    try:
        for attempt in range(1, attempts + 1):
            targets = await _live_offsets(conn, live, topic)
            await rebuild(
                settings, rebuilt, targets, max_batch_rows=max_batch_rows, partitions=parts
            )
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if await _live_offsets(conn, live, topic) != targets:
                    continue  # the live worker moved on meanwhile: catch up and look again
                differences: list[TableDifference] = []
                rows: dict[str, int] = {}
                for table in VIEW_TABLES:
                    a = f"{quote_ident(live)}.{table}"
                    b = f"{quote_ident(rebuilt)}.{table}"
                    rows[table] = int(await conn.fetchval(f"SELECT count(*) FROM {a}"))
                    only_a = f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}"
                    only_b = f"SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}"
                    n_a = int(await conn.fetchval(f"SELECT count(*) FROM ({only_a}) d"))
                    n_b = int(await conn.fetchval(f"SELECT count(*) FROM ({only_b}) d"))
                    if n_a or n_b:
                        keys = ", ".join(VIEW_TABLES[table])
                        differences.append(
                            TableDifference(
                                table,
                                n_a,
                                n_b,
                                [
                                    _jsonable(r)
                                    for r in await conn.fetch(
                                        f"{only_a} ORDER BY {keys} LIMIT {examples}"
                                    )
                                ],
                                [
                                    _jsonable(r)
                                    for r in await conn.fetch(
                                        f"{only_b} ORDER BY {keys} LIMIT {examples}"
                                    )
                                ],
                            )
                        )
                return Comparison(live, rebuilt, targets, rows, differences, attempt)
        raise TimeoutError(f"the live views kept moving through {attempts} rebuild rounds")
    finally:
        await conn.close()


async def export(settings: Settings, message_id: UUID, *, raw: bool = False) -> AsyncIterator[str]:
    """One message's whole history from the log, in order, one JSON object per line: each event
    decoded and upcast to today's schema (``raw``: the record exactly as stored)."""
    topic = Topics(settings.topic_prefix).events
    count = await partition_count(settings, topic)
    key = str(message_id).encode()
    # The partition Kafka's default partitioner picks for the key (murmur2, as the Java client).
    number = (murmur2(key) & 0x7FFFFFFF) % count
    async for record in read_range(settings, topic, number, 0):
        if record.key != key:
            continue
        if raw:
            yield record.value.decode()
        else:
            event = decode_event(record.value)
            yield json.dumps(json.loads(encode(event)), sort_keys=True)
