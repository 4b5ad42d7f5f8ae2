"""Delivery scales out by processes (issue 15 item 4): two delivery workers in one consumer
group share the sends topic's partitions, and every send is delivered exactly once."""

from __future__ import annotations

from collections import Counter
from uuid import UUID

import pytest

from bench.harness.delivery import DeliveryStack, released
from bench.harness.processor import ids
from core import MessageStatus, RecipientStatus
from schemas import Contact, DeliveryPlan
from services.dispatcher.decider import key_of, partition_of

RECIPIENTS = 1_000  # per message; one message per worker


@pytest.fixture
def stack(delivery_stack: DeliveryStack) -> DeliveryStack:
    return delivery_stack


async def test_two_delivery_workers_share_the_partitions_and_deliver_each_send_once(
    stack: DeliveryStack,
) -> None:
    """Given two delivery workers running at once, each owning some of the sends topic's
    partitions, when two 1,000-recipient messages are sent, one in a partition of each worker
    (a message's sends are in its own partition), then each worker delivered its message, the
    sink holds exactly one mail per contact (no Message-ID twice), and the ledger says every
    contact was delivered."""
    stack.spawn_dispatcher()
    names = (f"{stack.settings.topic_prefix}-first", f"{stack.settings.topic_prefix}-second")
    stack.spawn_delivery("first")
    stack.spawn_delivery("second")
    assert stack.db is not None
    partitions = stack.settings.kafka_partitions

    async def shared() -> bool:
        rows = await stack.db.fetch(
            "SELECT partition, owner FROM delivery_owners WHERE topic = $1", stack.topics.sends
        )
        owned = Counter(row["owner"] for row in rows)
        # The group's assignment once settled: half each (a new owner takes its partitions one
        # by one, so "both own some" is seen before the last of them has moved).
        return len(rows) == partitions and owned == dict.fromkeys(names, partitions // 2)

    # Both own their half before anything is released: no send moves between them mid-way.
    await stack.wait_for("both workers to own partitions", shared, within=120)
    owner_of = {
        row["partition"]: row["owner"]
        for row in await stack.db.fetch(
            "SELECT partition, owner FROM delivery_owners WHERE topic = $1", stack.topics.sends
        )
    }
    chosen: dict[str, UUID] = {}
    while len(chosen) < 2:  # a message in a partition of each worker
        candidate = ids()
        chosen.setdefault(owner_of[partition_of(key_of(candidate), partitions)], candidate)
    audiences = {
        message: tuple(
            Contact(contact_id=f"s{n}-{i}", email=f"s{n}-{i}@example.org")
            for i in range(RECIPIENTS)
        )
        for n, message in enumerate(chosen.values())
    }
    for message, audience in audiences.items():
        await stack.send_now(message, audience, DeliveryPlan(release_rate=1000))

    states = [
        await stack.wait_status(message, MessageStatus.SENT, within=300) for message in audiences
    ]

    mails = await stack.sink()
    assert len(mails) == 2 * RECIPIENTS
    assert max(Counter(mid for mid, _ in mails).values()) == 1, "a Message-ID arrived twice"
    at_sink = Counter(rcpt.split("@")[0] for _, rcpt in mails)
    everyone = {c.contact_id for audience in audiences.values() for c in audience}
    assert set(at_sink) == everyone and max(at_sink.values()) == 1
    by_worker: Counter[str] = Counter()
    for message, state in zip(audiences, states, strict=True):
        ledger = await stack.ledger(message)
        assert len(ledger) == RECIPIENTS
        assert {row["state"] for row in ledger.values()} == {"delivered"}
        # Who holds the partition now is who delivered it: no rebalance since `shared`.
        by_worker.update(owner_of[row["partition"]] for row in ledger.values())
        assert state.book.counts[RecipientStatus.DELIVERED] == RECIPIENTS
        out = released(await stack.events_of(message))
        assert len(out) == len(set(out)) == RECIPIENTS
    assert dict(by_worker) == dict.fromkeys(names, RECIPIENTS)
    now = {
        row["partition"]: row["owner"]
        for row in await stack.db.fetch(
            "SELECT partition, owner FROM delivery_owners WHERE topic = $1", stack.topics.sends
        )
    }
    assert now == owner_of, "the partitions moved during the send"
    print(f"\ntwo workers: {dict(by_worker)} sends each, 0 duplicates")
