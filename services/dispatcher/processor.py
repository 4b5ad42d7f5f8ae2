"""The processor: the one writer of every message in the partitions it owns (docs/architecture.md,
docs/dispatcher.md).

It consumes `<prefix>.commands` (commands, copied events and clock ticks) in a consumer group and,
for each batch of one partition, in ONE Kafka transaction that also carries the batch's input
offsets:

* decides each command with the core (`decide`) and writes its events and its result;
* plans each tick with the core (`plan`) for the partition's active messages;
* appends the events a copy forwarded to the new message's partition;
* writes anything it cannot decode to the dead-letter topic, and goes on; a dead-lettered
  command whose ids can be read still gets a rejected result, so its caller is answered.

Time is the service's: a command is decided at its record's timestamp, which the broker stamps
when it appends the record (the commands topic is `LogAppendTime`, services/common/topics.py).
That instant is in the log, so a rebuild or a replay decides the same; the publisher's
`issued_at` is kept in the record as information only.

Its state (every message of the partition, folded with `evolve`, and the result of every command
already decided) is a cache of the committed log: built on assignment from `<prefix>.events` and
`<prefix>.command-results`, dropped and rebuilt after any failed or doubtful transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

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
from core.audience import chunk_report
from core.ids import send_ids
from schemas import DraftCreated, Event, RecipientsReleased, SendingStarted, Tick, decode_event
from schemas.sends import FenceRecord, FenceStatus, MailContent, send_records_json
from schemas.wire import (
    CommandRecord,
    CommandResult,
    CopiedEvent,
    DeadLetter,
    EventRef,
    Rejection,
    decode_input,
    readable_ids,
)
from services.common.kafka import client_options
from services.common.reading import read_range
from services.common.settings import Settings
from services.common.topics import Topics
from services.dispatcher.clock import Clock

log = structlog.get_logger(__name__)

#: Statuses in which a tick can change a message (start, release, skip, finish).
ACTIVE = frozenset({MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.PAUSED})

#: A producer that sees one of these has been replaced by a newer owner of its partition.
FENCED = (ProducerFenced, InvalidProducerEpoch)

#: How long one batch's transaction may take, from its first send to the end of its commit.
#: aiokafka's commit waits without a bound; past this the outcome is unknown (see `_process`).
#: Below the producer's transaction timeout (60 s), after which the broker aborts it anyway.
TRANSACTION_DEADLINE_S = 45.0

#: How long closing a producer may take (it flushes first, which never ends with no broker).
CLOSE_DEADLINE_S = 10.0

#: The most input records one fetch brings (one partition's share is handled in order).
MAX_BATCH = 500

#: The events that change a message's fence (docs/delivery.md, "The fence"), and its status then.
FENCES: dict[str, FenceStatus] = {
    "MessagePaused": "paused",
    "MessageResumed": "sending",
    "MessageCanceled": "canceled",
}

#: A transaction that has written this many output records commits before it takes the next
#: input record: a bound on its size and duration whatever the ticks release.
MAX_TRANSACTION_OUTPUT = 20_000


class MisroutedRecordError(ValueError):
    """Raised when a command's key is not its message id, or hashes to another partition: it
    would give the message a second writer."""


#: The header the intake relay puts on a command it forwards: the integrating principal, whose
#: answers topic also gets the command's result. Only service principals write the commands
#: topic, so the header is the relay's word, not a publisher's.
INTAKE_HEADER = "intake-principal"


def intake_principal(record: ConsumerRecord[Any, Any]) -> str | None:
    for name, value in record.headers or ():
        if name == INTAKE_HEADER:
            return bytes(value).decode(errors="replace")
    return None


class UntrustedTimeError(ValueError):
    """Raised when a command's record is not stamped the way the commands topic is set to
    stamp it (KAFKA_COMMANDS_TIMESTAMP_TYPE): its timestamp is a publisher's clock."""


class TransactionInDoubtError(Exception):
    """A transaction did not end within TRANSACTION_DEADLINE_S: committed or not is unknown."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` (murmur2, as the Java client)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


#: aiokafka's ConsumerRecord.timestamp_type values (Kafka's TimestampType ids).
TIMESTAMP_TYPES = {"CreateTime": 0, "LogAppendTime": 1}


def decision_time(record: ConsumerRecord[Any, Any], expected: str) -> datetime:
    """The instant a command is decided at: its record's timestamp. On the service's commands
    topic the broker stamps it on append (LogAppendTime), so it is the service's clock and it is
    in the log. A record stamped otherwise carries a publisher's clock and is refused."""
    if record.timestamp_type != TIMESTAMP_TYPES[expected] or record.timestamp is None:
        raise UntrustedTimeError(
            f"the record's timestamp is not of type {expected} (topic config "
            "message.timestamp.type): a command is decided at the service's time only"
        )
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


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


def dead_letter_result(
    value: bytes | None, letter: DeadLetter, error: Exception
) -> CommandResult | None:
    """The rejected result of a command record that was dead-lettered, when its command id and
    message id can be read from the raw value: its caller waits for a result by command id and
    would otherwise wait forever. The reason is the dead letter's error. None when the ids
    cannot be read (nobody can be waiting for that record by id)."""
    ids = readable_ids(value)
    if ids is None:
        return None
    field = None
    if isinstance(error, ValidationError) and error.errors():
        # pydantic's path into the record (union tags included), e.g. command.CreateDraft.content.
        field = ".".join(str(part) for part in error.errors()[0]["loc"])[:200] or None
    return CommandResult(
        command_id=ids.command_id,
        message_id=ids.message_id,
        command_type=ids.command_type,
        correlation_id=ids.correlation_id,
        outcome="rejected",
        rejection=Rejection(
            code="invalid", message=f"dead-lettered: {letter.error}"[:2000], field=field
        ),
        decided=False,
    )


def result_for(
    item: CommandRecord, after: MessageState | None, decided: list[Event] | DomainError
) -> CommandResult:
    """The result of a decided command: the events it produced, or the core's error; and the
    message's status and last sequence number after it. A rejected caller of another account
    learns nothing of the message (no status, sequence 0), as if it did not exist."""
    command = item.command
    rejected = isinstance(decided, DomainError)
    shown = after
    if rejected and after is not None and after.account_id != item.actor.account_id:
        shown = None
    audience = None
    if not isinstance(decided, DomainError) and after is not None:
        # What an audience chunk did to each contact (core.audience): from its event, or, when
        # it changed nothing, from the state it left as it was.
        audience = chunk_report(command, decided, after.book)
    return CommandResult(
        command_id=command.command_id,
        message_id=command.message_id,
        command_type=command.type,
        correlation_id=item.correlation_id,
        outcome="rejected" if rejected else "accepted",
        status=shown.status.value if shown is not None else None,
        sequence=shown.version if shown is not None else 0,
        events=()
        if isinstance(decided, DomainError)
        else tuple(
            EventRef(message_id=e.message_id, sequence=e.sequence, event_id=e.event_id, type=e.type)
            for e in decided
        ),
        rejection=rejection(decided) if isinstance(decided, DomainError) else None,
        audience=audience,
    )


@dataclass
class Partition:
    """What the processor holds for one owned input partition."""

    number: int
    producer: AIOKafkaProducer
    messages: dict[UUID, MessageState] = field(default_factory=dict)
    results: dict[UUID, CommandResult] = field(default_factory=dict)
    # The messages a tick can change: a tick costs O(active), not O(messages of the partition).
    active: set[UUID] = field(default_factory=set)
    # New message id -> the copy command that created it, to tell a forwarded event that was
    # appended before from one that collides with another message's stream.
    copied_by: dict[UUID, UUID] = field(default_factory=dict)
    # The input offset after the last committed batch (for the lag on /health).
    next_offset: int | None = None
    # Output records written in the current transaction.
    written: int = 0

    def fold(self, event: Event) -> MessageState:
        # evolve consumes the previous state (it mutates the book in place): only the returned
        # state is kept, and a failed transaction drops the whole partition (see _process).
        state = evolve(self.messages.get(event.message_id), event)
        self.messages[event.message_id] = state
        if state.status in ACTIVE:
            self.active.add(event.message_id)
        else:
            self.active.discard(event.message_id)
        if isinstance(event, DraftCreated) and event.copied_from is not None:
            self.copied_by[event.message_id] = event.causation_id
        return state


class Processor:
    """Owns partitions of the commands topic and decides everything about their messages."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.partitions: dict[int, Partition] = {}
        # Assigned partitions this process could not take (Kafka failing while it rebuilt):
        # paused in the consumer, taken again by the loop. number -> earliest next attempt.
        self.orphans: dict[int, float] = {}
        # Held while a batch is processed and while partitions change hands, so a revocation
        # never drops a partition in the middle of its transaction.
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self.running = False
        self.decided = 0
        self.clock = Clock(settings, topics, self.owned)

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.topics.group,
            # Static membership: a restarted process with the same id is given its partitions
            # back without waiting for the session of its dead predecessor to time out.
            group_instance_id=self.settings.dispatcher_instance_id,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.settings.max_record_bytes,
        )
        self._consumer = consumer
        consumer.subscribe([self.topics.commands], listener=_Listener(self))
        await consumer.start()
        clock = asyncio.create_task(
            self.clock.run(stop) if self.settings.clock_enabled else stop.wait()
        )
        self.running = True
        try:
            while not stop.is_set():
                if clock.done():
                    clock.result()  # the clock died: end the process rather than never tick
                await self._retake_orphans()
                batches = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
                for tp, records in batches.items():
                    async with self._lock:
                        await self._process(tp, records)
        finally:
            self.running = False
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
            # Revoked, fenced or orphaned since the fetch: whoever takes the partition next
            # starts from the committed offset, so skipping these loses nothing.
            return
        # The transaction runs as a task of its own so that a commit that never answers can be
        # left behind: aiokafka waits for the end of a commit without a bound.
        try:
            while records:
                task = asyncio.create_task(self._transaction(part, tp, records))
                task.add_done_callback(_retrieve)
                finished, _ = await asyncio.wait({task}, timeout=TRANSACTION_DEADLINE_S)
                if not finished:
                    task.cancel()
                    raise TransactionInDoubtError(
                        f"no end of the transaction after {TRANSACTION_DEADLINE_S:g}s"
                    )
                taken = task.result()
                part.next_offset = records[taken - 1].offset + 1
                records = records[taken:]
        except FENCED:
            # Another owner initialised this partition's transactional id after us: it owns
            # the partition now (or will once the group rebalances). Stop reading it until the
            # group gives it back; our transaction was aborted by the broker.
            log.warning("fenced: another owner took the partition", partition=tp.partition)
            await self._drop(tp.partition)
            self._pause(tp.partition)
        except Exception:
            # Aborted, or a commit with an unknown outcome: the in-memory state may hold what
            # the log does not (evolve folds in place), and the consumer does not rewind by
            # itself. Never retry the batch on the same producer: a new one (its init fences
            # the old one and settles its transaction either way) rebuilds from the committed
            # log and rewinds the input to the committed offset.
            log.exception("transaction failed; rebuilding the partition", partition=tp.partition)
            await self._drop(tp.partition)
            await self._try_take(tp.partition, rewind=True)

    async def _transaction(
        self, part: Partition, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]
    ) -> int:
        """One transaction: the events, results, sends, forwarded copies and dead letters of a
        run of the batch's records, with the offset after the last of them, commit together or
        not at all. The run ends early once it wrote MAX_TRANSACTION_OUTPUT records (ticks of
        large messages release thousands each); returns how many input records it took."""
        async with part.producer.transaction():
            part.written = 0
            taken = 0
            for record in records:
                await self._handle(part, record)
                taken += 1
                if part.written >= MAX_TRANSACTION_OUTPUT:
                    break
            await part.producer.send_offsets_to_transaction(
                {tp: records[taken - 1].offset + 1}, self.topics.group
            )
        return taken

    async def _handle(self, part: Partition, record: ConsumerRecord[Any, Any]) -> None:
        try:
            item = decode_input(record.value)
            if isinstance(item, Tick):
                await self._tick(part, record, item)
                return
            self._check_route(part, record, item)
        except (ValidationError, ValueError) as error:
            await self._dead_letter(part, record, error)
            return
        if isinstance(item, CopiedEvent):
            await self._copied(part, record, item)
        else:
            await self._command(part, record, item)

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

    async def _command(
        self, part: Partition, record: ConsumerRecord[Any, Any], item: CommandRecord
    ) -> None:
        command = item.command
        bound = log.bind(
            message_id=str(command.message_id),
            command_id=str(command.command_id),
            command_type=command.type,
        )
        first = part.results.get(command.command_id)
        if first is not None:
            # A retry (the caller did not see the first answer): the same answer, nothing decided.
            await self._send_result(part, first, intake_principal(record))
            bound.info("command repeated", outcome=first.outcome)
            return
        try:
            now = decision_time(record, self.settings.kafka_commands_timestamp_type)
        except UntrustedTimeError as error:
            await self._dead_letter(part, record, error)
            return
        state = part.messages.get(command.message_id)
        ctx = Context(
            # The log's instant, never the publisher's issued_at (see the module docstring).
            now=now,
            actor=item.actor,
            default_time_zone=item.default_time_zone,
            correlation_id=item.correlation_id,
        )
        try:
            events = decide(command, state, ctx)
        except DomainError as error:
            result = result_for(item, part.messages.get(command.message_id), error)
        except Exception as error:
            # decide is pure and only reads the state: the same record would fail the same way
            # on every retry and block the partition. Set it aside; nothing was written for it.
            bound.exception("command could not be decided")
            await self._dead_letter(part, record, error)
            return
        else:
            own = [e for e in events if e.message_id == command.message_id]
            for event in own:
                await self._send_event(part, event)
                part.fold(event)
                fence = FENCES.get(event.type)
                if fence is not None:
                    await self._send_fence(part, event, fence)
            for event in events:
                if event.message_id != command.message_id:
                    # The new message of a copy has its own writer: its partition's processor.
                    await self._forward(part, command.command_id, event)
            result = result_for(item, part.messages.get(command.message_id), events)
        part.results[command.command_id] = result
        await self._send_result(part, result, intake_principal(record))
        self.decided += 1
        bound.info(
            "command decided",
            outcome=result.outcome,
            status=result.status,
            sequence=result.sequence,
            events=len(result.events),
            reason=result.rejection.message if result.rejection else None,
        )

    async def _tick(self, part: Partition, record: ConsumerRecord[Any, Any], tick: Tick) -> None:
        # Sorted: the order of the released events must not depend on set iteration order, so
        # a replay of the same log writes the same records in the same order.
        written = 0
        for message_id in sorted(part.active):
            state = part.messages[message_id]
            try:
                planned = plan(state, tick)
            except Exception as error:
                # plan is pure: this message would fail at every tick. Take it out of the
                # ticks until the partition is rebuilt (a restart, a deploy of a fix), say so
                # once, and keep planning the partition's other messages.
                log.exception("message could not be planned", message_id=str(message_id))
                part.active.discard(message_id)
                await self._dead_letter(
                    part, record, RuntimeError(f"planning message {message_id}: {error!r}")
                )
                continue
            for event in planned:
                await self._send_event(part, event)
                state = part.fold(event)
                if isinstance(event, RecipientsReleased):
                    await self._send_releases(part, state, event)
                elif isinstance(event, SendingStarted):
                    await self._send_content(part, state, event)
            written += len(planned)
        log.debug(
            "tick planned",
            partition=part.number,
            tick_id=str(tick.tick_id),
            at=tick.at.isoformat(),
            active=len(part.active),
            events=written,
        )

    async def _copied(
        self, part: Partition, record: ConsumerRecord[Any, Any], item: CopiedEvent
    ) -> None:
        event = item.event
        state = part.messages.get(event.message_id)
        version = 0 if state is None else state.version
        if state is not None and part.copied_by.get(event.message_id) != item.copy_command_id:
            # The copy's new id names a message that another command created (the original's
            # processor could not see it: it lives here). The new message is not created.
            await self._dead_letter(
                part,
                record,
                MessageAlreadyExistsError(
                    f"copy {item.copy_command_id}: message {event.message_id} already exists"
                ),
            )
            return
        if event.sequence <= version:
            return  # appended before (a redelivery): event ids derive from (message, sequence)
        if event.sequence != version + 1:
            await self._dead_letter(
                part,
                record,
                ValueError(f"copied event {event.sequence} does not follow version {version}"),
            )
            return
        await self._send_event(part, event)
        part.fold(event)
        log.info(
            "copied event appended",
            message_id=str(event.message_id),
            sequence=event.sequence,
            event_type=event.type,
            copy_command_id=str(item.copy_command_id),
        )

    # ------------------------------------------------------------------ outputs

    async def _send_event(self, part: Partition, event: Event) -> None:
        # The input's partition number, explicitly: the message's events must be where this
        # partition's rebuild reads them, whatever partitioner an external producer used.
        part.written += 1
        await part.producer.send(
            self.topics.events,
            value=event.model_dump_json().encode(),
            key=key_of(event.message_id),
            partition=part.number,
            headers=[("type", event.type.encode())],
        )

    async def _send_result(
        self, part: Partition, result: CommandResult, integrator: str | None = None
    ) -> None:
        # A command an integrator sent through the intake relay is also answered on that
        # integrator's own answers topic (the relay made sure it exists), in this transaction.
        value = result.model_dump_json().encode()
        headers = [("command_id", str(result.command_id).encode())]
        topics = [self.topics.results]
        if integrator is not None:
            topics.append(self.topics.intake_results(integrator))
        for topic in topics:
            await part.producer.send(
                topic,
                value=value,
                key=key_of(result.message_id),
                partition=part.number,
                headers=headers,
            )

    async def _send_content(
        self, part: Partition, state: MessageState, event: SendingStarted
    ) -> None:
        # Before any send of the message, in the same partition: the delivery worker stores it
        # before it reads the sends that need it.
        record = MailContent(
            message_id=state.message_id,
            account_id=state.account_id,
            content=state.content,
            sequence=event.sequence,
        )
        await part.producer.send(
            self.topics.sends,
            value=record.model_dump_json().encode(),
            key=key_of(state.message_id),
            partition=part.number,
            headers=[("type", b"MailContent")],
        )

    async def _send_fence(self, part: Partition, event: Event, status: FenceStatus) -> None:
        # In the event's transaction, on a topic of its own: the delivery workers read it apart
        # from the sends, so a pause or cancel reaches them however far behind they are there.
        record = FenceRecord(message_id=event.message_id, status=status, sequence=event.sequence)
        part.written += 1
        await part.producer.send(
            self.topics.control,
            value=record.model_dump_json().encode(),
            key=key_of(event.message_id),
            partition=part.number,
        )

    async def _send_releases(
        self, part: Partition, state: MessageState, event: RecipientsReleased
    ) -> None:
        # One record per released contact, in the event's order, in the event's transaction:
        # the sends exist if and only if the release does. The hot path of a large message, so
        # the record is serialized directly (schemas.sends.send_record_json).
        message_id = event.message_id
        entries = state.book.entries
        send = part.producer.send
        topic = self.topics.sends
        key = key_of(message_id)
        number = part.number
        headers = [("type", b"Send")]
        part.written += len(event.contact_ids)
        values = send_records_json(
            message_id=message_id,
            account_id=state.account_id,
            released_at=event.occurred_at.isoformat(),
            release_sequence=event.sequence,
            sends=zip(
                send_ids(message_id, event.contact_ids),
                (entries[c].contact.model_dump_json() for c in event.contact_ids),
                strict=True,
            ),
        )
        for value in values:
            await send(topic, value=value, key=key, partition=number, headers=headers)

    async def _forward(self, part: Partition, command_id: UUID, event: Event) -> None:
        # In this partition's transaction: the copy's forwarded events exist if and only if the
        # original's MessageCopied does. The new message's partition appends them in order.
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
        letter = DeadLetter.of(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            error=error,
        )
        # Same partition number as the input: a reader of the dead letters finds a partition's
        # letters in input order.
        await part.producer.send(
            self.topics.dead_letter,
            value=letter.model_dump_json().encode(),
            key=record.key,
            partition=part.number,
        )
        # In the letter's transaction: the caller's answer exists if and only if the letter does.
        result = dead_letter_result(record.value, letter, error)
        # Not kept for dedupe (nothing was decided: a valid record with the same command id is
        # decided later), and not sent for a command id already decided, whose first result
        # stays its only answer.
        answered = result is not None and result.command_id not in part.results
        if result is not None and answered:
            await self._send_result(part, result, intake_principal(record))
        log.warning(
            "record sent to the dead-letter topic",
            partition=record.partition,
            offset=record.offset,
            error=letter.error[:500],
            answered=str(result.command_id) if answered and result is not None else None,
        )

    # ------------------------------------------------------------------ ownership

    async def _take(self, number: int, *, rewind: bool = False) -> None:
        """Own a partition: fence its previous owner and rebuild its state. With `rewind` (after
        an abort) also move the input back to the committed offset; on a new assignment the
        consumer starts there by itself, and a second seek would make it read records twice."""
        started = time.perf_counter()
        producer = AIOKafkaProducer(
            **client_options(self.settings),
            transactional_id=self.topics.transactional_id(number),
            max_request_size=self.settings.max_record_bytes,
        )
        try:
            # start() initialises the transactional id: the broker bumps its epoch, which
            # fences a zombie holding the same id and settles whatever transaction it left open
            # (InitProducerId answers only once that transaction is complete). Only then is the
            # log read: what the zombie committed is in it, what it did not is gone.
            await producer.start()
            init_s = time.perf_counter() - started
            part = Partition(number, producer)
            events, results = await self._rebuild(part)
        except BaseException:
            await _close(producer)
            raise
        tp = TopicPartition(self.topics.commands, number)
        consumer = self._consumer
        if rewind and consumer is not None:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        self.partitions[number] = part
        self.orphans.pop(number, None)
        if consumer is not None and tp in consumer.assignment():
            consumer.resume(tp)
        # The folded states live as long as the partition: keep the cyclic GC from walking
        # them at every collection (docs/core.md, measured figures).
        gc.collect()
        gc.freeze()
        self.clock.wake.set()
        log.info(
            "partition taken",
            partition=number,
            messages=len(part.messages),
            active=len(part.active),
            events=events,
            results=results,
            rewound=rewind,
            init_s=round(init_s, 3),
            take_s=round(time.perf_counter() - started, 3),
        )

    async def _try_take(self, number: int, *, rewind: bool) -> None:
        """Take a partition; when Kafka fails meanwhile, pause it and let the loop try again."""
        try:
            await self._take(number, rewind=rewind)
        except FENCED:
            log.warning("fenced while taking the partition", partition=number)
            self._pause(number)
        except Exception:
            log.exception("partition could not be taken; will retry", partition=number)
            self._pause(number)
            self.orphans[number] = time.monotonic() + 2.0

    async def _retake_orphans(self) -> None:
        if not self.orphans or self._consumer is None:
            return
        now = time.monotonic()
        async with self._lock:
            assigned = {tp.partition for tp in self._consumer.assignment()}
            for number, due in list(self.orphans.items()):
                if number not in assigned:
                    self.orphans.pop(number, None)  # revoked meanwhile: not ours to take
                elif due <= now and number not in self.partitions:
                    # Rewind: records may have been fetched and skipped while it was orphaned.
                    await self._try_take(number, rewind=True)

    def _pause(self, number: int) -> None:
        tp = TopicPartition(self.topics.commands, number)
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.pause(tp)

    async def _drop(self, number: int) -> None:
        part = self.partitions.pop(number, None)
        if part is not None:
            await _close(part.producer)
            # Let the dropped state be collected (it was frozen when the partition was taken).
            gc.unfreeze()
            log.info("partition dropped", partition=number)

    async def _rebuild(self, part: Partition) -> tuple[int, int]:
        """Fold the partition's committed events and results, from the beginning to the end."""
        events = results = 0
        async for record in read_range(self.settings, self.topics.events, part.number):
            part.fold(decode_event(record.value))
            events += 1
        async for record in read_range(self.settings, self.topics.results, part.number):
            result = CommandResult.model_validate_json(record.value)
            # A result re-sent for a retry equals the first one: keep the first. The answer to
            # a dead-lettered record decided nothing: not a result to repeat.
            if result.decided:
                part.results.setdefault(result.command_id, result)
            results += 1
        return events, results

    # ------------------------------------------------------------------ reporting

    def owned(self) -> list[int]:
        return sorted(self.partitions)

    def status(self) -> dict[str, Any]:
        """Owned partitions and their lag, from what the consumer already knows (no request)."""
        lag: dict[str, int | None] = {}
        consumer = self._consumer
        for number, part in sorted(self.partitions.items()):
            end = None
            if consumer is not None:
                end = consumer.last_stable_offset(TopicPartition(self.topics.commands, number))
            lag[str(number)] = (
                None if end is None or part.next_offset is None else max(0, end - part.next_offset)
            )
        return {
            "running": self.running,
            "partitions": self.owned(),
            "orphaned": sorted(self.orphans),
            "lag": lag,
            "decided": self.decided,
            "ticks_written": self.clock.written,
        }

    async def check(self) -> None:
        """The processor's health check: raises (with what is wrong) unless it consumes and
        owns every partition the group gave it."""
        if not self.running:
            raise RuntimeError("the processor is not consuming")
        if self.orphans:
            raise RuntimeError(f"partitions assigned but not taken: {sorted(self.orphans)}")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.processor._lock:
            for tp in revoked:
                self.processor.orphans.pop(tp.partition, None)
                await self.processor._drop(tp.partition)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # The partitions are taken concurrently: each take is mostly waiting for the broker
        # (producer init, reading the partition's history), so a restart resumes sooner.
        async with self.processor._lock:
            await asyncio.gather(
                *(
                    self.processor._try_take(tp.partition, rewind=False)
                    for tp in sorted(assigned, key=lambda tp: tp.partition)
                    if tp.partition not in self.processor.partitions
                )
            )


async def _close(producer: AIOKafkaProducer) -> None:
    # stop() flushes first, which never ends when the broker is gone; the producer is being
    # thrown away (its transaction is settled by the next owner's init either way).
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), CLOSE_DEADLINE_S)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # A transaction task left behind after its deadline ends later with an error nobody
    # awaits; read it so asyncio does not report it as never retrieved.
    if not task.cancelled():
        task.exception()
