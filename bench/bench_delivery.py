"""Delivery throughput beside the plain SMTP client and the sink's own ceiling; pause reaction;
the delivery worker's recovery. On the real Kafka, Postgres and SMTP sink.

1. **delivery**: a message of N recipients (make bench: 50,000) is released completely first
   (no worker running), then the real delivery worker (`python -m services.delivery`,
   `SMTP_POOL_SIZE` connections, its rate limit lifted) delivers it. Rate = mails between the
   first and the last arrival at the sink (the sink's own receive times) per second.
   **Ceiling**: a plain aiosmtplib client, the same pool size (one `aiosmtplib.SMTP` per
   connection, each sending from a shared queue with `sendmail`), sends the same mails (rendered
   beforehand by the same `compose`) to the same sink, measured the same way. **Sink ceiling**:
   the plain client with four times the connections: what the sink accepts at most.
2. **pause reaction**: a message sending at the highest rate the machine reached in 1 (release
   rate and worker rate set to it); a pause is requested: how long from the request until the
   last mail reaches the sink, and how many mails arrive after the pause was accepted (the record
   time of its `MessagePaused`). With and without a `max_in_flight` window (one second of
   sending).
3. **recovery of the delivery worker**: during 2, the worker is SIGKILLed and restarted at once:
   time from the SIGKILL to the next mail at the sink.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.bench_dispatch import audience, lso
from bench.cpu import Meter, pidfile
from bench.harness.delivery import DeliveryStack
from bench.harness.kafka import kafka_options
from bench.harness.processor import ids, record
from bench.progress import say
from core import send_id
from schemas import DeliveryPlan, PauseMessage
from services.delivery.mail import Mail, compose
from services.dispatcher.decider import key_of, partition_of

Server = tuple[str, str, tuple[str, int], str]  # bootstrap, database, smtp, sink


def _rate(arrivals: list[datetime]) -> float | None:
    if len(arrivals) < 2:
        return None
    span = (max(arrivals) - min(arrivals)).total_seconds()
    return (len(arrivals) - 1) / span if span > 0 else None


async def plain_client(
    smtp: tuple[str, int], mails: list[Mail], connections: int
) -> tuple[float, int]:
    """Send `mails` with `connections` plain aiosmtplib clients; (wall seconds, refused)."""
    queue: asyncio.Queue[Mail] = asyncio.Queue()
    for mail in mails:
        queue.put_nowait(mail)
    refused = 0

    async def one() -> None:
        nonlocal refused
        client = aiosmtplib.SMTP(hostname=smtp[0], port=smtp[1], timeout=30, start_tls=False)
        await client.connect()
        try:
            while True:
                try:
                    mail = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    await client.sendmail(mail.mail_from, [mail.rcpt_to], mail.data)
                except aiosmtplib.SMTPException:
                    refused += 1
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return time.perf_counter() - started, refused


async def _arrivals(stack: DeliveryStack, sender: str, after: int = 0) -> list[datetime]:
    return [at for _, at in await _rows(stack, sender, after)]


async def _rows(stack: DeliveryStack, sender: str, after: int = 0) -> list[tuple[int, datetime]]:
    """(sink id, receive time) of every mail from `sender` after sink id `after`."""
    assert stack.http is not None
    found: list[tuple[int, datetime]] = []
    while True:
        response = await stack.http.get(
            "/deliveries", params={"mail_from": sender, "after": after, "limit": 50_000}
        )
        response.raise_for_status()
        page: list[Any] = response.json()
        if not page:
            return found
        found.extend((int(row[0]), datetime.fromisoformat(row[3])) for row in page)
        after = page[-1][0]


async def delivery(n: int, pool: int, sink_n: int, tmp: Path, server: Server) -> dict[str, Any]:
    name = f"delivery {n:,}"
    tmp = tmp / "delivery"
    tmp.mkdir(parents=True, exist_ok=True)
    stack = DeliveryStack(*server, tmp)
    await stack.start()
    try:
        message = ids()
        partition = partition_of(key_of(message), stack.settings.kafka_partitions)
        people = audience(n)
        stack.spawn_dispatcher(TICK_INTERVAL_S="0.2")
        base = await lso(stack.bootstrap, stack.topics.sends, partition)
        say(name, "releasing every send (no worker yet)")
        await stack.send_now(message, people, DeliveryPlan(release_rate=10_000))

        async def released() -> bool:
            await asyncio.sleep(0.2)
            return await lso(stack.bootstrap, stack.topics.sends, partition) - base >= n

        await stack.wait_for("every send record", released, within=600)
        say(name, f"the delivery worker, pool {pool}")
        worker = stack.spawn_delivery(DELIVERY_RATE="1000000", SMTP_POOL_SIZE=str(pool))
        sink_pid = pidfile("smtp_sink")
        meter = Meter({"worker": worker.pid, "sink": sink_pid, "kafka": pidfile("kafka")})
        meter.start()
        last = [0, time.monotonic()]

        async def delivered() -> bool:
            await asyncio.sleep(0.5)
            count = await stack.delivered_count(message)
            if time.monotonic() - last[1] > 10:
                say(name, "worker delivering", count, n)
                last[1] = time.monotonic()
            return count >= n

        await stack.wait_for("every mail delivered", delivered, within=1800)
        worker_cpu = Meter.per_item_ms(meter.stop(), n)
        worker_arrivals = await _arrivals(stack, stack.sender)
        worker_rate = _rate(worker_arrivals)

        # The same mails from the plain client (its own sender, so the sink tells them apart).
        plain_sender = f"plain@{stack.settings.topic_prefix}.test"
        content = stack.content.model_copy(update={"from_address": plain_sender})
        mails = [
            compose(
                send_id=send_id(message, c.contact_id),
                message_id=message,
                content=content,
                contact=c,
                domain=stack.settings.topic_prefix + ".test",
            )
            for c in people
        ]
        say(name, f"ceiling: plain aiosmtplib, {pool} connections, {n:,} mails")
        meter = Meter({"bench (plain client)": os.getpid(), "sink": sink_pid})
        meter.start()
        plain_s, refused = await plain_client(stack.smtp, mails, pool)
        plain_cpu = Meter.per_item_ms(meter.stop(), n)
        plain_rate = _rate(await _arrivals(stack, plain_sender))

        sink_sender = f"sink@{stack.settings.topic_prefix}.test"
        sink_content = stack.content.model_copy(update={"from_address": sink_sender})
        sink_mails = [
            compose(
                send_id=send_id(message, c.contact_id),
                message_id=message,
                content=sink_content,
                contact=c,
                domain=stack.settings.topic_prefix + ".test",
            )
            for c in people[:sink_n]
        ]
        say(name, f"sink ceiling: plain aiosmtplib, {4 * pool} connections, {sink_n:,} mails")
        sink_s, sink_refused = await plain_client(stack.smtp, sink_mails, 4 * pool)
        sink_rate = _rate(await _arrivals(stack, sink_sender))
        result = {
            "mails": n,
            "pool": pool,
            "worker_rate": worker_rate,
            "plain_rate": plain_rate,
            "plain_wall_rate": n / plain_s,
            "plain_refused": refused,
            "cpu_ms_per_mail_worker_run": worker_cpu,
            "cpu_ms_per_mail_plain_run": plain_cpu,
            "load_avg": list(os.getloadavg()),
            "sink_mails": sink_n,
            "sink_connections": 4 * pool,
            "sink_rate": sink_rate,
            "sink_wall_rate": sink_n / sink_s,
            "sink_refused": sink_refused,
        }
        say(name, f"done: {result}")
        return result
    finally:
        await stack.close()


async def _paused_at(stack: DeliveryStack, partition: int, start: int) -> float:
    """The record time of the first MessagePaused committed at or after `start`."""
    consumer = AIOKafkaConsumer(
        **kafka_options(stack.bootstrap),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tp = TopicPartition(stack.topics.events, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=500)
            for item in batches.get(tp, []):
                if ("type", b"MessagePaused") in list(item.headers):
                    return float(item.timestamp) / 1000
        raise TimeoutError("no MessagePaused")
    finally:
        await consumer.stop()


async def pause_reaction(
    rate: int, in_flight: int | None, recipients: int, kills: int, tmp: Path, server: Server
) -> dict[str, Any]:
    name = f"pause max_in_flight={in_flight}"
    tmp = tmp / f"pause-{in_flight}"
    tmp.mkdir(parents=True, exist_ok=True)
    stack = DeliveryStack(*server, tmp)
    await stack.start()
    try:
        stack.spawn_dispatcher(TICK_INTERVAL_S="0.2")
        worker = stack.spawn_delivery(DELIVERY_RATE=str(rate), SMTP_POOL_SIZE="8")
        message = ids()
        say(name, f"sending {recipients:,} at {rate}/s")
        await stack.send_now(
            message,
            audience(recipients),
            DeliveryPlan(release_rate=min(rate, 10_000), max_in_flight=in_flight),
        )
        warm = min(recipients // 4, 3 * rate)
        await stack.wait_delivered(message, warm, within=300)

        recoveries = []
        for k in range(kills):
            say(name, f"recovery of the delivery worker {k + 1}/{kills}")
            stack.kill(worker)
            killed = time.perf_counter()
            seen = await _rows(stack, stack.sender)
            worker = stack.spawn_delivery(DELIVERY_RATE=str(rate), SMTP_POOL_SIZE="8")

            async def delivering(after: int = seen[-1][0] if seen else 0) -> bool:
                await asyncio.sleep(0.05)
                return bool(await _rows(stack, stack.sender, after))

            await stack.wait_for("a mail after the worker restart", delivering, within=120)
            recoveries.append(round(time.perf_counter() - killed, 3))

        first = await stack.delivered_count(message)
        t0 = time.perf_counter()
        await asyncio.sleep(5)
        achieved = (await stack.delivered_count(message) - first) / (time.perf_counter() - t0)
        partition = partition_of(key_of(message), stack.settings.kafka_partitions)
        start = await lso(stack.bootstrap, stack.topics.events, partition)
        say(name, f"pausing at {achieved:,.0f} mails/s")
        requested = time.time()
        await stack.publish(record(PauseMessage(command_id=ids(), message_id=message)))
        paused_ts = await _paused_at(stack, partition, start)
        paused = datetime.fromtimestamp(paused_ts, UTC)

        rows = await _rows(stack, stack.sender)
        last = [rows[-1][0] if rows else 0, time.monotonic()]

        async def quiet() -> bool:
            # Settled: no new mail at the sink for 3 s (bounded by wait_for).
            await asyncio.sleep(0.5)
            new = await _rows(stack, stack.sender, last[0])
            if new:
                last[:] = [new[-1][0], time.monotonic()]
            return time.monotonic() - last[1] > 3

        await stack.wait_for("the sink to go quiet", quiet, within=300)
        arrivals = await _arrivals(stack, stack.sender)
        after = [a for a in arrivals if a > paused]
        result = {
            "rate_asked": rate,
            "max_in_flight": in_flight,
            "achieved_rate": round(achieved, 1),
            "accepted_after_request_ms": round((paused_ts - requested) * 1000, 1),
            "last_mail_after_request_s": round(max(0.0, max(arrivals).timestamp() - requested), 3),
            "last_mail_after_pause_s": round(max(0.0, (max(arrivals) - paused).total_seconds()), 3),
            "mails_after_pause": len(after),
            "recovery_delivery_s": recoveries,
        }
        say(name, f"done: {result}")
        return result
    finally:
        await stack.close()
