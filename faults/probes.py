"""What a fault run reads back from the real servers for the checkers (faults/checkers.py):
the marker probe for hanging transactions. It writes one marker record (outside any
transaction) to every partition of a topic, then reads with read_committed from just before
it: a transaction left open on a partition holds that partition's last stable offset below the
marker, so the marker stays invisible until the transaction is committed, aborted or timed out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

MARKER_HEADER = "mailctl-fault-marker"


async def marker_seen(
    options: dict[str, Any], topic: str, partitions: int, *, within: float = 10.0
) -> dict[int, bool]:
    """Per partition, whether a read_committed consumer saw a marker written now, within
    `within` seconds (bounded poll)."""
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(**options, acks="all")
    await producer.start()
    offsets: dict[int, int] = {}
    try:
        for p in range(partitions):
            meta = await producer.send_and_wait(
                topic, value=b"", partition=p, headers=[(MARKER_HEADER, marker)]
            )
            offsets[p] = meta.offset
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        **options, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    seen = dict.fromkeys(offsets, False)
    try:
        tps = [TopicPartition(topic, p) for p in offsets]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, offsets[tp.partition])
        deadline = time.monotonic() + within
        while not all(seen.values()) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                if any((MARKER_HEADER, marker) in list(r.headers) for r in records):
                    seen[tp.partition] = True
            await asyncio.sleep(0)
        return seen
    finally:
        await consumer.stop()
