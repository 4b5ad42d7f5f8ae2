"""The partition decider: everything the processor decides for one partition, with no Kafka.

`decide_record(state, record, rules)` takes one input record of the commands topic (a command,
a copied event or a clock tick, as a plain `Input`) and the partition's state, and returns a
`Decision`: the list of what to write, in order (events, results, fences, mail contents, send
records, forwards, dead letters). It folds what it decided into the state with the core
(`decide`, `evolve`, `plan`); it reads no clock and does no I/O. The processor
(services/dispatcher/processor.py) is the transaction driver that writes a decision; the API's
fake command bus (tests/commands/fakes.py) uses the same functions, so both answer alike.
docs/dispatcher.md, "The partition decider".
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import structlog
from pydantic import ValidationError

from core import (
    CommandNotAllowedError,
    Context,
    DomainError,
    InvalidCommandError,
    MessageAlreadyExistsError,
    MessageNotFoundError,
    MessageState,
    decide,
    evolve,
    plan,
)
from core.audience import chunk_report
from core.contacts import ContactStore, MemoryContacts, copy_context
from core.ids import send_ids
from core.state import ACTIVE_STATUSES
from schemas import CopyMessage, DraftCreated, Event, RecipientsReleased, SendingStarted, Tick
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

log = structlog.get_logger(__name__)

#: Statuses in which a tick can change a message (start, release, skip, finish): the core's.
ACTIVE = ACTIVE_STATUSES

#: The events that change a message's fence (docs/delivery.md, "The fence"), and its status then.
FENCES: dict[str, FenceStatus] = {
    "MessagePaused": "paused",
    "MessageResumed": "sending",
    "MessageCanceled": "canceled",
}

#: The header the intake relay puts on a command it forwards: the integrating principal, whose
#: answers topic also gets the command's result. Only service principals write the commands
#: topic, so the header is the relay's word, not a publisher's.
INTAKE_HEADER = "intake-principal"

#: Kafka's TimestampType ids, as a consumer record carries them.
TIMESTAMP_TYPES = {"CreateTime": 0, "LogAppendTime": 1}


class MisroutedRecordError(ValueError):
    """Raised when a command's key is not its message id, or hashes to another partition: it
    would give the message a second writer."""


class UndecidableError(Exception):
    """Raised when the core fails on a command with anything but a DomainError (a bug): the
    cause is the core's exception."""


class UntrustedTimeError(ValueError):
    """Raised when a command's record is not stamped the way the commands topic is set to
    stamp it (KAFKA_COMMANDS_TIMESTAMP_TYPE): its timestamp is a publisher's clock."""


# ---------------------------------------------------------------------- keys and partitions


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's `Utils.murmur2`), as an unsigned 32-bit int
    (as aiokafka's `partitioner.murmur2`; tested against it)."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    tail = length & ~3
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key` (murmur2, as the Java client)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


def key_of(message_id: UUID) -> bytes:
    return str(message_id).encode()


# ---------------------------------------------------------------------- the input


@dataclass(frozen=True)
class Input:
    """One record of the commands topic, as the decider needs it (no client type)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    timestamp_type: int = 0
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class Rules:
    """The settings a decision depends on."""

    partitions: int
    #: How the commands topic stamps its records ("LogAppendTime" in production).
    timestamp_type: str = "LogAppendTime"


def intake_principal(record: Input) -> str | None:
    for name, value in record.headers or ():
        if name == INTAKE_HEADER:
            return bytes(value).decode(errors="replace")
    return None


def decision_time(record: Input, expected: str) -> datetime:
    """The instant a command is decided at: its record's timestamp. On the service's commands
    topic the broker stamps it on append (LogAppendTime), so it is the service's clock and it is
    in the log. A record stamped otherwise carries a publisher's clock and is refused."""
    if record.timestamp_type != TIMESTAMP_TYPES[expected] or record.timestamp is None:
        raise UntrustedTimeError(
            f"the record's timestamp is not of type {expected} (topic config "
            "message.timestamp.type): a command is decided at the service's time only"
        )
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)


# ---------------------------------------------------------------------- results


def rejection(error: DomainError) -> Rejection:
    """A core error as the result record states it (HTTP mapping: services/commands)."""
    if isinstance(error, CommandNotAllowedError):
        return Rejection(
            code="not_allowed", message=str(error), status=error.status, allowed=error.allowed
        )
    if isinstance(error, InvalidCommandError):
        return Rejection(code="conflict", message=str(error), field=error.field)
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


# ---------------------------------------------------------------------- the state


class Results:
    """The result of every command decided in a partition, by command id, kept compressed.

    A repeat of a command id is answered with its first result, so every result is kept for
    the life of the partition; an audience chunk's result names each of its (up to 10,000)
    contacts, so at ten million recipients the results would weigh as much as the books. Each
    is kept as its JSON, zlib-compressed (a few bytes per contact named), and decoded only for
    a repeat (docs/scale.md).
    """

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[UUID, bytes] = {}

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._kept

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, command_id: UUID) -> CommandResult:
        return CommandResult.model_validate_json(zlib.decompress(self._kept[command_id]))

    def __setitem__(self, command_id: UUID, result: CommandResult) -> None:
        self._kept[command_id] = zlib.compress(result.model_dump_json().encode(), 1)

    def get(self, command_id: UUID) -> CommandResult | None:
        kept = self._kept.get(command_id)
        if kept is None:
            return None
        return CommandResult.model_validate_json(zlib.decompress(kept))

    def setdefault(self, command_id: UUID, result: CommandResult) -> None:
        if command_id not in self._kept:
            self[command_id] = result


@dataclass
class PartitionState:
    """What is known of one partition: a cache of its committed log."""

    number: int
    messages: dict[UUID, MessageState] = field(default_factory=dict)
    results: Results = field(default_factory=Results)
    # The messages a tick can change: a tick costs O(active), not O(messages of the partition).
    active: set[UUID] = field(default_factory=set)
    # New message id -> the copy command that created it, to tell a forwarded event that was
    # appended before from one that collides with another message's stream.
    copied_by: dict[UUID, UUID] = field(default_factory=dict)
    # The contacts' data, which the books do not hold (docs/scale.md): a store derived from the
    # folded events, read back for the send records of a release and the audience of a copy.
    # The port the shell supplies: the processor gives a local file (services/dispatcher/
    # contacts.py); in memory by default (the API's fake command bus, tests).
    contacts: ContactStore = field(default_factory=MemoryContacts)
    # Events folded so far (the processor snapshots once enough were folded since the last).
    folded: int = 0

    def fold(self, event: Event) -> MessageState:
        # evolve consumes the previous state (it mutates the book in place): only the returned
        # state is kept, and a failed transaction drops the whole partition (the processor).
        state = evolve(self.messages.get(event.message_id), event)
        self.contacts.observe(event, state)
        self.folded += 1
        self.messages[event.message_id] = state
        if state.status in ACTIVE:
            self.active.add(event.message_id)
        else:
            self.active.discard(event.message_id)
        if isinstance(event, DraftCreated) and event.copied_from is not None:
            self.copied_by[event.message_id] = event.causation_id
        return state

    def remember(self, result: CommandResult) -> None:
        """A result read back from the log on a rebuild. A result re-sent for a retry equals the
        first one: keep the first. The answer to a dead-lettered record decided nothing."""
        if result.decided:
            self.results.setdefault(result.command_id, result)


# ---------------------------------------------------------------------- what to write


@dataclass(frozen=True)
class WriteEvent:
    """An event of the partition's own message, to `<prefix>.events` (this partition)."""

    event: Event


@dataclass(frozen=True)
class WriteResult:
    """A command's result, to `<prefix>.command-results` and, for an integrator's command sent
    through the intake relay, to that integrator's answers topic."""

    result: CommandResult
    integrator: str | None


@dataclass(frozen=True)
class WriteFence:
    """A message's fence (pause, resume, cancel), to `<prefix>.control`."""

    fence: FenceRecord


@dataclass(frozen=True)
class WriteContent:
    """A message's mail content, to `<prefix>.sends` before any of its send records."""

    content: MailContent


@dataclass(frozen=True)
class WriteSends:
    """The send records of one release (serialized), to `<prefix>.sends`."""

    message_id: UUID
    values: list[bytes]


@dataclass(frozen=True)
class WriteForward:
    """An event of a copy's new message, to the commands topic at that message's partition."""

    copied: CopiedEvent
    partition: int


@dataclass(frozen=True)
class WriteDeadLetter:
    """A record set aside, to `<prefix>.dead-letter` (this partition), under its own key."""

    letter: DeadLetter
    key: bytes | None


Write = (
    WriteEvent
    | WriteResult
    | WriteFence
    | WriteContent
    | WriteSends
    | WriteForward
    | WriteDeadLetter
)


@dataclass
class Decision:
    """What one input record decided: the records to write, in order."""

    writes: list[Write] = field(default_factory=list)
    #: A command was decided (not a repeat, not dead-lettered).
    decided: bool = False

    def output_count(self) -> int:
        """The records that count toward a transaction's size (events, fences, sends)."""
        count = 0
        for write in self.writes:
            if isinstance(write, WriteEvent | WriteFence):
                count += 1
            elif isinstance(write, WriteSends):
                count += len(write.values)
        return count


# ---------------------------------------------------------------------- deciding


def decide_record(state: PartitionState, record: Input, rules: Rules) -> Decision:
    """Decide one input record of the partition, folding what it decided into `state`."""
    out = Decision()
    try:
        item = decode_input(record.value or b"")
        if isinstance(item, Tick):
            _tick(state, record, item, out)
            return out
        check_route(state.number, record, item, rules.partitions)
    except (ValidationError, ValueError) as error:
        _dead_letter(state, record, error, out)
        return out
    if isinstance(item, CopiedEvent):
        _copied(state, record, item, out)
    else:
        # Bound once for the unit of work: every line of this command carries its ids (the
        # processor binds the partition and offset around the whole record).
        with structlog.contextvars.bound_contextvars(**_ids(item)):
            _command(state, record, item, rules, out)
    return out


def check_route(
    number: int, record: Input, item: CommandRecord | CopiedEvent, partitions: int
) -> None:
    message_id = (
        item.command.message_id if isinstance(item, CommandRecord) else item.event.message_id
    )
    if record.key != key_of(message_id):
        raise MisroutedRecordError(f"the record's key must be its message id {message_id}")
    if partition_of(record.key, partitions) != number:
        raise MisroutedRecordError(
            f"message {message_id} belongs to partition "
            f"{partition_of(record.key, partitions)}, not {number}"
        )


def decide_command(
    state: PartitionState, item: CommandRecord, now: datetime, integrator: str | None = None
) -> Decision:
    """Decide one command at `now` (a repeat of a decided command id gets its first result)."""
    out = Decision()
    command = item.command
    first = state.results.get(command.command_id)
    if first is not None:
        # A retry (the caller did not see the first answer): the same answer, nothing decided.
        out.writes.append(WriteResult(first, integrator))
        log.info("command repeated", **_ids(item), outcome=first.outcome)
        return out
    ctx = Context(
        # The log's instant, never the publisher's issued_at.
        now=now,
        actor=item.actor,
        default_time_zone=item.default_time_zone,
        correlation_id=item.correlation_id,
    )
    if isinstance(command, CopyMessage):
        # The book holds no contact data: the copy's audience is read back from the store.
        ctx = copy_context(ctx, state.messages.get(command.message_id), state.contacts)
    try:
        events = decide(command, state.messages.get(command.message_id), ctx)
    except DomainError as error:
        result = result_for(item, state.messages.get(command.message_id), error)
    except Exception as error:
        raise UndecidableError(f"command {command.command_id} could not be decided") from error
    else:
        for event in events:
            if event.message_id == command.message_id:
                out.writes.append(WriteEvent(event))
                state.fold(event)
                fence = FENCES.get(event.type)
                if fence is not None:
                    out.writes.append(
                        WriteFence(
                            FenceRecord(
                                message_id=event.message_id, status=fence, sequence=event.sequence
                            )
                        )
                    )
        for event in events:
            if event.message_id != command.message_id:
                # The new message of a copy has its own writer: its partition's processor.
                out.writes.append(
                    WriteForward(CopiedEvent(copy_command_id=command.command_id, event=event), -1)
                )
        result = result_for(item, state.messages.get(command.message_id), events)
    state.results[command.command_id] = result
    out.writes.append(WriteResult(result, integrator))
    out.decided = True
    log.info(
        "command decided",
        **_ids(item),
        outcome=result.outcome,
        status=result.status,
        sequence=result.sequence,
        events=len(result.events),
        reason=result.rejection.message if result.rejection else None,
    )
    return out


def _command(
    state: PartitionState, record: Input, item: CommandRecord, rules: Rules, out: Decision
) -> None:
    integrator = intake_principal(record)
    first = state.results.get(item.command.command_id)
    if first is not None:
        # A repeat is answered with its first result before its time is looked at.
        out.writes.append(WriteResult(first, integrator))
        log.info("command repeated", outcome=first.outcome)
        return
    try:
        now = decision_time(record, rules.timestamp_type)
    except UntrustedTimeError as error:
        _dead_letter(state, record, error, out)
        return
    try:
        decided = decide_command(state, item, now, integrator)
    except UndecidableError as error:
        # decide is pure and only reads the state: the same record would fail the same way
        # on every retry and block the partition. Set it aside; nothing was written for it.
        log.error("command could not be decided", exc_info=error.__cause__)
        cause = error.__cause__
        _dead_letter(state, record, cause if isinstance(cause, Exception) else error, out)
        return
    for write in decided.writes:
        if isinstance(write, WriteForward):
            key = key_of(write.copied.event.message_id)
            write = WriteForward(write.copied, partition_of(key, rules.partitions))
        out.writes.append(write)
    out.decided = decided.decided


def _ids(item: CommandRecord) -> dict[str, str]:
    command = item.command
    return {
        "message_id": str(command.message_id),
        "command_id": str(command.command_id),
        "command_type": command.type,
    }


def _tick(state: PartitionState, record: Input, tick: Tick, out: Decision) -> None:
    # Sorted: the order of the released events must not depend on set iteration order, so
    # a replay of the same log writes the same records in the same order.
    written = 0
    for message_id in sorted(state.active):
        message = state.messages[message_id]
        try:
            planned = plan(message, tick)
        except Exception as error:
            # plan is pure: this message would fail at every tick. Take it out of the
            # ticks until the partition is rebuilt (a restart, a deploy of a fix), say so
            # once, and keep planning the partition's other messages.
            log.exception("message could not be planned", message_id=str(message_id))
            state.active.discard(message_id)
            _dead_letter(
                state, record, RuntimeError(f"planning message {message_id}: {error!r}"), out
            )
            continue
        for event in planned:
            out.writes.append(WriteEvent(event))
            message = state.fold(event)
            if isinstance(event, RecipientsReleased):
                out.writes.append(
                    WriteSends(message_id, release_records(message, event, state.contacts))
                )
            elif isinstance(event, SendingStarted):
                out.writes.append(
                    WriteContent(
                        MailContent(
                            message_id=message.message_id,
                            account_id=message.account_id,
                            content=message.content,
                            sequence=event.sequence,
                        )
                    )
                )
        written += len(planned)
    log.debug(
        "tick planned",
        tick_id=str(tick.tick_id),
        at=tick.at.isoformat(),
        active=len(state.active),
        events=written,
    )


def release_records(
    message: MessageState, event: RecipientsReleased, contacts: ContactStore
) -> list[bytes]:
    """One send record per released contact, in the event's order, with the contact's data read
    back from the store. The hot path of a large message, so the record is serialized directly
    (schemas.sends.send_records_json)."""
    data = contacts.read_json(event.message_id, message.book, event.contact_ids)
    return list(
        send_records_json(
            message_id=event.message_id,
            account_id=message.account_id,
            released_at=event.occurred_at.isoformat(),
            release_sequence=event.sequence,
            sends=zip(
                send_ids(event.message_id, event.contact_ids),
                data,
                strict=True,
            ),
        )
    )


def _copied(state: PartitionState, record: Input, item: CopiedEvent, out: Decision) -> None:
    event = item.event
    message = state.messages.get(event.message_id)
    version = 0 if message is None else message.version
    if message is not None and state.copied_by.get(event.message_id) != item.copy_command_id:
        # The copy's new id names a message that another command created (the original's
        # processor could not see it: it lives here). The new message is not created.
        _dead_letter(
            state,
            record,
            MessageAlreadyExistsError(
                f"copy {item.copy_command_id}: message {event.message_id} already exists"
            ),
            out,
        )
        return
    if event.sequence <= version:
        return  # appended before (a redelivery): event ids derive from (message, sequence)
    if event.sequence != version + 1:
        _dead_letter(
            state,
            record,
            ValueError(f"copied event {event.sequence} does not follow version {version}"),
            out,
        )
        return
    out.writes.append(WriteEvent(event))
    state.fold(event)
    log.info(
        "copied event appended",
        message_id=str(event.message_id),
        sequence=event.sequence,
        event_type=event.type,
        copy_command_id=str(item.copy_command_id),
    )


def _dead_letter(state: PartitionState, record: Input, error: Exception, out: Decision) -> None:
    letter = DeadLetter.of(record, error)
    out.writes.append(WriteDeadLetter(letter, record.key))
    # In the letter's transaction: the caller's answer exists if and only if the letter does.
    result = dead_letter_result(record.value, letter, error)
    # Not kept for dedupe (nothing was decided: a valid record with the same command id is
    # decided later), and not sent for a command id already decided, whose first result
    # stays its only answer.
    answered = result is not None and result.command_id not in state.results
    if result is not None and answered:
        out.writes.append(WriteResult(result, intake_principal(record)))
    log.warning(
        "record sent to the dead-letter topic",
        partition=record.partition,
        offset=record.offset,
        error=letter.error[:500],
        answered=str(result.command_id) if answered and result is not None else None,
    )
