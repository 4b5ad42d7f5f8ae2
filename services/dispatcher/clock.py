"""The processor's clock: time enters the log as data.

Every `tick_interval_s`, for each partition the process owns, one `Tick(tick_id, at)` is written
to `<prefix>.commands` at that explicit partition (key `b"tick"`: ticks belong to no message).
The processor plans a tick like any other input, in the order of the partition's log, so a
replay of the log reaches the same releases; `decide` and `plan` never read a clock.

The producer is not transactional: a tick is a fact ("the clock read `at`"), not a decision, and
it is visible to read_committed consumers as soon as it is acknowledged.

A zombie (a process that lost its partitions and does not know yet) may write a few extra ticks
to partitions it no longer owns. They are harmless: the owner plans them like its own ticks, and
a tick only says what time it is. The planner's release budget is the rate times the clock time
elapsed since the last release (at most one second's worth), so extra ticks never release more
than the clock allows, and a tick older than the last release releases nothing. (Only a zombie
whose clock runs ahead could matter: it could start a message early by its skew. Processes
are expected to run NTP-synchronised clocks, as every scheduler is.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import Tick
from services.common.kafka import client_options
from services.common.settings import Settings
from services.common.topics import Topics

log = structlog.get_logger(__name__)

TICK_KEY = b"tick"


class Clock:
    """Writes one tick per owned partition per interval until `stop` is set."""

    def __init__(
        self, settings: Settings, topics: Topics, owned: Callable[[], Iterable[int]]
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.owned = owned
        self.written = 0
        # Set when the process takes a partition: its first tick goes out at once rather than
        # up to an interval later (a restarted dispatcher releases again sooner).
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(**client_options(self.settings))
        await producer.start()
        try:
            while not stop.is_set():
                try:
                    await self.tick_once(producer)
                except KafkaError as error:
                    # A missed tick only delays releases by one interval; the next one carries
                    # the later instant. Keep ticking rather than take the processor down.
                    log.warning("tick not written", error=repr(error))
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(stop.wait(), self.wake.wait()), self.settings.tick_interval_s
                    )
        finally:
            await producer.stop()

    async def tick_once(self, producer: AIOKafkaProducer) -> None:
        at = utcnow()
        for number in sorted(self.owned()):
            tick = Tick(tick_id=new_tick_id(), at=at)
            await producer.send_and_wait(
                self.topics.commands,
                value=tick.model_dump_json().encode(),
                key=TICK_KEY,
                partition=number,
            )
            self.written += 1


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Return when the first of `waits` does (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def utcnow() -> datetime:
    # The one clock reading of the dispatcher: the instant a tick records. Decisions only ever
    # read ticks and command timestamps from the log.
    return datetime.now(UTC)


def new_tick_id() -> UUID:
    return uuid4()
