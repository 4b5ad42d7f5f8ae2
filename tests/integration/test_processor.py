"""The processor against the real Kafka: commands published on the command topic become their
events and a result, exactly once, one writer per message, through crashes and retries."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

from bench.harness.processor import (
    CONTENT,
    STRANGER,
    Stack,
    assert_one_history,
    by_message,
    contacts,
    ids,
    record,
)
from core import fold
from schemas import (
    AddRecipients,
    CancelMessage,
    CopyMessage,
    CreateDraft,
    Event,
    PauseMessage,
    RecipientsReleased,
    RecordDeliveryOutcomes,
    ResumeMessage,
    ScheduleMessage,
    SendingStarted,
)
from schemas.wire import CommandResult


def create(message: UUID) -> CreateDraft:
    return CreateDraft(command_id=ids(), message_id=message, content=CONTENT)


async def started_sending(stack: Stack, message: UUID, recipients: int = 3) -> None:
    await stack.decide(
        record(create(message)),
        record(AddRecipients(command_id=ids(), message_id=message, contacts=contacts(recipients))),
        record(ScheduleMessage(command_id=ids(), message_id=message, send_now=True)),
    )

    async def sending() -> bool:
        return any(isinstance(e, SendingStarted) for e in await stack.events_of(message))

    await stack.wait_for("the message to start sending on a tick", sending)


async def test_a_command_becomes_its_events_and_an_accepted_result(stack: Stack) -> None:
    stack.spawn()
    message = ids()
    command = create(message)

    [result] = await stack.decide(record(command))

    events = await stack.events_of(message)
    assert result.outcome == "accepted"
    assert result.status == "draft" and result.sequence == 1
    assert [e.type for e in events] == ["DraftCreated"]
    assert [(r.type, r.sequence, r.event_id) for r in result.events] == [
        ("DraftCreated", 1, events[0].event_id)
    ]
    assert events[0].causation_id == command.command_id


async def test_ticks_start_a_scheduled_message_and_release_its_recipients(stack: Stack) -> None:
    stack.spawn()
    message = ids()

    await started_sending(stack, message, recipients=5)

    async def all_released() -> list[Event] | None:
        events = await stack.events_of(message)
        released = [c for e in events if isinstance(e, RecipientsReleased) for c in e.contact_ids]
        return events if sorted(released) == sorted(f"c{i}" for i in range(5)) else None

    events = await stack.wait_for("every recipient released", all_released)
    assert_one_history(events)


async def test_rejections_name_their_reason(stack: Stack) -> None:
    stack.spawn()
    message = ids()
    unknown = PauseMessage(command_id=ids(), message_id=ids())
    theirs = PauseMessage(command_id=ids(), message_id=message)
    not_now = PauseMessage(command_id=ids(), message_id=message)
    past = ScheduleMessage(
        command_id=ids(), message_id=message, send_at=datetime.now(UTC) - timedelta(days=1)
    )

    results = await stack.decide(
        record(create(message)),
        record(unknown),
        record(theirs, actor=STRANGER),
        record(not_now),
        record(past),
    )

    _, r_unknown, r_theirs, r_not_now, r_past = results
    assert r_unknown.rejection is not None and r_unknown.rejection.code == "not_found"
    # Another account's message is as unknown as a message that does not exist.
    assert r_theirs.rejection is not None and r_theirs.rejection.code == "not_found"
    assert r_theirs.status is None and r_theirs.sequence == 0
    assert r_not_now.rejection is not None and r_not_now.rejection.code == "not_allowed"
    assert r_not_now.rejection.status == "draft"
    assert r_not_now.rejection.allowed and "ScheduleMessage" in r_not_now.rejection.allowed
    assert r_past.rejection is not None and r_past.rejection.code == "conflict"
    assert r_past.rejection.field == "send_at"
    assert [e.type for e in await stack.events_of(message)] == ["DraftCreated"]


async def test_a_repeated_command_id_gets_the_first_result_and_writes_nothing(stack: Stack) -> None:
    stack.spawn()
    message = ids()
    command = create(message)
    [first] = await stack.decide(record(command))

    await stack.publish(record(command))

    async def two_results() -> bool:
        return len((await stack.results()).get(command.command_id, [])) == 2

    await stack.wait_for("the repeated command's result", two_results)
    again = (await stack.results())[command.command_id]
    assert again == [first, first]
    assert len(await stack.events_of(message)) == 1


async def test_a_bad_record_goes_to_the_dead_letter_topic_and_the_next_one_is_processed(
    stack: Stack,
) -> None:
    stack.spawn()
    message = ids()
    key = str(message).encode()
    await stack.publish_raw(key, b"{not json")
    await stack.publish_raw(key, b'{"type": "Mystery", "schema_version": 1}')
    good = record(create(message))
    # An unknown field: rejected whole, nothing half-applied.
    sloppy = good.model_dump(mode="json")
    sloppy["command"]["colour"] = "red"
    await stack.publish_raw(key, __import__("json").dumps(sloppy).encode())

    await stack.publish(good)

    async def two_results() -> list[CommandResult] | None:
        found = (await stack.results()).get(good.command.command_id, [])
        return found if len(found) >= 2 else None

    answer, result = await stack.wait_for("both answers", two_results)
    letters = await stack.wait_for("three dead letters", lambda: _at_least(stack.dead_letters, 3))
    assert result.outcome == "accepted" and result.decided
    # The sloppy record's ids could be read: its caller is answered, rejected with the reason,
    # and since nothing was decided the same command id, valid this time, is decided.
    assert answer.outcome == "rejected" and not answer.decided
    assert answer.rejection is not None and answer.rejection.code == "invalid"
    assert "colour" in answer.rejection.message
    assert answer.message_id == message and answer.command_type == "CreateDraft"
    assert [letter.value for letter in letters][:2] == [
        "{not json",
        '{"type": "Mystery", "schema_version": 1}',
    ]
    assert all(letter.error and letter.topic == stack.topics.commands for letter in letters)
    assert "colour" in letters[2].error
    # Records whose ids cannot be read answer nobody.
    assert set(await stack.results()) == {good.command.command_id}


async def test_a_command_under_another_key_is_refused_as_misrouted(stack: Stack) -> None:
    stack.spawn()
    command = create(ids())
    await stack.publish_raw(b"some-other-key", record(command).model_dump_json().encode())

    [letter] = await stack.wait_for("a dead letter", lambda: _at_least(stack.dead_letters, 1))

    assert "MisroutedRecordError" in letter.error
    # Its caller is answered: rejected, with the reason; no event.
    answer = await stack.result_of(command.command_id)
    assert answer.outcome == "rejected" and not answer.decided
    assert answer.rejection is not None and "MisroutedRecordError" in answer.rejection.message
    assert await stack.events_of(command.message_id) == []


async def test_a_copy_excluding_delivered_contacts_creates_the_new_message_in_its_own_stream(
    stack: Stack,
) -> None:
    stack.spawn()
    original, copy = ids(), ids()
    await started_sending(stack, original, recipients=4)

    async def released() -> list[str] | None:
        got = [
            c
            for e in await stack.events_of(original)
            if isinstance(e, RecipientsReleased)
            for c in e.contact_ids
        ]
        return got if len(got) == 4 else None

    await stack.wait_for("the release", released)
    outcomes = RecordDeliveryOutcomes(command_id=ids(), message_id=original, delivered=("c0", "c1"))
    [delivered] = await stack.decide(record(outcomes))
    [copied] = await stack.decide(
        record(
            CopyMessage(
                command_id=ids(), message_id=original, new_message_id=copy, exclude_delivered=True
            )
        )
    )

    async def copy_created() -> list[Event] | None:
        events = await stack.events_of(copy)
        expected = [r for r in copied.events if r.message_id == copy]
        return events if len(events) == len(expected) and events else None

    events = await stack.wait_for("the copy's events", copy_created)
    assert delivered.outcome == "accepted" and copied.outcome == "accepted"
    assert_one_history(events)
    state = fold(events)
    assert state is not None and state.status.value == "draft"
    excluded = {c for e in events if e.type == "RecipientsExcluded" for c in e.contact_ids}  # type: ignore[attr-defined]
    assert {"c0", "c1"} <= excluded


async def test_sigkill_mid_stream_then_retrying_everything_leaves_one_history_per_message(
    stack: Stack,
) -> None:
    first = stack.spawn()
    messages = [ids() for _ in range(20)]
    commands = [record(create(m)) for m in messages]
    for round_ in range(24):  # 20 creates + 480 additions: 500 commands
        for m in messages:
            batch = contacts(5, prefix=f"r{round_}-")
            commands.append(record(AddRecipients(command_id=ids(), message_id=m, contacts=batch)))
    await stack.publish(*commands)

    async def some_decided() -> bool:
        return len(await stack.results()) >= 40

    await stack.wait_for("part of the stream decided", some_decided)
    stack.kill(first)
    decided_at_kill = len(await stack.results())
    stack.spawn()
    # The callers did not all see their answers: they retry every command.
    await stack.publish(*commands)

    async def all_decided() -> bool:
        return len(await stack.results()) == len(commands)

    await stack.wait_for("every command decided", all_decided, within=120)
    assert decided_at_kill < len(commands), "the kill came after the end: make the stream longer"
    results = await stack.results()
    for command in commands:
        answers = results[command.command.command_id]
        assert {a.outcome for a in answers} == {"accepted"}
        assert len(set(answers)) == 1, "a retried command got another answer"
    grouped = by_message(await stack.events())
    assert set(grouped) == set(messages)
    for events in grouped.values():
        assert_one_history(events)
        assert len(events) == 25  # one draft, 24 additions: each command once


async def test_two_processors_share_the_partitions_and_each_command_is_decided_once(
    stack: Stack,
) -> None:
    stack.spawn("one")
    messages = [ids() for _ in range(12)]
    commands = [record(create(m)) for m in messages]
    await stack.decide(*commands[:3])
    stack.spawn("two")  # joins the group: a rebalance while commands flow
    for round_ in range(10):
        for m in messages:
            batch = contacts(3, prefix=f"r{round_}-")
            commands.append(record(AddRecipients(command_id=ids(), message_id=m, contacts=batch)))
    await stack.publish(*commands)

    async def all_decided() -> bool:
        return len(await stack.results()) == len(commands)

    await stack.wait_for("every command decided", all_decided, within=120)
    results = await stack.results()
    assert all(len(set(results[c.command.command_id])) == 1 for c in commands)
    grouped = by_message(await stack.events())
    for m in messages:
        assert_one_history(grouped[m])
        assert len(grouped[m]) == 11


async def test_fifty_racing_pause_resume_cancel_commands_form_a_valid_history(
    stack: Stack,
) -> None:
    stack.spawn()
    message = ids()
    await started_sending(stack, message, recipients=3)
    kinds = [PauseMessage, ResumeMessage, CancelMessage]
    rng = random.Random(7)
    racing = [record(rng.choice(kinds)(command_id=ids(), message_id=message)) for _ in range(50)]
    # Published concurrently, as fifty callers would.
    await asyncio.gather(*(stack.publish(r) for r in racing))

    async def all_decided() -> bool:
        results = await stack.results()
        return all(r.command.command_id in results for r in racing)

    await stack.wait_for("every racing command decided", all_decided)
    results = await stack.results()
    events = await stack.events_of(message)
    assert_one_history(events)
    outcomes = Counter(results[r.command.command_id][0].outcome for r in racing)
    assert outcomes["accepted"] >= 1
    lifecycle = [
        e.type for e in events if e.type in {"MessagePaused", "MessageResumed", "MessageCanceled"}
    ]
    # Pauses and resumes alternate, starting with a pause; at most one cancel, and it is last.
    assert lifecycle.count("MessageCanceled") <= 1
    if "MessageCanceled" in lifecycle:
        assert lifecycle[-1] == "MessageCanceled"
    toggles = [t for t in lifecycle if t != "MessageCanceled"]
    assert toggles == ["MessagePaused", "MessageResumed"] * (len(toggles) // 2) + (
        ["MessagePaused"] if len(toggles) % 2 else []
    )
    accepted_lifecycle = sum(
        1
        for r in racing
        if results[r.command.command_id][0].outcome == "accepted"
        and results[r.command.command_id][0].events
    )
    assert accepted_lifecycle == len(lifecycle)
    # In the order they were decided (the results partition's order): every answer states the
    # status the command left, and after the cancel nothing changes any more.
    racing_ids = {r.command.command_id for r in racing}
    decided = [results[c][0] for c in results if c in racing_ids]
    assert len(decided) == len(racing)
    canceled = False
    for answer in decided:
        if canceled:
            assert answer.events == () and answer.status == "canceled", answer
            if answer.command_type != "CancelMessage":
                assert answer.rejection is not None and answer.rejection.code == "not_allowed"
        elif answer.events:
            expected = {
                "PauseMessage": "paused",
                "ResumeMessage": "sending",
                "CancelMessage": "canceled",
            }[answer.command_type]
            assert answer.status == expected, answer
        canceled = canceled or answer.status == "canceled"


async def _at_least(read, n: int):  # type: ignore[no-untyped-def]
    found = await read()
    return found if len(found) >= n else None
