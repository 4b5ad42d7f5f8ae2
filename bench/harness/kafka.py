"""The connection options of a bench or test Kafka client: `client_options`
(services/common/kafka.py) for a given bootstrap address, logged in as the environment says
(scripts/with_env.sh exports the admin principal for the broker the scripts run); and `committed`,
a topic's committed records read once from the beginning to its current end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.common.kafka import client_options
from services.common.settings import Settings


def kafka_options(bootstrap: str) -> dict[str, Any]:
    return client_options(Settings(kafka_bootstrap_servers=bootstrap))


async def committed(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    *,
    max_records: int = 5000,
    **options: Any,
) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Every committed record (read_committed) of `partitions` of `topic`, from the beginning to
    the end each had when the read began, in log order within a partition; `options` go to the
    consumer (a larger `max_partition_fetch_bytes` for large records). Streamed: a topic of
    millions of records is never held at once."""
    consumer = AIOKafkaConsumer(
        **kafka_options(bootstrap),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(*tps, timeout_ms=200, max_records=max_records)
            for tp, records in batches.items():
                for found in records:
                    if found.offset < ends[tp]:
                        yield found
    finally:
        await consumer.stop()
