"""Dispatch, its ceiling, the dispatcher's memory and its recovery, at each audience size.

For each size N (make bench: 10,000, 60,000, 100,000 and 1,000,000 recipients), on topics of
its own, the real dispatcher (`python -m services.dispatcher`, its clock off, the bench writing
the ticks) and the real broker:

1. **ceiling**: aiokafka's transactional producer alone writes the same N send records (same
   values, key, partition, 10,000 per transaction, already serialized) to the same broker;
2. **dispatch**: a message of N recipients (added in chunks of 10,000, scheduled) is released:
   every tick written at once, one simulated second apart, so the figure is the dispatcher's
   speed, not the release rate's (10,000/s per message by design). Timed from the first tick to
   the last send record committed (read_committed end offset of the partition);
3. **memory**: the dispatcher's resident set (/proc/PID/status VmRSS) once the audience is
   decided and after the release; per recipient = the larger / N;
4. **recovery**: a second, small message is scheduled in the same partition; the dispatcher is
   SIGKILLed and restarted at once (same static-membership id) while the bench writes a tick every
   0.1 s: time from the SIGKILL to that message's first send record committed. The dispatcher
   snapshots its partitions every 5 s (docs/scale.md): the restart loads the newest snapshot and
   folds only the records after it (`rebuilt_from`, `rebuilt_events`).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness.delivery import DeliveryStack
from bench.harness.kafka import kafka_options
from bench.harness.processor import ids, record, taken
from bench.progress import say
from core import send_id
from schemas import AddRecipients, Contact, CreateDraft, DeliveryPlan, ScheduleMessage
from schemas.sends import send_records_json
from services.dispatcher.decider import key_of, partition_of

CHUNK = 10_000


def audience(n: int, prefix: str = "b") -> tuple[Contact, ...]:
    return tuple(
        Contact(
            contact_id=f"{prefix}{i}",
            email=f"{prefix}{i}@example.org",
            attributes={"first_name": f"N{i}"},
        )
        for i in range(n)
    )


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Ends:
    """Last stable offsets read with one long-lived read_committed consumer (cheap to poll)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            **kafka_options(bootstrap), isolation_level="read_committed"
        )

    async def __aenter__(self) -> Ends:
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def of(self, topic: str, partition: int) -> int:
        tp = TopicPartition(topic, partition)
        return int((await self.consumer.end_offsets([tp]))[tp])


async def lso(bootstrap: str, topic: str, partition: int) -> int:
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), isolation_level="read_committed")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def same_partition(message: uuid.UUID, partitions: int) -> uuid.UUID:
    """Another message id that lands in the same partition."""
    want = partition_of(key_of(message), partitions)
    while True:
        other = uuid.uuid4()
        if partition_of(key_of(other), partitions) == want:
            return other


async def _ceiling(stack: DeliveryStack, message: uuid.UUID, people: tuple[Contact, ...]) -> float:
    partition = partition_of(key_of(message), stack.settings.kafka_partitions)
    at = datetime.now(UTC).isoformat()
    values = list(
        send_records_json(
            message_id=message,
            account_id="acct-a",
            released_at=at,
            release_sequence=1,
            sends=((str(send_id(message, c.contact_id)), c.model_dump_json()) for c in people),
        )
    )
    producer = AIOKafkaProducer(
        **kafka_options(stack.bootstrap),
        transactional_id=f"{stack.settings.topic_prefix}-baseline",
        max_request_size=stack.settings.max_record_bytes,
    )
    await producer.start()
    key = key_of(message)
    try:
        started = time.perf_counter()
        for i in range(0, len(values), CHUNK):
            async with producer.transaction():
                for value in values[i : i + CHUNK]:
                    await producer.send(
                        stack.topics.dead_letter,
                        value=value,
                        key=key,
                        partition=partition,
                        headers=[("type", b"Send")],
                    )
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def at_size(n: int, tmp: Path, bootstrap: str, database: str, smtp: Any, sink: str) -> dict:
    """Every figure of one audience size (see the module's docstring)."""
    name = f"dispatch {n:,}"
    tmp = tmp / f"dispatch-{n}"
    tmp.mkdir(parents=True, exist_ok=True)
    stack = DeliveryStack(bootstrap, database, smtp, sink, tmp)
    await stack.start()
    ends = Ends(bootstrap)
    await ends.__aenter__()
    try:
        message = ids()
        partition = partition_of(key_of(message), stack.settings.kafka_partitions)
        people = audience(n)
        say(name, "ceiling: the transactional producer alone")
        ceiling_s = await _ceiling(stack, message, people)

        # Snapshots every 5 s (docs/scale.md): the restart below loads the newest one.
        snapshots = {"DISPATCHER_STATE_DIR": str(tmp / "state"), "SNAPSHOT_INTERVAL_S": "5"}
        dispatcher = stack.spawn_dispatcher(CLOCK_ENABLED="false", **snapshots)
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        issued = at - timedelta(hours=1)
        await stack.decide(
            record(
                CreateDraft(
                    command_id=ids(),
                    message_id=message,
                    content=stack.content,
                    # No in-flight window: no delivery worker records outcomes here.
                    plan=DeliveryPlan(release_rate=10_000, max_in_flight=None),
                ),
                at=issued,
            ),
            within=120,
        )
        adds = [
            record(
                AddRecipients(command_id=ids(), message_id=message, contacts=people[i : i + CHUNK]),
                at=issued,
            )
            for i in range(0, n, CHUNK)
        ]
        del people
        say(name, f"adding the audience ({len(adds)} commands)")
        await stack.publish(*adds)
        await stack.result_of(adds[-1].command.command_id, within=900)
        await stack.decide(
            record(ScheduleMessage(command_id=ids(), message_id=message, send_at=at), at=issued)
        )
        rss_loaded = rss_mb(dispatcher.pid)
        base = await ends.of(stack.topics.sends, partition)
        say(name, "dispatching")
        started = time.perf_counter()
        for k in range(n // 10_000 + 2):
            await stack.tick(at + timedelta(seconds=k))

        shown = [time.monotonic()]

        async def all_sends() -> bool:
            done = await ends.of(stack.topics.sends, partition) - base
            if time.monotonic() - shown[0] > 10:
                say(name, "send records committed", done, n)
                shown[0] = time.monotonic()
            return done >= n + 1

        await stack.wait_for("every send record", all_sends, within=1200, every=0.1)
        dispatch_s = time.perf_counter() - started
        rss_sent = rss_mb(dispatcher.pid)

        # Recovery: a small message due later in the same partition, then SIGKILL + restart.
        second = same_partition(message, stack.settings.kafka_partitions)
        later = at + timedelta(days=1)
        await stack.decide(
            record(
                CreateDraft(command_id=ids(), message_id=second, content=stack.content),
                at=issued,
            ),
            record(
                AddRecipients(command_id=ids(), message_id=second, contacts=audience(10, "r")),
                at=issued,
            ),
            record(ScheduleMessage(command_id=ids(), message_id=second, send_at=later), at=issued),
        )
        before = await ends.of(stack.topics.sends, partition)
        say(name, "recovery: SIGKILL and restart of the dispatcher")
        stack.kill(dispatcher)
        killed = time.perf_counter()
        dispatcher = stack.spawn_dispatcher(CLOCK_ENABLED="false", **snapshots)
        clock = [later]

        async def sent_again() -> bool:
            await stack.tick(clock[0])
            clock[0] += timedelta(seconds=1)
            return await ends.of(stack.topics.sends, partition) > before

        await stack.wait_for("a send record after the restart", sent_again, within=600, every=0.1)
        recovery_s = time.perf_counter() - killed
        take = next(
            (t for t in taken(stack.log_of(dispatcher)) if t.get("partition") == partition), {}
        )
        result = {
            "recipients": n,
            "ceiling_s": round(ceiling_s, 3),
            "ceiling_rate": round(n / ceiling_s, 1),
            "dispatch_s": round(dispatch_s, 3),
            "rate": round(n / dispatch_s, 1),
            "ratio": round(ceiling_s / dispatch_s, 3),
            "rss_loaded_mb": rss_loaded,
            "rss_sent_mb": rss_sent,
            "rss_mb": max(x for x in (rss_loaded, rss_sent, 0.0) if x is not None),
            "recovery_s": round(recovery_s, 3),
            "rebuild_s": take.get("take_s"),
            "rebuilt_events": take.get("events"),
            "rebuilt_from": take.get("source"),
        }
        say(name, f"done: {result}")
        return result
    finally:
        await ends.__aexit__()
        await stack.close()
