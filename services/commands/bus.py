"""Publishing commands to the processor and waiting for their results (docs/architecture.md).

One producer and one results listener per API process. The listener reads every partition of
the results topic (no consumer group: each API process needs every result it may be waiting
for) with read_committed, from the end as it was at start-up, and hands each result to whoever
waits for that command id. A waiter is registered before its command is published, so a result
can never arrive unseen.

A record of the results topic that is no result (only the dispatcher's principal writes there:
an operator's or a bug's) is logged as an error, counted (`unreadable_results`) and passed
over: its dead letter is the dispatcher's to write, once, at its next take of the partition
(services/dispatcher/processor.py); every API process reads every result, so each would write
a copy. Nobody waits for it: a waiter's command id cannot be read from it.
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.wire import CommandRecord, CommandResult
from services.common.kafka import client_options
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics

log = structlog.get_logger(__name__)


class BusUnavailableError(Exception):
    """Raised when a command is published while Kafka has not been reached (yet)."""


class KafkaCommandBus:
    """The `CommandBus` of services/commands/ports.py on the real Kafka.

    It connects in the background, retrying, so the API starts and reports its health (503)
    while Kafka is down; a command published meanwhile waits a little, then is refused.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self._waiters: dict[UUID, list[asyncio.Future[CommandResult]]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        #: Records of the results topic that were no result (see the module's docstring).
        self.unreadable_results = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._connect()
                break
            except Exception as error:  # anything: log it, tidy up, try again
                log.warning("kafka not reached, retrying", error=repr(error), retry_in_s=delay)
                await self._close_clients()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._ready.set()
        log.info("command bus ready", commands=self.topics.commands, results=self.topics.results)
        await self._listen()

    async def _connect(self) -> None:
        # The API may be the first process up: the topics it writes and reads must exist.
        await ensure_topics(self.settings)
        producer = AIOKafkaProducer(
            **client_options(self.settings),
            enable_idempotence=True,
            acks="all",
            max_request_size=self.settings.max_record_bytes,
        )
        self._producer = producer
        await producer.start()
        # The listener is placed before the bus is ready: no command is published before it.
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        self._consumer = consumer  # from here on, _close_clients stops it if anything fails
        await consumer.start()
        tps = [
            TopicPartition(self.topics.results, p) for p in range(self.settings.kafka_partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            # Resolve the positions now: a command published once the bus is ready must find
            # the listener already placed before its result.
            await consumer.position(tp)

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        # A client whose start failed half-way may fail to stop too: it is dropped either way.
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_clients()

    async def _listen(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as error:
                # The broker went away for a moment: keep the position and try again; waiters
                # that give up meanwhile answer 202 and their retries publish again.
                log.warning("results listener error", error=repr(error))
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        result = CommandResult.model_validate_json(record.value or b"")
                    except (ValidationError, ValueError) as error:
                        self.unreadable_results += 1
                        log.error(
                            "record of the results topic is no result; passed over",
                            partition=record.partition,
                            offset=record.offset,
                            error=f"{type(error).__name__}: {error}"[:300],
                        )
                        continue
                    for future in self._waiters.pop(result.command_id, []):
                        if not future.done():
                            future.set_result(result)

    def expect(self, command_id: UUID) -> asyncio.Future[CommandResult]:
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(command_id, []).append(future)
        return future

    def forget(self, command_id: UUID, future: asyncio.Future[CommandResult]) -> None:
        waiting = self._waiters.get(command_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiters.pop(command_id, None)

    async def publish(self, record: CommandRecord, value: bytes | None = None) -> None:
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.settings.command_wait_s)
            except TimeoutError:
                raise BusUnavailableError("Kafka has not been reached") from None
        assert self._producer is not None
        await self._producer.send_and_wait(
            self.topics.commands,
            value=value if value is not None else record.model_dump_json().encode(),
            key=str(record.command.message_id).encode(),
        )
