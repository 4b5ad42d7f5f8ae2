"""Pause: only a sending message can be paused; no further recipient is released."""

from datetime import timedelta

from core import CommandNotAllowedError, MessageStatus
from schemas import (
    DeliveryPlan,
    DraftCreated,
    MessagePaused,
    MessageScheduled,
    PauseMessage,
    ScheduleMessage,
    SendingStarted,
)

from .dsl import CONTENT, OPERATOR, T0, ZONE, Sim, cmd, contact, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
scheduled = ev(MessageScheduled, send_at=T0, default_time_zone=ZONE)


def test_pause_stops_releases_at_once() -> None:
    sim = Sim(DeliveryPlan(release_rate=10), [contact(f"c{i}") for i in range(100)])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    assert len(sim.released) == 10
    sim.do(cmd(PauseMessage, reason="wrong link"), now=T0 + timedelta(milliseconds=300))
    sim.run(until=T0 + timedelta(minutes=5))
    assert len(sim.released) == 10
    assert sim.status is MessageStatus.PAUSED


def test_pausing_records_who_paused_when_and_why() -> None:
    outcome = given(created, scheduled, ev(SendingStarted)).when(cmd(PauseMessage, reason="typo"))
    outcome.then(ev(MessagePaused, reason="typo"))
    state = outcome.state()
    assert state.paused_by == OPERATOR and state.paused_at == T0 and state.pause_reason == "typo"


def test_pausing_a_paused_message_is_a_no_op() -> None:
    given(created, scheduled, ev(SendingStarted), ev(MessagePaused)).when(
        cmd(PauseMessage)
    ).then_nothing()


def test_a_scheduled_message_cannot_be_paused() -> None:
    error = given(created, scheduled).when(cmd(PauseMessage)).then_raises(CommandNotAllowedError)
    assert isinstance(error, CommandNotAllowedError)
    assert error.status == "scheduled"
    assert error.allowed == (
        "UnscheduleMessage",
        "CancelMessage",
        "CopyMessage",
        "AddRecipients",
        "RemoveRecipients",
    )


def test_the_same_pause_command_repeated_after_a_resume_is_a_no_op() -> None:
    sim = Sim(audience=[contact("a")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    pause = cmd(PauseMessage)
    sim.do(pause)
    from schemas import ResumeMessage

    sim.do(cmd(ResumeMessage))
    assert sim.do(pause) == []
    assert sim.status is MessageStatus.SENDING
