"""Reading a partition's committed history: the processor's rebuild and the projections' catch-up
and audits read the log the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.common.kafka import client_options
from services.common.settings import Settings


async def read_range(
    settings: Settings, topic: str, partition: int, start: int = 0, end: int | None = None
) -> AsyncIterator[ConsumerRecord[Any, Any]]:
    """Committed records of one partition from ``start`` up to ``end`` (default: the current
    last stable offset: with read_committed nothing beyond it is decided)."""
    if end is not None and start >= end:
        return  # nothing to read (and a consumer stopped right after its start can fail)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        isolation_level="read_committed",
        enable_auto_commit=False,
        # assign() starts an offset reset of its own with this policy; with "latest" it can
        # land after the seek below and the read finds nothing.
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=settings.max_record_bytes,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if end is None:
            end = (await consumer.end_offsets([tp]))[tp]
        if start >= end:
            return
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batches.get(tp, []):
                if record.offset >= end:
                    return
                if record.offset >= start:
                    yield record
    finally:
        await consumer.stop()


async def end_offset(settings: Settings, topic: str, partition: int) -> int:
    """The high watermark of one partition: the offset after every record appended (committed,
    aborted or, for a writer between transactions, none open). Unlike the last stable offset it
    does not wait for the markers of a transaction that has just been committed."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), isolation_level="read_uncommitted", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()
