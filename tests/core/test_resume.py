"""Resume: only a paused message can be resumed; sending continues."""

from datetime import timedelta

from core import CommandNotAllowedError, MessageStatus
from schemas import (
    DeliveryPlan,
    DraftCreated,
    MessagePaused,
    MessageResumed,
    MessageScheduled,
    PauseMessage,
    ResumeMessage,
    ScheduleMessage,
    SendingStarted,
)

from .dsl import CONTENT, T0, ZONE, Sim, cmd, contact, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
scheduled = ev(MessageScheduled, send_at=T0, default_time_zone=ZONE)


def test_resume_continues_releasing_where_the_pause_stopped() -> None:
    sim = Sim(DeliveryPlan(release_rate=10), [contact(f"c{i}") for i in range(25)])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(PauseMessage))
    sim.run(until=T0 + timedelta(minutes=1))
    sim.do(cmd(ResumeMessage), now=T0 + timedelta(minutes=1, seconds=1))
    sim.run(until=T0 + timedelta(minutes=2))
    assert sim.released == [f"c{i}" for i in range(25)]
    assert sim.status is MessageStatus.SENT


def test_resuming_a_paused_message() -> None:
    outcome = given(created, scheduled, ev(SendingStarted), ev(MessagePaused)).when(
        cmd(ResumeMessage)
    )
    outcome.then(ev(MessageResumed))
    state = outcome.state()
    assert state.status is MessageStatus.SENDING and len(state.pauses) == 1


def test_resuming_a_sending_message_is_a_no_op() -> None:
    given(created, scheduled, ev(SendingStarted)).when(cmd(ResumeMessage)).then_nothing()


def test_a_draft_cannot_be_resumed() -> None:
    error = given(created).when(cmd(ResumeMessage)).then_raises(CommandNotAllowedError)
    assert "draft" in str(error) and "ScheduleMessage" in str(error)
