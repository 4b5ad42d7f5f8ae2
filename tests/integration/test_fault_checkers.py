"""The hanging-transaction checker fires on the real broker: a transaction left open on a
partition keeps a read_committed consumer from the position of a marker written after it
(faults/probes.py); once committed, every partition reaches it."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from faults.checkers import hanging_transactions
from faults.probes import marker_seen
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics
from tests.integration.kafka_env import kafka_options


async def test_an_open_transaction_is_caught_and_a_committed_one_is_not(
    kafka_bootstrap: str,
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        kafka_partitions=2,
    )
    await ensure_topics(settings)
    topic = Topics(settings.topic_prefix).events
    options = kafka_options(kafka_bootstrap)
    producer = AIOKafkaProducer(**options, transactional_id=f"{settings.topic_prefix}-hang")
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, value=b"open", partition=1)
        seen = await marker_seen(options, topic, 2, within=3.0)
        assert seen == {0: True, 1: False}
        assert hanging_transactions(seen) == [
            "partition 1: a transaction is still open (the marker after the run is invisible)"
        ]
        await producer.commit_transaction()
        seen = await marker_seen(options, topic, 2)
        assert hanging_transactions(seen) == []
    finally:
        await producer.stop()
