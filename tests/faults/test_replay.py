"""The core's replay of a history (faults/replay.py): the pure partition decider run again over
a partition's commands gives back the events the first run decided, and the `core_replay`
checker fires when the log holds anything else (a command left out, one decided twice, one
decided at another instant)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from bench.harness.processor import CONTENT
from faults.checkers import core_replay
from faults.replay import replay
from schemas import (
    AddRecipients,
    Contact,
    CreateDraft,
    Event,
    PauseMessage,
    ResumeMessage,
    ScheduleMessage,
)
from services.dispatcher.decider import (
    Input,
    PartitionState,
    WriteEvent,
    decide_record,
)
from tests.dispatcher.test_decider import RULES, T0, command_input, tick_input

MESSAGE = uuid.uuid4()
OTHER = uuid.uuid4()


def history() -> list[Input]:
    """Two messages of one partition; one is paused and resumed while it sends."""
    records: list[Input] = []
    for message in (MESSAGE, OTHER):
        records += [
            command_input(
                CreateDraft(command_id=uuid.uuid4(), message_id=message, content=CONTENT)
            ),
            command_input(
                AddRecipients(
                    command_id=uuid.uuid4(),
                    message_id=message,
                    contacts=tuple(
                        Contact(contact_id=f"c{i}", email=f"c{i}@example.org") for i in range(5)
                    ),
                )
            ),
            command_input(
                ScheduleMessage(command_id=uuid.uuid4(), message_id=message, send_now=True)
            ),
        ]
    records += [
        tick_input(T0 + timedelta(seconds=1)),
        command_input(PauseMessage(command_id=uuid.uuid4(), message_id=MESSAGE), T0),
        tick_input(T0 + timedelta(seconds=2)),
        command_input(ResumeMessage(command_id=uuid.uuid4(), message_id=MESSAGE), T0),
        tick_input(T0 + timedelta(seconds=3)),
    ]
    return records


def decided(records: list[Input]) -> list[Event]:
    """What a first run decided and wrote for MESSAGE (the "log")."""
    state = PartitionState(0)
    return [
        w.event
        for r in records
        for w in decide_record(state, r, RULES).writes
        if isinstance(w, WriteEvent) and w.event.message_id == MESSAGE
    ]


def test_the_replay_of_a_history_gives_back_its_events() -> None:
    records = history()
    log = decided(records)
    assert {e.type for e in log} >= {"MessagePaused", "MessageResumed", "RecipientsReleased"}
    replayed = replay(records, RULES, MESSAGE)
    assert replayed == log
    assert core_replay(log, replayed) == []


def test_the_replay_checker_fires_on_a_log_the_history_does_not_give() -> None:
    records = history()
    log = decided(records)
    # The log holds a pause the history's replay does not decide (a command lost from the
    # commands topic, or an event written by something other than the decider).
    without_pause = [r for r in records if b"PauseMessage" not in (r.value or b"")]
    assert core_replay(log, replay(without_pause, RULES, MESSAGE))
    # An event decided twice.
    assert core_replay([*log, log[-1]], replay(records, RULES, MESSAGE))
