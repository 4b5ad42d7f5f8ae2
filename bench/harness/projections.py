"""Helpers of the projections' integration tests (tests/integration/test_projections*.py): a
Postgres schema of the test's own, the projection worker as a subprocess, events produced to a
topic, and waiting for the views to catch up. Nothing here runs without the servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness.processor import Stack, free_port
from bench.harness.spawn import service_env
from schemas import Event, encode
from services.common.kafka import client_options
from services.common.settings import Settings
from services.projections.audit import Comparison, compare
from services.projections.consumer import LIVE
from services.projections.store import create_schema, quote_ident


def with_schema(database_url: str, schema: str) -> str:
    """The DSN whose connections use ``schema`` (asyncpg passes the parameter to the server)."""
    joiner = "&" if "?" in database_url else "?"
    return f"{database_url}{joiner}search_path={quote(schema)}"


async def new_schema(database_url: str, prefix: str = "tproj") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await create_schema(database_url, name)
    return name


async def drop_schema(database_url: str, name: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")
    finally:
        await conn.close()


@asynccontextmanager
async def stack_with_schema(
    bootstrap: str, database_url: str, tmp: Path, prefix: str
) -> AsyncIterator[tuple[Stack, str, str]]:
    """A started `Stack` on topics of its own and a Postgres schema of its own (named after
    `prefix`), logs under `tmp`: yields the stack, the schema's DSN and the schema's name; then
    stops the stack's processes and drops the schema."""
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    stack = Stack(bootstrap, tmp)
    await stack.start()
    schema = await new_schema(database_url, prefix)
    try:
        yield stack, with_schema(database_url, schema), schema
    finally:
        await stack.close()
        await drop_schema(database_url, schema)


async def projections_cli(
    stack: Stack, database_url: str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """`python -m services.projections.cli <args>` (compare, export) on the stack's topics and
    `database_url`, off the event loop; however it ends."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.projections.cli", *args],
        env=service_env(stack.settings, DATABASE_URL=database_url),
        capture_output=True,
    )


def spawn_projections(
    stack: Stack, dsn: str, port: int | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """`python -m services.projections` on the stack's topics, writing the views of ``dsn``."""
    return stack.spawn(
        "projections",
        module="services.projections",
        DATABASE_URL=dsn,
        PROJECTIONS_HEALTH_PORT=str(port or free_port()),
        **env,
    )


async def produce(settings: Settings, events: Iterable[Event]) -> int:
    """Write events to `<prefix>.events`, keyed by message id, in order (idempotent producer)."""
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.max_record_bytes,
        linger_ms=5,
    )
    await producer.start()
    count = 0
    try:
        topic = f"{settings.topic_prefix}.events"
        for event in events:
            await producer.send(topic, encode(event), key=str(event.message_id).encode())
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def end_offsets(settings: Settings) -> dict[int, int]:
    """The last stable offset of every partition of the events topic."""
    consumer = AIOKafkaConsumer(**client_options(settings), isolation_level="read_committed")
    await consumer.start()
    try:
        topic = f"{settings.topic_prefix}.events"
        tps = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def stored_offsets(dsn: str, settings: Settings) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM projection_offsets"
            " WHERE consumer = $1 AND topic = $2",
            LIVE,
            f"{settings.topic_prefix}.events",
        )
        return {int(r["partition"]): int(r["next_offset"]) for r in rows}
    finally:
        await conn.close()


async def wait_caught_up(
    stack: Stack, dsn: str, within: float = 90.0, every: float = 0.05
) -> dict[int, int]:
    """Wait until the views include every committed event (stored offsets = the topic's end),
    polling every `every` seconds."""

    async def check() -> dict[int, int] | None:
        ends = await end_offsets(stack.settings)
        stored = await stored_offsets(dsn, stack.settings)
        caught = all(stored.get(p, 0) >= end for p, end in ends.items())
        return ends if caught else None

    ends: dict[int, int] = await stack.wait_for("the views to catch up", check, within, every)
    return ends


async def compare_with_rebuild(settings: Settings, database_url: str, live: str) -> Comparison:
    """The audit: rebuild into a fresh schema up to the live offsets and compare."""
    rebuilt = await new_schema(database_url, "trebuilt")
    try:
        return await compare(
            settings.model_copy(update={"database_url": database_url}), live, rebuilt
        )
    finally:
        await drop_schema(database_url, rebuilt)
