"""Publishing commands to the processor and waiting for their results (docs/architecture.md).

One producer and one results listener per API process. The listener reads every partition of
the results topic (no consumer group: each API process needs every result it may be waiting
for) with read_committed, from the end as it was at start-up, and hands each result to whoever
waits for that command id. A waiter is registered before its command is published, so a result
can never arrive unseen.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.wire import CommandRecord, CommandResult
from services.common.settings import Settings
from services.common.topics import Topics

log = structlog.get_logger(__name__)


class KafkaCommandBus:
    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self._waiters: dict[object, list[asyncio.Future[CommandResult]]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            max_request_size=self.settings.max_record_bytes,
        )
        await producer.start()
        self._producer = producer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        tps = [
            TopicPartition(self.topics.results, p) for p in range(self.settings.kafka_partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            # Resolve the positions now: a command published after start() returns must find
            # the listener already placed before its result.
            await consumer.position(tp)
        self._consumer = consumer
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        """Stop what was started (safe to call after a failed start, and twice)."""
        listener, self._listener = self._listener, None
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def _listen(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        result = CommandResult.model_validate_json(record.value)
                    except ValueError:
                        log.warning("undecodable result skipped", offset=record.offset)
                        continue
                    for future in self._waiters.pop(result.command_id, []):
                        if not future.done():
                            future.set_result(result)

    def expect(self, record: CommandRecord) -> asyncio.Future[CommandResult]:
        """A future for the command's result; call before publishing."""
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(record.command.command_id, []).append(future)
        return future

    def forget(self, record: CommandRecord, future: asyncio.Future[CommandResult]) -> None:
        waiting = self._waiters.get(record.command.command_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiters.pop(record.command.command_id, None)

    async def publish(self, record: CommandRecord) -> None:
        """Publish and wait for the broker's acknowledgement (acks=all)."""
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics.commands,
            value=record.model_dump_json().encode(),
            key=str(record.command.message_id).encode(),
        )
