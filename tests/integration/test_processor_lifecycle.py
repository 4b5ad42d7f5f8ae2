"""The processor against the real Kafka, part two: every command through the topic, the health
report, a copy into a taken id, a restart that rebuilds, and a zombie fenced by a new owner."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness.processor import (
    CONTENT,
    Stack,
    assert_one_history,
    by_message,
    contacts,
    free_port,
    ids,
    record,
)
from bench.harness.spawn import health, owned_partitions
from core import fold
from schemas import (
    AddRecipients,
    CancelMessage,
    CopyMessage,
    CreateDraft,
    EditDraft,
    Event,
    FailedRecipient,
    PauseMessage,
    RecordDeliveryOutcomes,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    UnscheduleMessage,
)
from schemas.base import CommandBase


async def test_every_command_through_the_topic_writes_its_events_and_an_accepted_result(
    stack: Stack,
) -> None:
    stack.spawn()
    m, copy = ids(), ids()
    later = datetime.now(UTC) + timedelta(hours=1)
    steps: list[tuple[CommandBase, list[str], str]] = [
        (CreateDraft(command_id=ids(), message_id=m, content=CONTENT), ["DraftCreated"], "draft"),
        (
            EditDraft(
                command_id=ids(), message_id=m, content=CONTENT.model_copy(update={"subject": "Yo"})
            ),
            ["DraftEdited"],
            "draft",
        ),
        (
            AddRecipients(command_id=ids(), message_id=m, contacts=contacts(4)),
            ["RecipientsAdded"],
            "draft",
        ),
        (
            RemoveRecipients(command_id=ids(), message_id=m, contact_ids=("c3",)),
            ["RecipientsRemoved"],
            "draft",
        ),
        (
            ScheduleMessage(command_id=ids(), message_id=m, send_at=later),
            ["MessageScheduled"],
            "scheduled",
        ),
        (UnscheduleMessage(command_id=ids(), message_id=m), ["MessageUnscheduled"], "draft"),
    ]
    for command, types, status in steps:
        [result] = await stack.decide(record(command))  # type: ignore[arg-type]
        assert result.outcome == "accepted", result
        assert [r.type for r in result.events] == types
        assert result.status == status

    [scheduled] = await stack.decide(
        record(ScheduleMessage(command_id=ids(), message_id=m, send_now=True))
    )
    assert scheduled.outcome == "accepted" and scheduled.status == "scheduled"

    async def released() -> bool:
        return any(e.type == "RecipientsReleased" for e in await stack.events_of(m))

    await stack.wait_for("the first tick's release", released)

    later_steps: list[tuple[CommandBase, list[str], str]] = [
        (PauseMessage(command_id=ids(), message_id=m), ["MessagePaused"], "paused"),
        (ResumeMessage(command_id=ids(), message_id=m), ["MessageResumed"], "sending"),
        (
            RecordDeliveryOutcomes(
                command_id=ids(),
                message_id=m,
                delivered=("c0",),
                failed=(FailedRecipient(contact_id="c1", reason="550 no such user"),),
            ),
            ["RecipientsDelivered", "RecipientsFailed"],
            "sending",
        ),
        (
            CopyMessage(command_id=ids(), message_id=m, new_message_id=copy),
            ["MessageCopied", "DraftCreated", "RecipientsAdded"],
            "sending",
        ),
        (CancelMessage(command_id=ids(), message_id=m), ["MessageCanceled"], "canceled"),
    ]
    results = []
    for command, types, status in later_steps:
        [result] = await stack.decide(record(command))  # type: ignore[arg-type]
        assert result.outcome == "accepted", result
        assert [r.type for r in result.events] == types
        assert result.status == status
        results.append(result)

    events = await stack.events_of(m)
    assert_one_history(events)
    by_sequence = {e.sequence: e for e in events}
    for result in [scheduled, *results]:
        # Every reference in a result names an event really on the topic, in the result's order.
        own = [r for r in result.events if r.message_id == m]
        assert [(by_sequence[r.sequence].event_id, by_sequence[r.sequence].type) for r in own] == [
            (r.event_id, r.type) for r in own
        ]
        assert result.sequence == own[-1].sequence
    assert events[-1].type == "MessageCanceled"
    types = [e.type for e in events]
    assert types.index("SendingStarted") < types.index("RecipientsReleased")
    assert types.index("RecipientsReleased") < types.index("MessagePaused")
    state = fold(events)
    assert state is not None and state.status.value == "canceled"
    assert state.content.subject == "Yo"

    async def copy_events() -> list[Event] | None:
        found = await stack.events_of(copy)
        return found if len(found) == 2 else None

    copied = await stack.wait_for("the copy's events", copy_events)
    assert [(e.type, e.sequence) for e in copied] == [("DraftCreated", 1), ("RecipientsAdded", 2)]


async def test_health_lists_the_owned_partitions(stack: Stack) -> None:
    port = free_port()
    stack.spawn(DISPATCHER_HEALTH_PORT=str(port))

    async def all_owned() -> dict[str, Any] | None:
        code, body = await health(f"http://127.0.0.1:{port}/health")
        return body if code == 200 and owned_partitions(body) == 4 else None

    body = await stack.wait_for("a healthy report owning the 4 partitions", all_owned)
    assert body["status"] == "ok"
    assert set(body["checks"]) == {
        "kafka",
        "processor",
        "intake",
        "partition-0",
        "partition-1",
        "partition-2",
        "partition-3",
    }


async def test_a_copy_into_an_existing_message_id_is_not_appended(stack: Stack) -> None:
    stack.spawn()
    original, taken = ids(), ids()
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=original, content=CONTENT)),
        record(CreateDraft(command_id=ids(), message_id=taken, content=CONTENT)),
    )
    [copied] = await stack.decide(
        record(CopyMessage(command_id=ids(), message_id=original, new_message_id=taken))
    )

    async def letter() -> list[Any] | None:
        found = [d for d in await stack.dead_letters() if "already exists" in d.error]
        return found or None

    await stack.wait_for("the collision's dead letter", letter)
    # The original records the copy (its processor cannot see the other partition); the taken
    # message's stream is untouched.
    assert copied.outcome == "accepted"
    assert [e.type for e in await stack.events_of(taken)] == ["DraftCreated"]


async def test_a_restarted_processor_decides_against_the_rebuilt_state(stack: Stack) -> None:
    first = stack.spawn()
    m = ids()
    await stack.decide(
        record(CreateDraft(command_id=ids(), message_id=m, content=CONTENT)),
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2))),
    )
    first.terminate()
    assert first.wait(timeout=30) == 0
    stack.spawn()

    # Decided right only if the new process folded the log: a pause on a draft is refused
    # naming its status, adding the same contacts again changes nothing, a new one is added.
    results = await stack.decide(
        record(PauseMessage(command_id=ids(), message_id=m)),
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2))),
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(3))),
    )

    pause, same, more = results
    assert pause.rejection is not None and pause.rejection.status == "draft"
    assert same.outcome == "accepted" and same.events == () and same.sequence == 2
    assert more.outcome == "accepted" and more.sequence == 3
    assert_one_history(await stack.events_of(m))


async def test_a_stalled_owner_is_fenced_by_the_new_one_and_histories_stay_single(
    stack: Stack,
) -> None:
    # The broker's smallest session timeout (group.min.session.timeout.ms): the successor gets
    # the partitions as soon as the broker allows, not after the default 10 s.
    zombie = stack.spawn("zombie", KAFKA_SESSION_TIMEOUT_MS="6000")
    messages = [ids() for _ in range(8)]
    await stack.decide(
        *(record(CreateDraft(command_id=ids(), message_id=m, content=CONTENT)) for m in messages)
    )
    # Frozen mid-life: it keeps its partitions until its group session expires, then wakes up
    # believing it still owns them.
    zombie.send_signal(signal.SIGSTOP)
    try:
        stack.spawn("successor")
        batch = [
            record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2, f"{i}-")))
            for i in range(3)
            for m in messages
        ]
        # Decided only once the successor owns the partitions (after the zombie's session).
        await stack.decide(*batch, within=90)
    finally:
        zombie.send_signal(signal.SIGCONT)
    # The zombie woke up: it is fenced or rejoins the group; either way, more commands flow.
    more = [
        record(AddRecipients(command_id=ids(), message_id=m, contacts=contacts(2, "z-")))
        for m in messages
    ]
    await stack.decide(*more, within=90)
    results = await stack.results()
    assert all(len(set(results[r.command.command_id])) == 1 for r in batch + more)
    grouped = by_message(await stack.events())
    for m in messages:
        assert_one_history(grouped[m])
        assert len(grouped[m]) == 5
