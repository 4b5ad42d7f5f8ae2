"""Issues 5 and 12: figures on the real Kafka, Postgres and SMTP sink (docs/delivery.md).

    make bench        # or: scripts/with_env.sh .venv/bin/python -m bench.bench_delivery

1. **release**: a 1,000,000-recipient message released to committed send records by the real
   processor, against aiokafka's transactional producer alone writing the same records (same
   values, key, partition, producer settings, 10,000 per transaction) to the same broker. The
   processor runs without its clock; the bench writes the ticks one simulated second apart, all
   at once, so the figure is the processor's speed, not the release rate's (10,000/s at most per
   message by design, docs/core.md).
2. **pause**: a message sending at 1,000 mails/s (release rate and worker rate); a pause is
   accepted; how long until the last mail reaches the sink, and how many arrive after it.
3. **restart**: the dispatcher SIGKILLed while releasing and restarted at once under the same
   static-membership id: how long until it releases again; the same for the delivery worker
   (until a mail reaches the sink again).
4. **restart of a large partition**: the dispatcher SIGKILLed and restarted while its partition
   holds a message of 1,000,000 recipients: how long until it owns the partition again (the
   rebuild reads and folds the partition's whole history).
5. **fence** (issue 12): with the DEFAULT plan and the worker at its top rate, a pause and, on
   another message, a cancel: mails that reach the sink after the command was committed (a
   read_committed reader sees its event: then the API can answer) and after its event was
   written, and the time to the last one (target: at most the pool size, within 0.5 s); and
   the delivery throughput with the default in-flight window against none (the default before
   issue 12; target: within 10 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core import MessageState, send_id
from schemas import (
    AddRecipients,
    CancelMessage,
    Contact,
    CreateDraft,
    DeliveryPlan,
    PauseMessage,
    ResumeMessage,
    ScheduleMessage,
)
from schemas.sends import send_records_json
from services.dispatcher.decider import key_of, partition_of
from tests.integration.delivery_harness import DeliveryStack
from tests.integration.kafka_env import kafka_options
from tests.integration.processor_harness import ids, record

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
DATABASE = os.environ.get("DATABASE_URL", "postgresql://mailctl:mailctl@127.0.0.1:15432/mailctl")
SMTP = (os.environ.get("SMTP_HOST", "127.0.0.1"), int(os.environ.get("SMTP_PORT", "10025")))
SINK = os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:18025")
CHUNK = 10_000


def _stack(tmp: Path) -> DeliveryStack:
    return DeliveryStack(BOOTSTRAP, DATABASE, SMTP, SINK, tmp)


def _audience(n: int) -> tuple[Contact, ...]:
    return tuple(
        Contact(contact_id=f"b{i}", email=f"b{i}@example.org", attributes={"first_name": f"N{i}"})
        for i in range(n)
    )


async def _lso(topic: str, partition: int) -> int:
    consumer = AIOKafkaConsumer(
        **kafka_options(BOOTSTRAP),
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def _first_event(
    topic: str, partition: int, start: int, event_type: bytes
) -> tuple[float, float]:
    """The first event of `event_type` committed at or after `start`: its record timestamp (when
    the processor wrote it) and when a read_committed reader saw it (after its commit)."""
    consumer = AIOKafkaConsumer(
        **kafka_options(BOOTSTRAP),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        while True:
            batches = await consumer.getmany(tp, timeout_ms=500)
            for record in batches.get(tp, []):
                if ("type", event_type) in list(record.headers):
                    return float(record.timestamp) / 1000, time.time()
    finally:
        await consumer.stop()


async def release(recipients: int, tmp: Path) -> None:
    stack = _stack(tmp)
    await stack.start()
    try:
        message = ids()
        partition = partition_of(key_of(message), stack.settings.kafka_partitions)
        audience = _audience(recipients)
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)

        # Baseline: the producer alone, the same records, already serialized.
        values = list(
            send_records_json(
                message_id=message,
                account_id="acct-a",
                released_at=at.isoformat(),
                release_sequence=1,
                sends=(
                    (str(send_id(message, c.contact_id)), c.model_dump_json()) for c in audience
                ),
            )
        )
        producer = AIOKafkaProducer(
            **kafka_options(BOOTSTRAP),
            transactional_id=f"{stack.settings.topic_prefix}-baseline",
            max_request_size=stack.settings.max_record_bytes,
        )
        await producer.start()
        key = key_of(message)
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
        baseline_s = time.perf_counter() - started
        await producer.stop()
        del values

        stack.spawn_dispatcher(CLOCK_ENABLED="false")
        await stack.decide(
            record(
                CreateDraft(
                    command_id=ids(),
                    message_id=message,
                    content=stack.content,
                    plan=DeliveryPlan(release_rate=10_000),
                ),
                at=at - timedelta(hours=1),
            )
        )
        adds = [
            record(
                AddRecipients(
                    command_id=ids(), message_id=message, contacts=audience[i : i + CHUNK]
                ),
                at=at - timedelta(hours=1),
            )
            for i in range(0, recipients, CHUNK)
        ]
        await stack.publish(*adds)
        await stack.result_of(adds[-1].command.command_id, within=600)
        await stack.decide(
            record(
                ScheduleMessage(command_id=ids(), message_id=message, send_at=at),
                at=at - timedelta(hours=1),
            )
        )
        base = await _lso(stack.topics.sends, partition)
        started = time.perf_counter()
        for k in range(recipients // 10_000 + 2):
            await stack.tick(at + timedelta(seconds=k))

        async def all_sends() -> bool:
            await asyncio.sleep(0.1)
            return await _lso(stack.topics.sends, partition) - base >= recipients + 1

        await stack.wait_for("every send record", all_sends, within=900)
        processor_s = time.perf_counter() - started
        print(
            f"release  recipients={recipients:,} producer_alone={baseline_s:.1f}s "
            f"({recipients / baseline_s:,.0f} records/s) processor={processor_s:.1f}s "
            f"({recipients / processor_s:,.0f} sends/s) ratio={baseline_s / processor_s:.2f} "
            "(target >= 0.50)",
            flush=True,
        )
    finally:
        await stack.close()


async def pause_and_restart(rate: int, tick: float, in_flight: int | None, tmp: Path) -> None:
    stack = _stack(tmp)
    await stack.start()
    try:
        dispatcher = stack.spawn_dispatcher(TICK_INTERVAL_S=str(tick))
        worker = stack.spawn_delivery(DELIVERY_RATE=str(rate), SMTP_POOL_SIZE="8")
        message = ids()
        audience = _audience(60_000)
        await stack.send_now(
            message, audience, DeliveryPlan(release_rate=rate, max_in_flight=in_flight)
        )
        await stack.wait_delivered(message, 3000, within=120)
        first = await stack.delivered_count(message)
        t0 = time.perf_counter()
        await asyncio.sleep(5)
        achieved = (await stack.delivered_count(message) - first) / (time.perf_counter() - t0)

        partition = partition_of(key_of(message), stack.settings.kafka_partitions)
        start = await _lso(stack.topics.events, partition)
        before = time.time()
        await stack.publish(record(PauseMessage(command_id=ids(), message_id=message)))
        paused_at, _ = await _first_event(stack.topics.events, partition, start, b"MessagePaused")
        paused = datetime.fromtimestamp(paused_at, UTC)
        await asyncio.sleep(5)
        arrivals = await stack.arrivals()
        after = [a for a in arrivals if a > paused]
        last = max(arrivals)
        print(
            f"pause    rate={rate}/s tick={tick}s max_in_flight={in_flight} "
            f"achieved={achieved:,.0f} mails/s "
            f"decided={(paused_at - before) * 1000:.0f}ms "
            f"last_mail_after_pause={(last - paused).total_seconds():.2f}s "
            f"mails_after_pause={len(after)} (target <= 1.5s)",
            flush=True,
        )

        await stack.decide(record(ResumeMessage(command_id=ids(), message_id=message)))
        await stack.wait_delivered(message, len(arrivals) + 2000, within=120)
        for _ in range(3):
            start = await _lso(stack.topics.events, partition)
            stack.kill(dispatcher)
            killed_at = time.time()
            dispatcher = stack.spawn_dispatcher(TICK_INTERVAL_S=str(tick))
            written, seen = await _first_event(
                stack.topics.events, partition, start, b"RecipientsReleased"
            )
            print(
                f"restart  dispatcher released again {written - killed_at:.2f}s after SIGKILL "
                f"(committed and read back after {seen - killed_at:.2f}s; target <= 5s)",
                flush=True,
            )
        stack.kill(worker)
        killed = time.perf_counter()
        killed_at = datetime.now(UTC)
        worker = stack.spawn_delivery(DELIVERY_RATE=str(rate), SMTP_POOL_SIZE="8")

        async def delivering() -> bool:
            await asyncio.sleep(0.05)
            return any(a > killed_at for a in await stack.arrivals())

        await stack.wait_for("a mail after the worker restart", delivering, within=120)
        print(
            f"restart  delivery worker delivered again {time.perf_counter() - killed:.2f}s "
            "after SIGKILL",
            flush=True,
        )
        await stack.decide(record(PauseMessage(command_id=ids(), message_id=message)))
    finally:
        await stack.close()


async def restart_large(recipients: int, tmp: Path) -> None:
    """How long a restarted dispatcher takes to own a partition that holds one message of
    `recipients` recipients (the rebuild folds the partition's whole history)."""
    stack = _stack(tmp)
    await stack.start()
    try:
        dispatcher = stack.spawn_dispatcher(CLOCK_ENABLED="false")
        message = ids()
        issued = datetime.now(UTC)
        await stack.decide(
            record(
                CreateDraft(
                    command_id=ids(), message_id=message, content=stack.content, plan=DeliveryPlan()
                ),
                at=issued,
            )
        )
        audience = _audience(recipients)
        adds = [
            record(
                AddRecipients(
                    command_id=ids(), message_id=message, contacts=audience[i : i + CHUNK]
                ),
                at=issued,
            )
            for i in range(0, recipients, CHUNK)
        ]
        await stack.publish(*adds)
        await stack.result_of(adds[-1].command.command_id, within=600)
        stack.kill(dispatcher)
        killed = time.perf_counter()
        restarted = stack.spawn_dispatcher(CLOCK_ENABLED="false")
        log = tmp / f"dispatcher-{stack.processes.index(restarted)}.log"
        partition = partition_of(key_of(message), stack.settings.kafka_partitions)

        async def taken() -> dict[str, object] | None:
            await asyncio.sleep(0.2)
            for line in log.read_text().splitlines() if log.exists() else []:
                if '"partition taken"' in line:
                    entry: dict[str, object] = json.loads(line)
                    if entry.get("partition") == partition:
                        return entry
            return None

        entry = await stack.wait_for("the partition taken", taken, within=600)
        print(
            f"restart  dispatcher owning a partition of {recipients:,} recipients: taken "
            f"{time.perf_counter() - killed:.1f}s after SIGKILL (rebuild {entry['take_s']}s, "
            f"{entry['events']} events)",
            flush=True,
        )
    finally:
        await stack.close()


async def _throughput(stack: DeliveryStack, message: UUID, seconds: float = 8.0) -> float:
    first = await stack.delivered_count(message)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    return (await stack.delivered_count(message) - first) / (time.perf_counter() - t0)


async def _stop_figures(
    stack: DeliveryStack, message: UUID, command: PauseMessage | CancelMessage
) -> str:
    """Publish a pause or cancel; wait until every send released before it has an outcome or
    came back (the worker returned it); then count the mails the sink got after it."""
    partition = partition_of(key_of(message), stack.settings.kafka_partitions)
    start = await _lso(stack.topics.events, partition)
    kind = b"MessagePaused" if isinstance(command, PauseMessage) else b"MessageCanceled"
    # A read_committed reader already waiting at the end of the events: the instant it sees the
    # event is when the pause was committed, i.e. accepted (the API answers after that).
    watcher = asyncio.create_task(_first_event(stack.topics.events, partition, start, kind))
    await asyncio.sleep(1.0)  # the watcher is assigned and fetching
    before = time.time()
    await stack.publish(record(command))
    written_at, accepted = await watcher

    async def settled() -> MessageState | None:
        await asyncio.sleep(0.5)
        state = await stack.state(message)
        return state if state.book.outstanding == 0 else None

    state = await stack.wait_for("every release settled", settled, within=300)
    arrivals = [a.timestamp() for a in await stack.arrivals()]
    after_accepted = [a for a in arrivals if a > accepted]
    after_written = [a for a in arrivals if a > written_at]
    last = max(arrivals)
    returned = sum(
        len(e.contact_ids) for e in await stack.events_of(message) if e.type == "RecipientsReturned"
    )
    return (
        f"committed_after={(accepted - before) * 1000:.0f}ms "
        f"mails_after_accepted={len(after_accepted)} "
        f"last_mail_after_accepted={last - accepted:+.3f}s "
        f"(written: mails_after={len(after_written)} last={last - written_at:+.3f}s) "
        f"returned={returned} pending_after={state.book.pending}"
    )


async def fence(
    rate: int,
    pool: int,
    compare: list[int | None],
    rounds: int,
    tmp: Path,
    skip_stops: bool = False,
) -> None:
    stack = _stack(tmp)
    await stack.start()
    try:
        stack.spawn_dispatcher()
        stack.spawn_delivery(DELIVERY_RATE=str(rate), SMTP_POOL_SIZE=str(pool))
        default = DeliveryPlan()
        stops = () if skip_stops else (("pause", PauseMessage), ("cancel", CancelMessage))
        for label, command in stops:
            message = ids()
            await stack.send_now(message, _audience(40_000), default)
            await stack.wait_delivered(message, 3000, within=120)
            achieved = await _throughput(stack, message, 4.0)
            figures = await _stop_figures(
                stack, message, command(command_id=ids(), message_id=message)
            )
            print(
                f"fence    {label:<6} plan=default (max_in_flight={default.max_in_flight}, "
                f"release_rate={default.release_rate}) worker_rate={rate}/s pool={pool} "
                f"achieved={achieved:,.0f} mails/s {figures} "
                f"(target: <= {pool} mails, <= 0.5s)",
                flush=True,
            )
            if label == "pause":
                await stack.decide(record(CancelMessage(command_id=ids(), message_id=message)))
        # Alternating rounds on fresh messages, the median per window: the machine is shared,
        # and a single run of each says more about what else ran then than about the window.
        rates: dict[str, list[float]] = {str(w): [] for w in compare}
        for _ in range(rounds):
            for window in compare:
                message = ids()
                await stack.send_now(message, _audience(20_000), DeliveryPlan(max_in_flight=window))
                await stack.wait_delivered(message, 2000, within=120)
                rates[str(window)].append(await _throughput(stack, message, 6.0))
                await stack.decide(record(CancelMessage(command_id=ids(), message_id=message)))

                async def settled(message: UUID = message) -> bool:
                    await asyncio.sleep(0.5)
                    return (await stack.state(message)).book.outstanding == 0

                await stack.wait_for("the canceled message settled", settled, within=300)
        medians = {k: statistics.median(v) for k, v in rates.items()}
        base = medians.get("None")
        shown = " ".join(
            f"max_in_flight={k}: {medians[k]:,.0f} mails/s "
            f"[{', '.join(f'{x:,.0f}' for x in v)}]"
            + (f" ({medians[k] / base - 1:+.1%} against none)" if base and k != "None" else "")
            for k, v in rates.items()
        )
        print(f"fence    throughput (median of {rounds}) {shown} (target: default within -10%)")
    finally:
        await stack.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_delivery")
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-stops", action="store_true", help="fence: throughput only")
    parser.add_argument(
        "--compare",
        default=f"none,{DeliveryPlan().max_in_flight}",
        help="max_in_flight values whose throughput the fence part measures (none: unbounded)",
    )
    parser.add_argument(
        "--only", choices=("release", "pause", "fence", "restart-large"), default=None
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "release"):
            asyncio.run(release(args.recipients, Path(tmp)))
        if args.only in (None, "pause"):
            asyncio.run(pause_and_restart(args.rate, args.tick, args.in_flight, Path(tmp)))
        if args.only in (None, "fence"):
            compare = [None if v == "none" else int(v) for v in args.compare.split(",")]
            asyncio.run(
                fence(args.rate, args.pool, compare, args.rounds, Path(tmp), args.skip_stops)
            )
        if args.only in (None, "restart-large"):
            asyncio.run(restart_large(args.large, Path(tmp)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
