"""The partition decider (services/dispatcher/decider.py) without Kafka: one input record and
the partition's state in, the records to write out."""

from __future__ import annotations

import ast
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import structlog
import structlog.testing
from aiokafka.partitioner import murmur2 as kafka_murmur2

from schemas import (
    Actor,
    AddRecipients,
    Contact,
    Content,
    CopyMessage,
    CreateDraft,
    PauseMessage,
    ScheduleMessage,
    Tick,
)
from schemas.sends import SendRecord
from schemas.wire import CommandRecord, CopiedEvent
from services.dispatcher.decider import (
    Input,
    PartitionState,
    Rules,
    WriteContent,
    WriteDeadLetter,
    WriteEvent,
    WriteFence,
    WriteForward,
    WriteResult,
    WriteSends,
    decide_record,
    key_of,
    murmur2,
    partition_of,
)

OPERATOR = Actor(kind="user", account_id="acct-a", user_id="ada")
CONTENT = Content(name="News", from_address="news@example.org", subject="Hi", body="Hello")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RULES = Rules(partitions=1)
offsets = iter(range(10**9))


def command_input(command: object, at: datetime = T0, *, stamp: str = "LogAppendTime") -> Input:
    item = CommandRecord(command=command, actor=OPERATOR, issued_at=at)  # type: ignore[arg-type]
    return Input(
        topic="t.commands",
        partition=0,
        offset=next(offsets),
        key=key_of(item.command.message_id),
        value=item.model_dump_json().encode(),
        timestamp=int(at.timestamp() * 1000),
        timestamp_type={"CreateTime": 0, "LogAppendTime": 1}[stamp],
    )


def tick_input(at: datetime) -> Input:
    tick = Tick(tick_id=uuid.uuid4(), at=at)
    return Input("t.commands", 0, next(offsets), None, tick.model_dump_json().encode())


def draft(state: PartitionState, message: UUID) -> None:
    decide_record(
        state,
        command_input(CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)),
        RULES,
    )


def test_the_decider_imports_no_kafka_client() -> None:
    tree = ast.parse(Path(sys.modules["services.dispatcher.decider"].__file__ or "").read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported and not imported & {"aiokafka", "asyncpg", "aiosmtplib", "services"}


def test_murmur2_is_kafkas() -> None:
    for key in (b"", b"a", b"ab", b"abc", b"abcd", str(uuid.uuid4()).encode()):
        assert murmur2(key) == kafka_murmur2(key)


def test_a_command_becomes_its_events_and_an_accepted_result() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    command = CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)

    decision = decide_record(state, command_input(command), RULES)

    assert [type(w) for w in decision.writes] == [WriteEvent, WriteResult]
    assert decision.decided and decision.output_count() == 1
    result = decision.writes[1]
    assert isinstance(result, WriteResult)
    assert result.result.outcome == "accepted" and result.result.sequence == 1
    assert state.messages[message].version == 1
    assert state.results[command.command_id] == result.result


def test_a_repeated_command_gets_its_first_result_and_decides_nothing() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    command = CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)
    first = decide_record(state, command_input(command), RULES)

    again = decide_record(state, command_input(command, T0 + timedelta(seconds=1)), RULES)

    assert again.writes == [first.writes[-1]] and not again.decided
    assert state.messages[message].version == 1


def test_a_rejection_is_a_result_without_events() -> None:
    state = PartitionState(0)
    pause = PauseMessage(command_id=uuid.uuid4(), message_id=uuid.uuid4())

    decision = decide_record(state, command_input(pause), RULES)

    [write] = decision.writes
    assert isinstance(write, WriteResult)
    assert write.result.outcome == "rejected" and write.result.rejection is not None
    assert write.result.rejection.code == "not_found"


def test_a_publishers_clock_and_an_undecodable_record_are_dead_lettered() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    command = CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)

    stamped = decide_record(state, command_input(command, stamp="CreateTime"), RULES)
    garbage = decide_record(state, Input("t.commands", 0, 7, b"k", b"not json"), RULES)

    assert [type(w) for w in stamped.writes] == [WriteDeadLetter, WriteResult]
    assert "UntrustedTimeError" in stamped.writes[0].letter.error  # type: ignore[union-attr]
    assert [type(w) for w in garbage.writes] == [WriteDeadLetter]
    assert message not in state.messages


def test_a_misrouted_command_is_dead_lettered() -> None:
    state = PartitionState(0)
    # A message id whose key hashes to partition 1 of 2, read by partition 0.
    message = next(m for m in iter(uuid.uuid4, None) if partition_of(key_of(m), 2) == 1)
    command = CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)

    decision = decide_record(state, command_input(command), Rules(partitions=2))

    assert isinstance(decision.writes[0], WriteDeadLetter)
    assert "MisroutedRecordError" in decision.writes[0].letter.error


def test_a_pause_writes_its_fence_after_its_event() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    draft(state, message)
    contacts = (Contact(contact_id="c1", email="c1@example.org"),)
    for command in (
        AddRecipients(command_id=uuid.uuid4(), message_id=message, contacts=contacts),
        ScheduleMessage(command_id=uuid.uuid4(), message_id=message, send_now=True),
    ):
        decide_record(state, command_input(command), RULES)
    decide_record(state, tick_input(T0 + timedelta(seconds=1)), RULES)  # sending now

    decision = decide_record(
        state, command_input(PauseMessage(command_id=uuid.uuid4(), message_id=message)), RULES
    )

    assert [type(w) for w in decision.writes] == [WriteEvent, WriteFence, WriteResult]
    fence = decision.writes[1]
    assert isinstance(fence, WriteFence) and fence.fence.status == "paused"


def test_a_tick_releases_the_send_records_after_the_mail_content() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    draft(state, message)
    contacts = tuple(Contact(contact_id=f"c{i}", email=f"c{i}@example.org") for i in range(3))
    for command in (
        AddRecipients(command_id=uuid.uuid4(), message_id=message, contacts=contacts),
        ScheduleMessage(command_id=uuid.uuid4(), message_id=message, send_now=True),
    ):
        decide_record(state, command_input(command), RULES)

    decision = decide_record(state, tick_input(T0 + timedelta(seconds=1)), RULES)

    kinds = [type(w) for w in decision.writes]
    assert WriteContent in kinds and WriteSends in kinds
    assert kinds.index(WriteContent) < kinds.index(WriteSends)
    sends = [w for w in decision.writes if isinstance(w, WriteSends)]
    released = [SendRecord.model_validate_json(v) for w in sends for v in w.values]
    assert sorted(r.contact.contact_id for r in released) == ["c0", "c1", "c2"]
    events = sum(isinstance(w, WriteEvent) for w in decision.writes)
    assert decision.output_count() == events + len(released)
    assert not decision.decided


def test_a_copy_forwards_the_new_messages_events_to_its_partition() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    draft(state, message)
    new = uuid.uuid4()
    copy = CopyMessage(command_id=uuid.uuid4(), message_id=message, new_message_id=new)

    decision = decide_record(state, command_input(copy), Rules(partitions=1))

    forwards = [w for w in decision.writes if isinstance(w, WriteForward)]
    assert forwards and all(w.copied.event.message_id == new for w in forwards)
    assert all(w.partition == partition_of(key_of(new), 1) for w in forwards)
    assert new not in state.messages  # the new message's own partition appends them


def test_a_forwarded_event_is_appended_once() -> None:
    source, message = PartitionState(0), uuid.uuid4()
    draft(source, message)
    new = uuid.uuid4()
    copy = CopyMessage(command_id=uuid.uuid4(), message_id=message, new_message_id=new)
    forwards = [
        w.copied
        for w in decide_record(source, command_input(copy), RULES).writes
        if isinstance(w, WriteForward)
    ]
    target = PartitionState(0)

    def deliver(copied: CopiedEvent) -> list[object]:
        value = copied.model_dump_json().encode()
        item = Input("t.commands", 0, next(offsets), key_of(new), value)
        return list(decide_record(target, item, RULES).writes)

    first = [deliver(c) for c in forwards]
    again = [deliver(c) for c in forwards]

    assert all(len(w) == 1 and isinstance(w[0], WriteEvent) for w in first)
    assert again == [[] for _ in forwards]
    assert target.messages[new].version == len(forwards)


def test_every_line_of_a_command_carries_its_ids_bound_once() -> None:
    state, message = PartitionState(0), uuid.uuid4()
    command = CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)
    decide_record(state, command_input(command), RULES)

    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as lines:
        decide_record(state, command_input(command), RULES)  # a repeat

    [line] = [entry for entry in lines if entry["event"] == "command repeated"]
    assert line["command_id"] == str(command.command_id)
    assert line["message_id"] == str(message)
    assert structlog.contextvars.get_contextvars() == {}  # unbound after the unit of work
