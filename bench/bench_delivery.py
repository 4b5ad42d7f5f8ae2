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
2. **pause and cancel reaction** (the fence of issue 12, docs/delivery.md): the worker at its
   top rate (its rate limit lifted) and a message sent with the DEFAULT plan
   (`DeliveryPlan()`: 1,000/s, the default in-flight window); a pause is published: mails that
   reach the sink after it was accepted (a read_committed reader, already fetching, sees its
   `MessagePaused`: then the API can answer) and the time to the last one; the same pause with no
   window (`max_in_flight=None`, the default before issue 12), and a cancel with the default
   plan. Targets: at most the pool size, within 0.5 s.
3. **recovery of the delivery worker**: during the default-plan pause run, before the pause, the
   worker is SIGKILLed and restarted at once: time from the SIGKILL to the next mail at the sink.
4. **window throughput**: delivery rate with the default window against none, alternating rounds
   on fresh messages, the median of each (target: the default within -10 %, ratio >= 0.9).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosmtplib
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.bench_dispatch import audience, lso
from bench.cpu import Meter, pidfile
from bench.harness.delivery import DeliveryStack
from bench.harness.kafka import kafka_options
from bench.harness.processor import ids, record
from bench.progress import say
from core import MessageState, send_id
from schemas import CancelMessage, DeliveryPlan, PauseMessage
from services.delivery.mail import Mail, compose
from services.dispatcher.decider import key_of, partition_of

Server = tuple[str, str, tuple[str, int], str]  # bootstrap, database, smtp, sink


def arrival_rate(arrivals: list[datetime]) -> float | None:
    """Mails per second between the first and the last of these arrivals at the sink."""
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
    return [(row_id, at) for row_id, _, _, at in await stack.deliveries(sender, after)]


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
            return await lso(stack.bootstrap, stack.topics.sends, partition) - base >= n

        await stack.wait_for("every send record", released, within=600, every=0.2)
        say(name, f"the delivery worker, pool {pool}")
        worker = stack.spawn_delivery(DELIVERY_RATE="1000000", SMTP_POOL_SIZE=str(pool))
        sink_pid = pidfile("smtp_sink")
        meter = Meter({"worker": worker.pid, "sink": sink_pid, "kafka": pidfile("kafka")})
        meter.start()
        last = [0, time.monotonic()]

        async def delivered() -> bool:
            count = await stack.delivered_count(message)
            if time.monotonic() - last[1] > 10:
                say(name, "worker delivering", count, n)
                last[1] = time.monotonic()
            return count >= n

        await stack.wait_for("every mail delivered", delivered, within=1800, every=0.5)
        worker_cpu = Meter.per_item_ms(meter.stop(), n)
        worker_arrivals = await _arrivals(stack, stack.sender)
        worker_rate = arrival_rate(worker_arrivals)

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
        plain_rate = arrival_rate(await _arrivals(stack, plain_sender))

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
        sink_rate = arrival_rate(await _arrivals(stack, sink_sender))
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


async def _first_event(
    stack: DeliveryStack, partition: int, start: int, kind: bytes, ready: asyncio.Event
) -> tuple[float, float]:
    """The first event of `kind` committed at or after offset `start` of the events topic: its
    record time (written, before the commit) and when this read_committed reader, already
    fetching (`ready` is set after its first fetch), saw it: the moment the command was
    accepted (the API answers after that)."""
    consumer = AIOKafkaConsumer(
        **kafka_options(stack.bootstrap),
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        tp = TopicPartition(stack.topics.events, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=100)
            ready.set()
            for item in batches.get(tp, []):
                if ("type", kind) in list(item.headers):
                    return float(item.timestamp) / 1000, time.time()
        raise TimeoutError(f"no {kind.decode()}")
    finally:
        await consumer.stop()


async def _achieved(stack: DeliveryStack, message: UUID, seconds: float) -> float:
    """Mails/s the ledger records delivered for `message` over the next `seconds`."""
    first = await stack.delivered_count(message)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    return (await stack.delivered_count(message) - first) / (time.perf_counter() - t0)


async def _settled(stack: DeliveryStack, message: UUID, what: str) -> MessageState:
    """Wait until every send of `message` released before now has an outcome or came back."""

    async def check() -> MessageState | None:
        state = await stack.state(message)
        return state if state.book.outstanding == 0 else None

    found: MessageState = await stack.wait_for(what, check, within=300, every=0.5)
    return found


async def stop_reaction(
    stack: DeliveryStack,
    kind: str,
    plan: DeliveryPlan,
    recipients: int,
    measure_s: float,
    kills: int,
    spawn: Callable[[], subprocess.Popen[bytes]],
    worker: subprocess.Popen[bytes],
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """One message sending with `plan` at the worker's top rate; SIGKILL/restart the worker
    `kills` times (its recovery); then a pause or cancel (`kind`): mails at the sink after the
    command was accepted, and the time to the last one. Returns the figures and the worker."""
    name = f"{kind} max_in_flight={plan.max_in_flight}"
    message = ids()
    say(name, f"sending {recipients:,} (release_rate {plan.release_rate}/s)")
    await stack.send_now(message, audience(recipients), plan)
    await stack.wait_delivered(message, min(recipients // 4, 3000), within=300)

    recoveries = []
    for k in range(kills):
        say(name, f"recovery of the delivery worker {k + 1}/{kills}")
        stack.kill(worker)
        killed = time.perf_counter()
        seen = await _rows(stack, stack.sender)
        worker = spawn()

        async def delivering(after: int = seen[-1][0] if seen else 0) -> bool:
            return bool(await _rows(stack, stack.sender, after))

        await stack.wait_for("a mail after the worker restart", delivering, within=120)
        recoveries.append(round(time.perf_counter() - killed, 3))

    achieved = await _achieved(stack, message, measure_s)
    partition = partition_of(key_of(message), stack.settings.kafka_partitions)
    start = await lso(stack.bootstrap, stack.topics.events, partition)
    ready = asyncio.Event()
    event = b"MessagePaused" if kind == "pause" else b"MessageCanceled"
    watcher = asyncio.create_task(_first_event(stack, partition, start, event, ready))
    await asyncio.wait_for(ready.wait(), 60)
    say(name, f"{kind} at {achieved:,.0f} mails/s")
    command = PauseMessage if kind == "pause" else CancelMessage
    requested = time.time()
    await stack.publish(record(command(command_id=ids(), message_id=message)))
    written, accepted = await watcher
    state = await _settled(stack, message, f"every send released before the {kind} settled")
    arrivals = [a.timestamp() for a in await _arrivals(stack, stack.sender)]
    last = max(arrivals)
    returned = sum(
        len(e.contact_ids) for e in await stack.events_of(message) if e.type == "RecipientsReturned"
    )
    result = {
        "kind": kind,
        "recipients": recipients,
        "release_rate": plan.release_rate,
        "max_in_flight": plan.max_in_flight,
        "achieved_rate": round(achieved, 1),
        "accepted_after_request_ms": round((accepted - requested) * 1000, 1),
        "mails_after_accepted": sum(1 for a in arrivals if a > accepted),
        "last_mail_after_accepted_s": round(max(0.0, last - accepted), 3),
        "mails_after_written": sum(1 for a in arrivals if a > written),
        "last_mail_after_request_s": round(max(0.0, last - requested), 3),
        "returned": returned,
        "pending_after": state.book.pending,
        "recovery_delivery_s": recoveries,
    }
    if kind == "pause":  # nothing more of it: it would hold nothing, but keep the stack clean
        await stack.decide(record(CancelMessage(command_id=ids(), message_id=message)))
    say(name, f"done: {result}")
    return result, worker


async def window_throughput(
    stack: DeliveryStack, rounds: int, recipients: int, measure_s: float
) -> dict[str, list[float]]:
    """Delivery rate with the default plan (its in-flight window) and with no window, in
    alternating rounds on fresh messages (the machine is shared: one run of each says more about
    what else ran then than about the window). Each message is canceled and settled after."""
    rates: dict[str, list[float]] = {"default": [], "none": []}
    for r in range(rounds):
        for label, plan in (
            ("default", DeliveryPlan()),
            ("none", DeliveryPlan(max_in_flight=None)),
        ):
            say("window throughput", f"round {r + 1}/{rounds}: {label}")
            message = ids()
            await stack.send_now(message, audience(recipients), plan)
            await stack.wait_delivered(message, min(recipients // 10, 2000), within=300)
            rates[label].append(round(await _achieved(stack, message, measure_s), 1))
            await stack.decide(record(CancelMessage(command_id=ids(), message_id=message)))
            await _settled(stack, message, "the canceled message settled")
    return rates


async def fence(cfg: dict[str, Any], tmp: Path, server: Server) -> dict[str, Any]:
    """Issue 12 item 5 and issue 17 item 5 on one stack: the worker at its top rate (its own
    rate limit lifted, `pool` connections); a pause with the default plan (the delivery worker
    killed and restarted during it: its recovery), the same pause with no window, a cancel with
    the default plan; then the throughput of the default window against none."""
    tmp = tmp / "fence"
    tmp.mkdir(parents=True, exist_ok=True)
    stack = DeliveryStack(*server, tmp)
    await stack.start()
    try:
        stack.spawn_dispatcher(TICK_INTERVAL_S="0.2")

        def spawn() -> subprocess.Popen[bytes]:
            return stack.spawn_delivery(DELIVERY_RATE="1000000", SMTP_POOL_SIZE=str(cfg["pool"]))

        worker = spawn()
        n, measure = cfg["pause_recipients"], cfg["fence_measure_s"]
        found: dict[str, Any] = {"pool": cfg["pool"]}
        found["pause"], worker = await stop_reaction(
            stack, "pause", DeliveryPlan(), n, measure, cfg["delivery_kills"], spawn, worker
        )
        found["pause_no_window"], worker = await stop_reaction(
            stack, "pause", DeliveryPlan(max_in_flight=None), n, measure, 0, spawn, worker
        )
        found["cancel"], worker = await stop_reaction(
            stack, "cancel", DeliveryPlan(), n, measure, 0, spawn, worker
        )
        found["throughput"] = await window_throughput(
            stack, cfg["fence_rounds"], cfg["throughput_recipients"], cfg["throughput_s"]
        )
        return found
    finally:
        await stack.close()
