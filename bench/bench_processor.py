"""Throughput and rebuild time of the processor on the real Kafka (figures in docs/dispatcher.md).

    .venv/bin/python -m bench.bench_processor --messages 200 --adds 9 --contacts 10

Creates topics under a fresh prefix, starts `python -m services.dispatcher` as a subprocess,
waits until it owns every partition, publishes `messages * (1 + adds)` commands (a CreateDraft
and `adds` AddRecipients of `contacts` contacts per message) and times them until every result
is committed. Then it SIGKILLs the processor, starts a new one and reports how long each
partition's take (fence + rebuild of events and results) lasted, from the new process's log.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness.processor import taken
from bench.harness.spawn import free_port, health, owned_partitions, spawn_service, until
from schemas import Actor, AddRecipients, Contact, Content, CreateDraft
from schemas.wire import CommandRecord
from services.common.kafka import client_options
from services.common.settings import Settings
from services.common.topics import ensure_topics

ACTOR = Actor(kind="user", account_id="bench", user_id="bench")
CONTENT = Content(name="Bench", from_address="bench@example.org", subject="Hi", body="Hello")


def _spawn(settings: Settings, log: Path, port: int) -> subprocess.Popen[bytes]:
    return spawn_service("services.dispatcher", settings, log, DISPATCHER_HEALTH_PORT=str(port))


async def _owns_all(
    process: subprocess.Popen[bytes], port: int, partitions: int, within: float = 60
) -> None:
    url = f"http://127.0.0.1:{port}/health"

    async def owning() -> bool:
        return owned_partitions((await health(url))[1]) == partitions

    await until("the processor to take every partition", owning, within, processes=[process])


async def _count_results(settings: Settings, expected: int, within: float = 600) -> float:
    """Wait until `expected` results are committed; return when the last one was seen."""
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        topic = f"{settings.topic_prefix}.command-results"
        tps = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        deadline = time.monotonic() + within
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {expected} results")
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(records) for records in batches.values())
        return time.perf_counter()
    finally:
        await consumer.stop()


async def bench(messages: int, adds: int, contacts: int) -> dict[str, Any]:
    settings = Settings(topic_prefix=f"bench{uuid.uuid4().hex[:8]}")
    await ensure_topics(settings)
    records: list[CommandRecord] = []
    now = datetime.now(UTC)
    for _ in range(messages):
        m = uuid.uuid4()
        records.append(
            CommandRecord(
                command=CreateDraft(command_id=uuid.uuid4(), message_id=m, content=CONTENT),
                actor=ACTOR,
                issued_at=now,
            )
        )
        for a in range(adds):
            batch = tuple(
                Contact(contact_id=f"{a}-{i}", email=f"{a}-{i}@example.org")
                for i in range(contacts)
            )
            records.append(
                CommandRecord(
                    command=AddRecipients(command_id=uuid.uuid4(), message_id=m, contacts=batch),
                    actor=ACTOR,
                    issued_at=now,
                )
            )
    values = [(str(r.command.message_id).encode(), r.model_dump_json().encode()) for r in records]

    workdir = Path(tempfile.mkdtemp(prefix="processor-bench-"))
    port = free_port()
    first = _spawn(settings, workdir / "first.log", port)
    try:
        await _owns_all(first, port, settings.kafka_partitions)
        producer = AIOKafkaProducer(**client_options(settings), linger_ms=5)
        await producer.start()
        counting = asyncio.create_task(_count_results(settings, len(records)))
        started = time.perf_counter()
        for key, value in values:
            await producer.send(f"{settings.topic_prefix}.commands", value=value, key=key)
        await producer.flush()
        published = time.perf_counter()
        ended = await counting
        await producer.stop()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    elapsed = ended - started
    print(
        f"commands={len(records):,} ({messages} messages, {adds} adds of {contacts} contacts) "
        f"published_in={published - started:.2f}s all_decided_in={elapsed:.2f}s "
        f"rate={len(records) / elapsed:,.0f} commands/s"
    )

    port = free_port()
    second_log = workdir / "second.log"
    spawned = time.perf_counter()
    second = _spawn(settings, second_log, port)
    try:
        await _owns_all(second, port, settings.kafka_partitions)
        ready = time.perf_counter() - spawned
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait()
    takes = taken(second_log)
    events = sum(t["events"] for t in takes)
    results = sum(t["results"] for t in takes)
    take_s = sum(t["take_s"] for t in takes)
    each = ", ".join(f"p{t['partition']}={t['take_s']:.2f}s" for t in takes)
    print(
        f"restart after SIGKILL: spawn->owning all partitions {ready:.2f}s; "
        f"rebuild of {events:,} events + {results:,} results: {take_s:.2f}s "
        f"({each})"
    )
    print(f"logs: {workdir}")
    return {
        "commands": len(records),
        "shape": f"{messages} messages, {adds} adds of {contacts} contacts",
        "decided_in_s": round(elapsed, 3),
        "commands_per_s": round(len(records) / elapsed, 1),
        "restart_owning_all_s": round(ready, 3),
        "rebuild_s": round(take_s, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--adds", type=int, default=9)
    parser.add_argument("--contacts", type=int, default=10)
    args = parser.parse_args(argv)
    asyncio.run(bench(args.messages, args.adds, args.contacts))


if __name__ == "__main__":
    main(sys.argv[1:])
