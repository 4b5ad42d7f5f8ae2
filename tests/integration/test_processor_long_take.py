"""A take longer than the consumer's session timeout (a large partition's rebuild on a loaded
machine) must not get the processor expelled from its group: aiokafka sends no heartbeat while
the rebalance callback runs, so the processor takes its partitions in its loop instead
(services/common/ownership.py, `deferred`; docs/services.md). Before, every such take ended in
"local member_id was not recognized", a rebalance and the takes again: the zombie-dispatcher
livelock of the fault matrix."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from bench.harness.processor import Stack
from services.dispatcher.processor import Partition, Processor

SESSION_MS = 6_000  # the broker's smallest session timeout (group.min.session.timeout.ms)
TAKE_S = 8.0  # longer than the session: no heartbeat at all during it would expel the member
BOUND_S = 90.0


async def test_a_take_longer_than_the_session_timeout_keeps_the_member_in_the_group(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, tmp_path, partitions=2)
    await stack.start()
    settings = stack.settings.model_copy(
        update={"kafka_session_timeout_ms": SESSION_MS, "clock_enabled": False}
    )
    processor = Processor(settings, stack.topics)
    real_take = processor.ownership._take
    takes: list[int] = []

    async def slow_take(number: int) -> Partition:
        takes.append(number)
        await asyncio.sleep(TAKE_S)  # the CPU-bound fold of a large partition, in effect
        return await real_take(number)

    processor.ownership._take = slow_take
    stop = asyncio.Event()
    running = asyncio.create_task(processor.run(stop))
    try:
        deadline = time.monotonic() + BOUND_S
        while processor.owned() != [0, 1]:
            assert not running.done(), running.exception()
            assert time.monotonic() < deadline, f"never owned both partitions; takes {takes}"
            await asyncio.sleep(0.2)
        assert sorted(takes) == [0, 1]
        # Past a whole session and more heartbeat intervals: an expelled member would have been
        # told at its first heartbeat, rejoined, and taken its partitions again.
        window = time.monotonic() + 1.5 * SESSION_MS / 1000
        while time.monotonic() < window:
            assert sorted(takes) == [0, 1], f"the partitions were taken again: {takes}"
            assert processor.owned() == [0, 1]
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 60)
        await stack.close()
