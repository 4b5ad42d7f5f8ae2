"""aiokafka's transactional API against the project's real Kafka broker (scripts/kafka.sh).

The dispatcher's exactly-once step (consume, produce, commit the input offsets, all in one Kafka
transaction) rests on three broker behaviours, proved here for the pinned Kafka and aiokafka:

- records of a committed transaction reach read_committed consumers, and not before the commit;
- records of an aborted transaction never reach them, although they are in the log;
- consumer offsets sent with send_offsets_to_transaction commit and abort with the transaction.

Every test uses its own topics, consumer group and transactional id, so tests and reruns never
see each other's records. Waiting is always bounded by DEADLINE_S and ends as soon as the
expected state is observed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.kafka_env import kafka_options

# Generous for a loaded 2-core machine: the first transaction on a fresh broker also creates the
# internal __transaction_state and __consumer_offsets topics.
DEADLINE_S = 60.0
# Pause between two reads of the group's offsets: OffsetFetch has no long-poll form, so this is
# the interval of a deadline-bounded poll, not a wait that hopes the work is done.
OFFSETS_POLL_INTERVAL_S = 0.05

T = TypeVar("T")


def unique(kind: str) -> str:
    return f"it-txn-{kind}-{uuid.uuid4().hex[:12]}"


class Kafka:
    """Creates topics and clients for one test and removes them all afterwards."""

    def __init__(self, bootstrap: str, admin: AIOKafkaAdminClient) -> None:
        self.bootstrap = bootstrap
        self.admin = admin
        self.topics: list[str] = []
        self.clients: list[AIOKafkaProducer | AIOKafkaConsumer] = []

    async def topic(self, partitions: int = 1) -> str:
        name = unique("topic")
        response = await self.admin.create_topics([NewTopic(name, partitions, 1)])
        # create_topics reports failures in the response instead of raising.
        errors = [(topic, code) for topic, code, *_ in response.topic_errors if code != 0]
        assert not errors, f"create_topics failed: {errors}"
        self.topics.append(name)
        return name

    async def transactional_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **kafka_options(self.bootstrap),
            transactional_id=unique("txn"),
        )
        await producer.start()
        self.clients.append(producer)
        return producer

    async def reader(self, topic: str, isolation_level: str) -> AIOKafkaConsumer:
        """A group-less consumer of partition 0 from the beginning."""
        consumer = AIOKafkaConsumer(
            **kafka_options(self.bootstrap),
            group_id=None,
            isolation_level=isolation_level,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        self.clients.append(consumer)
        consumer.assign([TopicPartition(topic, 0)])
        return consumer

    async def group_member(self, topic: str, group_id: str) -> AIOKafkaConsumer:
        """A subscribed group member, as the dispatcher is: offsets only move by transaction."""
        consumer = AIOKafkaConsumer(
            topic,
            **kafka_options(self.bootstrap),
            group_id=group_id,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        self.clients.append(consumer)
        return consumer

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        offsets = await self.admin.list_consumer_group_offsets(group_id)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def close(self) -> None:
        for client in reversed(self.clients):
            await client.stop()
        if self.topics:
            await self.admin.delete_topics(self.topics)


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> AsyncIterator[Kafka]:
    admin = AIOKafkaAdminClient(**kafka_options(kafka_bootstrap))
    await admin.start()
    kafka = Kafka(kafka_bootstrap, admin)
    try:
        yield kafka
    finally:
        try:
            await kafka.close()
        finally:
            await admin.close()


def _remaining(deadline: float, what: str, seen: Any) -> float:
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        pytest.fail(f"gave up after {DEADLINE_S}s waiting for {what}; last seen: {seen!r}")
    return remaining


async def read_until(
    consumer: AIOKafkaConsumer, done: Callable[[list[ConsumerRecord]], bool], what: str
) -> list[ConsumerRecord]:
    """Fetches until done(records) holds; getmany long-polls the broker, so nothing spins."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    records: list[ConsumerRecord] = []
    while not done(records):
        remaining = _remaining(deadline, what, [r.value for r in records])
        batches = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
        for batch in batches.values():
            records.extend(batch)
    return records


async def poll_until(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        value = await probe()
        if done(value):
            return value
        _remaining(deadline, what, value)
        await asyncio.sleep(OFFSETS_POLL_INTERVAL_S)


def values(records: list[ConsumerRecord]) -> list[bytes]:
    return [record.value for record in records]


async def test_committed_transaction_is_visible_to_read_committed_consumer(kafka: Kafka) -> None:
    topic = await kafka.topic()
    tp = TopicPartition(topic, 0)
    producer = await kafka.transactional_producer()
    committed_reader = await kafka.reader(topic, "read_committed")
    uncommitted_reader = await kafka.reader(topic, "read_uncommitted")
    sent = [b"c-1", b"c-2", b"c-3"]

    await producer.begin_transaction()
    for value in sent:
        await producer.send_and_wait(topic, value, partition=0)
    # The records are in the log (acks=all has returned) but the transaction is open: the last
    # stable offset must hold read_committed consumers before them.
    assert (await uncommitted_reader.end_offsets([tp]))[tp] == len(sent)
    assert (await committed_reader.end_offsets([tp]))[tp] == 0
    await producer.commit_transaction()

    records = await read_until(
        committed_reader, lambda rs: len(rs) >= len(sent), "the committed records"
    )
    assert values(records) == sent


async def test_aborted_transaction_is_invisible_to_read_committed_consumer(kafka: Kafka) -> None:
    topic = await kafka.topic()
    producer = await kafka.transactional_producer()
    aborted = [b"a-1", b"a-2", b"a-3"]

    await producer.begin_transaction()
    for value in aborted:
        await producer.send_and_wait(topic, value, partition=0)
    await producer.abort_transaction()
    # A later committed record gives both readers a point at which they have certainly read past
    # the aborted ones, so "nothing arrived" is a fact, not a timeout.
    async with producer.transaction():
        await producer.send_and_wait(topic, b"after-abort", partition=0)

    def reached_marker(records: list[ConsumerRecord]) -> bool:
        return b"after-abort" in values(records)

    committed_reader = await kafka.reader(topic, "read_committed")
    seen_committed = await read_until(committed_reader, reached_marker, "the marker (committed)")
    assert values(seen_committed) == [b"after-abort"]

    # read_uncommitted sees the aborted records: the abort really wrote them, and they were
    # filtered out above by the transaction markers, not lost.
    uncommitted_reader = await kafka.reader(topic, "read_uncommitted")
    seen_uncommitted = await read_until(uncommitted_reader, reached_marker, "the marker (all)")
    assert values(seen_uncommitted) == [*aborted, b"after-abort"]


async def _consume_inputs(kafka: Kafka, partitions: int) -> tuple[str, str, AIOKafkaConsumer]:
    """An input topic holding 3 records per partition, read by a subscribed group member."""
    input_topic = await kafka.topic(partitions=partitions)
    group_id = unique("group")
    producer = await kafka.transactional_producer()
    async with producer.transaction():
        for partition in range(partitions):
            for n in range(3):
                await producer.send(
                    input_topic, f"in-{partition}-{n}".encode(), partition=partition
                )
    consumer = await kafka.group_member(input_topic, group_id)
    await read_until(consumer, lambda rs: len(rs) >= 3 * partitions, "the input records")
    return input_topic, group_id, consumer


async def test_offsets_sent_in_committed_transaction_become_group_offsets(kafka: Kafka) -> None:
    input_topic, group_id, consumer = await _consume_inputs(kafka, partitions=1)
    input_tp = TopicPartition(input_topic, 0)
    output_topic = await kafka.topic()
    assert await kafka.group_offsets(group_id) == {}

    producer = await kafka.transactional_producer()
    async with producer.transaction():
        await producer.send(output_topic, b"out", partition=0)
        await producer.send_offsets_to_transaction({input_tp: 3}, group_id)

    # Commit markers reach __consumer_offsets after commit_transaction returns; poll for them.
    offsets = await poll_until(
        lambda: kafka.group_offsets(group_id),
        lambda offsets: offsets.get(input_tp) == 3,
        "the transactionally committed offset",
    )
    assert offsets == {input_tp: 3}
    assert await consumer.committed(input_tp) == 3
    # The output of the same transaction is committed too: one atomic unit.
    output_reader = await kafka.reader(output_topic, "read_committed")
    assert values(await read_until(output_reader, bool, "the output record")) == [b"out"]


async def test_offsets_sent_in_aborted_transaction_are_not_group_offsets(kafka: Kafka) -> None:
    input_topic, group_id, consumer = await _consume_inputs(kafka, partitions=2)
    tp0, tp1 = TopicPartition(input_topic, 0), TopicPartition(input_topic, 1)
    producer = await kafka.transactional_producer()

    await producer.begin_transaction()
    await producer.send_offsets_to_transaction({tp0: 3}, group_id)
    await producer.abort_transaction()
    # The coordinator lets this producer's next transaction proceed only after the abort markers
    # are written, so once this commit's offset is visible the abort is settled, and tp0 must
    # still have no committed offset.
    async with producer.transaction():
        await producer.send_offsets_to_transaction({tp1: 3}, group_id)

    offsets = await poll_until(
        lambda: kafka.group_offsets(group_id),
        lambda offsets: tp1 in offsets,
        "the offset committed after the aborted transaction",
    )
    assert offsets == {tp1: 3}
    assert await consumer.committed(tp0) is None


async def test_transactions_are_not_answered_not_enough_replicas(
    kafka: Kafka, caplog: pytest.LogCaptureFixture
) -> None:
    """With KIP-890's partition verification on, Kafka 4.x answers some transactional produce
    requests NOT_ENOUGH_REPLICAS when they reach a partition before the broker has verified it as
    part of the open transaction; aiokafka retries each one after its backoff and logs a warning
    (hundreds a minute in the dispatcher's log). The broker of scripts/kafka.sh turns the
    verification off (docs/kafka.md). The dispatcher's shape of work (one producer per partition,
    two output topics and the input offsets in every transaction, four at once) shows none; with
    the verification on the same loop drew 30-44 retries in each of three runs."""
    outputs = [await kafka.topic(partitions=4), await kafka.topic(partitions=4)]
    source = await kafka.topic(partitions=4)
    group = unique("group")
    caplog.set_level("WARNING", logger="aiokafka")

    async def transactions(partition: int) -> None:
        producer = await kafka.transactional_producer()
        for n in range(100):
            async with producer.transaction():
                sent = [await producer.send(t, b"v", partition=partition) for t in outputs]
                await producer.send_offsets_to_transaction(
                    {TopicPartition(source, partition): n}, group
                )
                await asyncio.gather(*sent)

    await asyncio.gather(*(transactions(partition) for partition in range(4)))
    retried = [r.getMessage() for r in caplog.records if "NotEnoughReplicas" in r.getMessage()]
    assert retried == [], f"{len(retried)} produce retries, first: {retried[:1]}"
