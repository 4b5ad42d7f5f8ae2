"""The processor: the one writer of every message in the partitions it owns (docs/architecture.md).

It consumes `<prefix>.commands` (commands, copied events and clock ticks) in a consumer group and,
for each batch of one partition, in ONE Kafka transaction that also carries the batch's input
offsets:

* decides each command with the core (`decide`) and writes its events and its result;
* plans each tick with the core (`plan`) for the partition's active messages;
* appends the events a copy forwarded to the new message's partition;
* writes anything it cannot decode to the dead-letter topic, and goes on.

Its state (every message of the partition, folded with `evolve`, and the result of every command
already decided) is a cache of the committed log: built on assignment from `<prefix>.events` and
`<prefix>.command-results`, dropped and rebuilt after any failed or doubtful transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from core import (
    CommandNotAllowedError,
    Context,
    DomainError,
    InvalidCommandError,
    MessageAlreadyExistsError,
    MessageNotFoundError,
    MessageState,
    MessageStatus,
    decide,
    evolve,
    plan,
)
from schemas import Event, Tick, decode_event
from schemas.wire import (
    CommandRecord,
    CommandResult,
    CopiedEvent,
    DeadLetter,
    EventRef,
    Rejection,
    decode_input,
)
from services.common.settings import Settings
from services.common.topics import Topics

log = structlog.get_logger(__name__)

#: Statuses in which a tick can change a message (start, release, skip, finish).
ACTIVE = frozenset({MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.PAUSED})

#: A producer that sees one of these has been replaced by a newer owner of its partition.
FENCED = (ProducerFenced, InvalidProducerEpoch)


class MisroutedRecordError(ValueError):
    """Raised when a command's key is not its message id, or hashes to another partition: it
    would give the message a second writer."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` (murmur2, as the Java client)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def key_of(message_id: UUID) -> bytes:
    return str(message_id).encode()


def rejection(error: DomainError) -> Rejection:
    """A core error as the result record states it (HTTP mapping: services/commands)."""
    if isinstance(error, CommandNotAllowedError):
        return Rejection(
            code="not_allowed", message=str(error), status=error.status, allowed=error.allowed
        )
    if isinstance(error, InvalidCommandError):
        return Rejection(code="invalid", message=str(error), field=error.field)
    if isinstance(error, MessageAlreadyExistsError):
        return Rejection(code="already_exists", message=str(error))
    if isinstance(error, MessageNotFoundError):
        return Rejection(code="not_found", message=str(error))
    return Rejection(code="invalid", message=str(error))


@dataclass
class Partition:
    """What the processor holds for one owned input partition."""

    number: int
    producer: AIOKafkaProducer
    messages: dict[UUID, MessageState] = field(default_factory=dict)
    results: dict[UUID, CommandResult] = field(default_factory=dict)
    active: set[UUID] = field(default_factory=set)

    def fold(self, event: Event) -> MessageState:
        state = evolve(self.messages.get(event.message_id), event)
        self.messages[event.message_id] = state
        if state.status in ACTIVE:
            self.active.add(event.message_id)
        else:
            self.active.discard(event.message_id)
        return state


class Processor:
    """Owns partitions of the commands topic and decides everything about their messages."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.partitions: dict[int, Partition] = {}
        # Held while a batch is processed and while partitions change hands, so a revocation
        # never drops a partition in the middle of its transaction.
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self.decided = 0

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.topics.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.settings.max_record_bytes,
        )
        self._consumer = consumer
        consumer.subscribe([self.topics.commands], listener=_Listener(self))
        await consumer.start()
        clock = asyncio.create_task(self._clock(stop))
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batches.items():
                    async with self._lock:
                        await self._process(tp, records)
        finally:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            async with self._lock:
                for number in list(self.partitions):
                    await self._drop(number)
            await consumer.stop()

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        part = self.partitions.get(tp.partition)
        if part is None:
            return  # revoked (or fenced) since the fetch: the new owner reads these records
        try:
            # One transaction: the batch's outputs and its input offsets commit together.
            async with part.producer.transaction():
                for record in records:
                    await self._handle(part, record)
                await part.producer.send_offsets_to_transaction(
                    {tp: records[-1].offset + 1}, self.topics.group
                )
        except FENCED:
            log.warning("fenced: another owner took the partition", partition=tp.partition)
            await self._drop(tp.partition)
        except Exception:
            # Aborted, or a commit with an unknown outcome: the in-memory state may hold what
            # the log does not (evolve folds in place), and the consumer does not rewind by
            # itself. Start the partition over from the committed log.
            log.exception("transaction failed; rebuilding the partition", partition=tp.partition)
            await self._drop(tp.partition)
            await self._take(tp.partition, rewind=True)

    async def _handle(self, part: Partition, record: ConsumerRecord[Any, Any]) -> None:
        try:
            item = decode_input(record.value)
            if isinstance(item, Tick):
                await self._tick(part, item)
                return
            self._check_route(part, record, item)
        except (ValidationError, ValueError) as error:
            await self._dead_letter(part, record, error)
            return
        if isinstance(item, CopiedEvent):
            await self._copied(part, record, item)
        else:
            await self._command(part, item)

    def _check_route(
        self, part: Partition, record: ConsumerRecord[Any, Any], item: CommandRecord | CopiedEvent
    ) -> None:
        message_id = (
            item.command.message_id if isinstance(item, CommandRecord) else item.event.message_id
        )
        if record.key != key_of(message_id):
            raise MisroutedRecordError(f"the record's key must be its message id {message_id}")
        if partition_of(record.key, self.settings.kafka_partitions) != part.number:
            raise MisroutedRecordError(
                f"message {message_id} belongs to partition "
                f"{partition_of(record.key, self.settings.kafka_partitions)}, not {part.number}"
            )

    # ------------------------------------------------------------------ the three inputs

    async def _command(self, part: Partition, item: CommandRecord) -> None:
        command = item.command
        bound = log.bind(
            message_id=str(command.message_id),
            command_id=str(command.command_id),
            command_type=command.type,
        )
        first = part.results.get(command.command_id)
        if first is not None:
            # A retry (the caller did not see the first answer): the same answer, nothing decided.
            await self._send_result(part, first)
            bound.info("command repeated", outcome=first.outcome)
            return
        state = part.messages.get(command.message_id)
        ctx = Context(
            now=item.issued_at,
            actor=item.actor,
            default_time_zone=item.default_time_zone,
            correlation_id=item.correlation_id,
        )
        try:
            events = decide(command, state, ctx)
        except DomainError as error:
            after = part.messages.get(command.message_id)
            visible = after is not None and after.account_id == item.actor.account_id
            result = CommandResult(
                command_id=command.command_id,
                message_id=command.message_id,
                command_type=command.type,
                correlation_id=item.correlation_id,
                outcome="rejected",
                status=after.status.value if visible and after else None,
                sequence=after.version if visible and after else 0,
                rejection=rejection(error),
            )
        else:
            own = [e for e in events if e.message_id == command.message_id]
            for event in own:
                await self._send_event(part, event)
                part.fold(event)
            for event in events:
                if event.message_id != command.message_id:
                    # The new message of a copy has its own writer: its partition's processor.
                    await self._forward(part, command.command_id, event)
            after = part.messages.get(command.message_id)
            result = CommandResult(
                command_id=command.command_id,
                message_id=command.message_id,
                command_type=command.type,
                correlation_id=item.correlation_id,
                outcome="accepted",
                status=after.status.value if after else None,
                sequence=after.version if after else 0,
                events=tuple(
                    EventRef(
                        message_id=e.message_id,
                        sequence=e.sequence,
                        event_id=e.event_id,
                        type=e.type,
                    )
                    for e in events
                ),
            )
        part.results[command.command_id] = result
        await self._send_result(part, result)
        self.decided += 1
        bound.info(
            "command decided",
            outcome=result.outcome,
            status=result.status,
            sequence=result.sequence,
            reason=result.rejection.message if result.rejection else None,
        )

    async def _tick(self, part: Partition, tick: Tick) -> None:
        # Sorted: the order of the released events must not depend on set iteration order, so
        # a replay of the same log writes the same records in the same order.
        for message_id in sorted(part.active):
            state = part.messages[message_id]
            for event in plan(state, tick):
                await self._send_event(part, event)
                state = part.fold(event)

    async def _copied(
        self, part: Partition, record: ConsumerRecord[Any, Any], item: CopiedEvent
    ) -> None:
        event = item.event
        state = part.messages.get(event.message_id)
        version = 0 if state is None else state.version
        if event.sequence <= version:
            return  # appended before: event ids are derived from (message, sequence)
        if event.sequence != version + 1:
            await self._dead_letter(
                part,
                record,
                ValueError(f"copied event {event.sequence} does not follow version {version}"),
            )
            return
        await self._send_event(part, event)
        part.fold(event)

    # ------------------------------------------------------------------ outputs

    async def _send_event(self, part: Partition, event: Event) -> None:
        # The input's partition number, explicitly: the message's events must be where this
        # partition's rebuild reads them, whatever partitioner an external producer used.
        await part.producer.send(
            self.topics.events,
            value=event.model_dump_json().encode(),
            key=key_of(event.message_id),
            partition=part.number,
            headers=[("type", event.type.encode())],
        )

    async def _send_result(self, part: Partition, result: CommandResult) -> None:
        await part.producer.send(
            self.topics.results,
            value=result.model_dump_json().encode(),
            key=key_of(result.message_id),
            partition=part.number,
            headers=[("command_id", str(result.command_id).encode())],
        )

    async def _forward(self, part: Partition, command_id: UUID, event: Event) -> None:
        key = key_of(event.message_id)
        await part.producer.send(
            self.topics.commands,
            value=CopiedEvent(copy_command_id=command_id, event=event).model_dump_json().encode(),
            key=key,
            partition=partition_of(key, self.settings.kafka_partitions),
        )

    async def _dead_letter(
        self, part: Partition, record: ConsumerRecord[Any, Any], error: Exception
    ) -> None:
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=None if record.key is None else bytes(record.key).decode(errors="replace"),
            value=b"" if record.value is None else bytes(record.value).decode(errors="replace"),
            error=f"{type(error).__name__}: {error}",
        )
        await part.producer.send(
            self.topics.dead_letter, value=letter.model_dump_json().encode(), key=record.key
        )
        log.warning(
            "record sent to the dead-letter topic",
            partition=record.partition,
            offset=record.offset,
            error=letter.error[:500],
        )

    # ------------------------------------------------------------------ ownership

    async def _take(self, number: int, *, rewind: bool = False) -> None:
        """Own a partition: fence its previous owner and rebuild its state. With `rewind` (after
        an abort) also move the input back to the committed offset; on a new assignment the
        consumer starts there by itself, and a second seek would make it read records twice."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            transactional_id=self.topics.transactional_id(number),
            max_request_size=self.settings.max_record_bytes,
        )
        # start() initialises the transactional id: the broker bumps its epoch, which fences a
        # zombie holding the same id and aborts whatever transaction it left open.
        await producer.start()
        part = Partition(number, producer)
        await self._rebuild(part)
        self.partitions[number] = part
        if rewind:
            assert self._consumer is not None
            tp = TopicPartition(self.topics.commands, number)
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        log.info(
            "partition taken",
            partition=number,
            messages=len(part.messages),
            active=len(part.active),
            results=len(part.results),
            rewound=rewind,
        )

    async def _drop(self, number: int) -> None:
        part = self.partitions.pop(number, None)
        if part is not None:
            with contextlib.suppress(Exception):
                await part.producer.stop()

    async def _rebuild(self, part: Partition) -> None:
        """Fold the partition's committed events and results, from the beginning to the end."""
        async for value in _read_all(self.settings, self.topics.events, part.number):
            part.fold(decode_event(value))
        async for value in _read_all(self.settings, self.topics.results, part.number):
            result = CommandResult.model_validate_json(value)
            part.results.setdefault(result.command_id, result)

    async def _clock(self, stop: asyncio.Event) -> None:
        """Write a tick to every owned partition each interval: time enters the log as data."""
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            while not stop.is_set():
                at = _utcnow()
                for number in sorted(self.partitions):
                    tick = Tick(tick_id=_new_id(), at=at)
                    await producer.send(
                        self.topics.commands,
                        value=tick.model_dump_json().encode(),
                        key=b"tick",
                        partition=number,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.tick_interval_s)
        finally:
            await producer.stop()

    def owned(self) -> list[int]:
        return sorted(self.partitions)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.processor._lock:
            for tp in revoked:
                await self.processor._drop(tp.partition)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.processor._lock:
            for tp in sorted(assigned, key=lambda tp: tp.partition):
                if tp.partition not in self.processor.partitions:
                    await self.processor._take(tp.partition)


async def _read_all(settings: Settings, topic: str, partition: int) -> Any:
    """Yield the committed values of one partition, from the beginning to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        # Not only a seek to the beginning: assign() starts an offset reset of its own, with
        # this policy, which can land after the seek (with "latest", the read found nothing).
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=settings.max_record_bytes,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        # With read_committed, the end is the last stable offset: nothing beyond it is decided.
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batches.get(tp, []):
                if record.offset >= end:
                    return
                yield record.value
    finally:
        await consumer.stop()


def _utcnow() -> datetime:
    # The one clock reading of the processor: the instant a tick records. Decisions only ever
    # read ticks and command timestamps from the log.
    return datetime.now(UTC)


def _new_id() -> UUID:
    return uuid4()
