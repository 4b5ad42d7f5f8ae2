"""What a fault run reads back from the real servers for the checkers (faults/checkers.py):
the probe for hanging transactions.

A marker written now to a partition would land at its high watermark; a read_committed
consumer sees it once the partition's last stable offset (LSO, the end a read_committed
consumer is given) has reached that position, which an open transaction holds back until it
is committed, aborted or timed out. `marker_seen` takes each partition's high watermark now (the
marker's position) and polls, bounded, until the read_committed end reaches it. It writes
nothing: a real marker record would be a foreign record on the services' own topics.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def _ends(
    options: dict[str, Any], isolation: str, tps: list[TopicPartition]
) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**options, isolation_level=isolation, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def marker_seen(
    options: dict[str, Any], topic: str, partitions: int, *, within: float = 10.0
) -> dict[int, bool]:
    """Per partition, whether a read_committed consumer reaches, within `within` seconds, the
    position a marker written now would take."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    marker = await _ends(options, "read_uncommitted", tps)
    deadline = time.monotonic() + within
    while True:
        stable = await _ends(options, "read_committed", tps)
        seen = {p: stable[p] >= marker[p] for p in marker}
        if all(seen.values()) or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.2)
