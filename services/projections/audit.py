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
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from pydantic_core import PydanticSerializationError

from schemas import decode_event, encode
from services.common.kafka import client_options
from services.common.reading import read_range
from services.common.settings import Settings
from services.common.topics import Topics
from services.projections.consumer import (
    LIVE,
    MAX_BATCH_ROWS,
    Narrowing,
    Partition,
    apply_record,
    fold_record,
)
from services.projections.store import (
    VIEW_TABLES,
    Writer,
    is_record_fault,
    load_dead_offsets,
    load_offsets,
    quote_ident,
)

#: What `compare` compares: the views and the projection's dead letters (a rebuild must
#: dead-letter exactly the records the live worker did), with the keys their examples sort by.
COMPARED: dict[str, tuple[str, ...]] = {
    **VIEW_TABLES,
    "projection_dead_letters": ("partition", '"offset"'),
}

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
    # What failed batches taught, per partition: kept across the retakes below.
    narrowings = {number: part.narrowing for number, part in parts.items()}
    writer = await Writer.open(settings.database_url, LIVE, topic, schema)
    try:
        for number in numbers:
            while True:
                # A batch that cannot be written is narrowed down to its record at fault, which
                # is dead-lettered, exactly as the live worker does (consumer.Narrowing): the
                # partition is taken again from its stored offset and read on.
                [stored] = (await load_offsets(conn, LIVE, topic, [number])).values()
                part = parts.get(number)
                if part is None or part.stored != stored:
                    narrowing = narrowings.setdefault(number, Narrowing())
                    part = parts[number] = Partition(number, stored, narrowing=narrowing)
                    dead = await load_dead_offsets(conn, LIVE, topic, number)
                    async for record in read_range(settings, topic, number, 0, stored):
                        if record.offset not in dead:
                            fold_record(part.projector, record.value)
                # The folds live as long as the run: keep the cyclic GC from walking them at
                # every collection (as the processor does). Frozen objects are still freed by
                # refcount.
                gc.collect()
                gc.freeze()
                end = None if targets is None else targets.get(number, 0)
                try:
                    async for record in read_range(settings, topic, number, part.submitted, end):
                        apply_record(part, record)
                        if part.full(max_batch_rows):
                            await writer.submit(*part.close_batch(max_batch_rows))
                            gc.freeze()
                        await asyncio.sleep(0)  # let the writer send its next statement
                    if part.pending is not None:
                        await writer.submit(*part.close_batch(max_batch_rows))
                    await writer.wait()
                except Exception as error:
                    failed = writer.failed
                    if failed is None or not is_record_fault(error):
                        raise
                    if not part.narrowing.learn(failed, error):
                        raise
                    parts.pop(number, None)
                    await writer.close()
                    writer = await Writer.open(settings.database_url, LIVE, topic, schema)
                    continue
                break
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
    # Records the views could not hold as they are, in the live views: dead letters (partition,
    # offset, error) and history rows stored with U+FFFD (message, sequence, fields).
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    sanitized: list[dict[str, Any]] = field(default_factory=list)

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
            "dead_letters": self.dead_letters,
            "sanitized": self.sanitized,
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
    messages: Collection[UUID] | None = None,
) -> Comparison:
    """Rebuild ``rebuilt`` (a migrated schema) up to the offsets of the live views in ``live``
    and compare every view table, row for row. The comparison runs in one REPEATABLE READ
    snapshot in which the live offsets are read again: it compares the live views exactly as
    they stood at those offsets with a replay of exactly those records.

    ``messages``: compare only the rows of these messages (the view rows with their
    ``message_id``, the dead letters of records keyed by it), for a caller that shares the live
    schema with others who write views of their own (tests on other topic prefixes, a fault run
    beside other sends): their rows are neither in this topic's rebuild nor this caller's
    concern. Only the partitions of those messages are rebuilt."""
    topic = Topics(settings.topic_prefix).events
    ids = None if messages is None else sorted(str(m) for m in messages)
    keys = None if ids is None else [i.encode() for i in ids]

    def only(table: str) -> tuple[str, list[Any]]:
        """The WHERE clause (and its arguments) that limits ``table`` to ``messages``."""
        if ids is None:
            return "", []
        if table == "projection_dead_letters":
            return " WHERE key = ANY($1::bytea[])", [keys]
        return " WHERE message_id = ANY($1::uuid[])", [ids]

    parts: dict[int, Partition] = {}
    # With ``messages``, only their partitions are rebuilt (a message's events share one key,
    # so one partition): the others stay at offset 0 in the fresh schema.
    wanted = None
    if keys is not None:
        count = await partition_count(settings, topic)
        wanted = {(murmur2(key) & 0x7FFFFFFF) % count for key in keys}

    async def live_offsets() -> dict[int, int]:
        offsets = await _live_offsets(conn, live, topic)
        return offsets if wanted is None else {p: o for p, o in offsets.items() if p in wanted}

    conn = await asyncpg.connect(settings.database_url)
    try:
        for attempt in range(1, attempts + 1):
            targets = await live_offsets()
            await rebuild(
                settings, rebuilt, targets, max_batch_rows=max_batch_rows, partitions=parts
            )
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                if await live_offsets() != targets:
                    continue  # the live worker moved on meanwhile: catch up and look again
                differences: list[TableDifference] = []
                rows: dict[str, int] = {}
                for table in COMPARED:
                    a = f"{quote_ident(live)}.{table}"
                    b = f"{quote_ident(rebuilt)}.{table}"
                    where, args = only(table)
                    rows[table] = int(
                        await conn.fetchval(f"SELECT count(*) FROM {a}{where}", *args)
                    )
                    only_a = f"SELECT * FROM {a}{where} EXCEPT ALL SELECT * FROM {b}{where}"
                    only_b = f"SELECT * FROM {b}{where} EXCEPT ALL SELECT * FROM {a}{where}"
                    n_a = int(await conn.fetchval(f"SELECT count(*) FROM ({only_a}) d", *args))
                    n_b = int(await conn.fetchval(f"SELECT count(*) FROM ({only_b}) d", *args))
                    if n_a or n_b:
                        order = ", ".join(COMPARED[table])
                        differences.append(
                            TableDifference(
                                table,
                                n_a,
                                n_b,
                                [
                                    _jsonable(r)
                                    for r in await conn.fetch(
                                        f"{only_a} ORDER BY {order} LIMIT {examples}", *args
                                    )
                                ],
                                [
                                    _jsonable(r)
                                    for r in await conn.fetch(
                                        f"{only_b} ORDER BY {order} LIMIT {examples}", *args
                                    )
                                ],
                            )
                        )
                dead_letters = [
                    {"partition": r["partition"], "offset": r["offset"], "error": r["error"]}
                    for r in await conn.fetch(
                        'SELECT partition, "offset", error'
                        f" FROM {quote_ident(live)}.projection_dead_letters"
                        " WHERE consumer = $1 AND topic = $2"
                        " AND ($3::bytea[] IS NULL OR key = ANY($3::bytea[]))"
                        f' ORDER BY partition, "offset" LIMIT {examples}',
                        LIVE,
                        topic,
                        keys,
                    )
                ]
                sanitized = [
                    {
                        "message_id": str(r["message_id"]),
                        "sequence": r["sequence"],
                        "fields": sorted(json.loads(r["fields"])),
                    }
                    for r in await conn.fetch(
                        "SELECT message_id, sequence, detail -> 'unstorable' AS fields"
                        f" FROM {quote_ident(live)}.view_history WHERE detail ? 'unstorable'"
                        " AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))"
                        f" ORDER BY message_id, sequence LIMIT {examples}",
                        ids,
                    )
                ]
                return Comparison(
                    live, rebuilt, targets, rows, differences, attempt, dead_letters, sanitized
                )
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
        yield export_line(record.partition, record.offset, record.value, raw=raw)


def export_line(partition: int, offset: int, value: bytes, *, raw: bool = False) -> str:
    """One record of ``export`` as one line of text that any terminal or file can hold.

    ``raw``: the record as stored (bytes that are not UTF-8 shown as ``\\xNN``). Otherwise the
    event upcast to today's schema, as JSON with every non-ASCII character escaped (so NUL and
    lone surrogates come out as ``\\u0000``, ``\\ud800``); a record that does not decode is
    reported as ``{"partition", "offset", "undecodable": error, "raw": the record}`` instead.
    """
    text = value.decode("utf-8", errors="backslashreplace")
    if raw:
        return text
    try:
        event = decode_event(value)
    except Exception as error:
        return json.dumps(
            {"partition": partition, "offset": offset, "undecodable": repr(error), "raw": text},
            sort_keys=True,
        )
    try:
        return json.dumps(json.loads(encode(event)), sort_keys=True)
    except (ValueError, PydanticSerializationError):
        # A lone surrogate cannot be serialized as UTF-8 JSON; the model's own JSON-mode dump
        # keeps it, and json.dumps escapes it.
        return json.dumps(event.model_dump(mode="json"), sort_keys=True)
