"""Crashes at any point lose and duplicate nothing: SIGKILL the dispatcher and, separately and
together, the delivery worker in the middle of a 20,000-recipient send; restart them; count at
the sink and in the ledger. And the log alone decides: a replay of the commands topic into a
fresh processor writes the same send records (and events) in the same order."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from bench.harness.delivery import DeliveryStack, read_topic, released
from bench.harness.processor import ids, record
from core import MessageStatus, RecipientStatus
from schemas import (
    Contact,
    DeliveryPlan,
    PauseMessage,
    ResumeMessage,
)
from services.delivery.worker import CLAIM_CHUNK

RECIPIENTS = 20_000


@pytest.fixture
def stack(delivery_stack: DeliveryStack) -> DeliveryStack:
    return delivery_stack


async def test_sigkill_of_dispatcher_and_delivery_loses_and_duplicates_nothing(
    stack: DeliveryStack,
) -> None:
    """Given a 20,000-recipient message sending, when the dispatcher is SIGKILLed at 2,000
    delivered, the delivery worker at 6,000, both at 10,000 and the worker again at 14,000, each
    restarted at once, then the message is sent; the sink holds no second copy of any mail; every
    contact is in the ledger, delivered (and at the sink) or unknown (claimed when its worker
    died: at most two claim chunks per partition per kill, never sent again); and no contact was
    released twice."""
    dispatcher = stack.spawn_dispatcher()
    worker = stack.spawn_delivery()
    message = ids()
    audience = tuple(
        Contact(contact_id=f"k{i}", email=f"k{i}@example.org") for i in range(RECIPIENTS)
    )
    await stack.send_now(message, audience, DeliveryPlan(release_rate=2000))

    await stack.wait_delivered(message, 2000)
    stack.kill(dispatcher)
    dispatcher = stack.spawn_dispatcher()
    await stack.wait_delivered(message, 6000)
    stack.kill(worker)
    worker = stack.spawn_delivery()
    await stack.wait_delivered(message, 10_000)
    stack.kill(dispatcher)
    stack.kill(worker)
    dispatcher = stack.spawn_dispatcher()
    worker = stack.spawn_delivery()
    await stack.wait_delivered(message, 14_000)
    stack.kill(worker)
    worker = stack.spawn_delivery()

    state = await stack.wait_status(message, MessageStatus.SENT, within=300)

    mails = await stack.sink()
    assert max(Counter(mid for mid, _ in mails).values()) == 1, "a Message-ID arrived twice"
    at_sink = Counter(rcpt.split("@")[0] for rcpt in (r for _, r in mails))
    assert max(at_sink.values()) == 1, "a contact got two copies"
    ledger = await stack.ledger(message)
    assert len(ledger) == RECIPIENTS
    states = Counter(row["state"] for row in ledger.values())
    assert set(states) <= {"delivered", "unknown"}, states
    delivered = {c for c, row in ledger.items() if row["state"] == "delivered"}
    unknown = {c for c, row in ledger.items() if row["state"] == "unknown"}
    assert delivered <= set(at_sink), "the ledger says delivered, the sink has nothing"
    assert set(at_sink) <= delivered | unknown, "a mail the ledger cannot account for"
    assert delivered | unknown == {c.contact_id for c in audience}, "a contact was lost"
    assert len(unknown) <= 3 * CLAIM_CHUNK * stack.settings.kafka_partitions
    assert state.book.counts[RecipientStatus.DELIVERED] == len(delivered)
    assert state.book.counts[RecipientStatus.UNKNOWN] == len(unknown)
    out = released(await stack.events_of(message))
    assert len(out) == len(set(out)) == RECIPIENTS
    print(
        f"\ncrash test: {len(delivered)} delivered, {len(unknown)} unknown "
        f"({len(unknown & set(at_sink))} of them at the sink), 0 duplicates"
    )


async def test_a_replay_of_the_commands_log_writes_the_same_sends_in_the_same_order(
    stack: DeliveryStack, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Given a processor that released two messages on its own clock (one paused and resumed
    along the way), when its commands topic (commands and ticks) is copied record for record
    into fresh topics and a new processor without a clock reads it, then it writes the same send
    records, events and results, partition by partition, byte for byte."""
    first = stack.spawn_dispatcher()
    a, b = ids(), ids()
    for message, rate in ((a, 100), (b, 150)):
        audience = tuple(Contact(contact_id=f"r{i}", email=f"r{i}@example.org") for i in range(300))
        await stack.send_now(message, audience, DeliveryPlan(release_rate=rate))

    async def some_released() -> bool:
        return len(released(await stack.events_of(b))) >= 150

    await stack.wait_for("a first release", some_released)
    await stack.decide(record(PauseMessage(command_id=ids(), message_id=b)))
    await stack.decide(record(ResumeMessage(command_id=ids(), message_id=b)))

    async def all_released() -> bool:
        counts = [len(released(await stack.events_of(m))) for m in (a, b)]
        return counts == [300, 300]

    await stack.wait_for("every release", all_released)
    first.terminate()
    first.wait(timeout=30)

    parts = stack.settings.kafka_partitions
    # The replay's commands topic keeps the timestamps copied from the original log
    # (CreateTime): the original's broker stamped them, and every decision was taken at them.
    replay = DeliveryStack(
        kafka_bootstrap,
        stack.database_url,
        stack.smtp,
        stack.sink_url,
        tmp_path,
        simulated_time=True,
    )
    await replay.start()
    try:
        log = await read_topic(kafka_bootstrap, stack.topics.commands, parts)
        assert replay.producer is not None
        for partition, records in log.items():
            for r in records:
                await replay.producer.send(
                    replay.topics.commands,
                    value=r.value,
                    key=r.key,
                    partition=partition,
                    headers=r.headers,
                    timestamp_ms=r.timestamp,
                )
        await replay.producer.flush()
        replay.spawn_dispatcher(CLOCK_ENABLED="false")
        original = {
            topic: await read_topic(kafka_bootstrap, getattr(stack.topics, topic), parts)
            for topic in ("sends", "events", "results")
        }
        assert sum(len(v) for v in original["sends"].values()) == 602  # 2 contents + 600 sends

        async def caught_up() -> bool:
            sends = await read_topic(kafka_bootstrap, replay.topics.sends, parts)
            return sum(len(v) for v in sends.values()) >= 602

        await replay.wait_for("the replay's sends", caught_up)
        await replay.barrier(a, (await stack.state(a)).created_at)
        await replay.barrier(b, (await stack.state(b)).created_at)
        for topic, by_partition in original.items():
            again = await read_topic(kafka_bootstrap, getattr(replay.topics, topic), parts)
            for partition, records in by_partition.items():
                replayed = [r.value for r in again[partition]]
                assert replayed[: len(records)] == [r.value for r in records], (topic, partition)
    finally:
        await replay.close()


async def test_a_frozen_worker_that_wakes_after_its_partitions_moved_sends_nothing_twice(
    stack: DeliveryStack,
) -> None:
    """Given a delivery worker frozen (SIGSTOP) in the middle of a 3,000-recipient send, when a
    second worker takes its partitions and goes on, and the first then wakes up (SIGCONT), then
    the first is fenced by the owner epoch before it claims anything more: no contact gets two
    mails, and every contact is delivered or unknown (the sends it had claimed when frozen)."""
    stack.spawn_dispatcher()
    env = {"KAFKA_SESSION_TIMEOUT_MS": "6000"}
    frozen = stack.spawn_delivery("first", **env)
    message = ids()
    audience = tuple(Contact(contact_id=f"z{i}", email=f"z{i}@example.org") for i in range(3000))
    await stack.send_now(message, audience, DeliveryPlan(release_rate=300))

    await stack.wait_delivered(message, 300, within=120)
    frozen.send_signal(signal.SIGSTOP)
    try:
        stack.spawn_delivery("second", **env)
        before = await stack.delivered_count(message)
        await stack.wait_delivered(message, before + 600, within=120)
    finally:
        frozen.send_signal(signal.SIGCONT)
    state = await stack.wait_status(message, MessageStatus.SENT, within=180)

    mails = await stack.sink()
    at_sink = Counter(rcpt.split("@")[0] for _, rcpt in mails)
    assert max(at_sink.values()) == 1, "a contact got two copies"
    ledger = await stack.ledger(message)
    delivered_ids = {c for c, row in ledger.items() if row["state"] == "delivered"}
    unknown = {c for c, row in ledger.items() if row["state"] == "unknown"}
    assert delivered_ids | unknown == {c.contact_id for c in audience}
    assert delivered_ids <= set(at_sink) <= delivered_ids | unknown
    assert len(unknown) <= CLAIM_CHUNK * stack.settings.kafka_partitions
    assert state.book.counts[RecipientStatus.DELIVERED] == len(delivered_ids)
    owners = await stack.db.fetch(  # type: ignore[union-attr]
        "SELECT owner, epoch FROM delivery_owners WHERE topic = $1", stack.topics.sends
    )
    # Every partition changed hands at least once after the freeze (the woken worker may have
    # been given some back by the rebalance that followed: under a new epoch).
    assert len(owners) == stack.settings.kafka_partitions
    assert all(row["epoch"] >= 2 for row in owners)
