"""Unschedule: a scheduled message that has not started goes back to draft."""

from datetime import timedelta

from core import CommandNotAllowedError, MessageStatus
from schemas import (
    DeliveryPlan,
    DraftCreated,
    DraftEdited,
    EditDraft,
    MessageScheduled,
    MessageUnscheduled,
    SendingStarted,
    UnscheduleMessage,
)

from .dsl import CONTENT, T0, ZONE, cmd, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
scheduled = ev(MessageScheduled, send_at=T0 + timedelta(hours=1), default_time_zone=ZONE)


def test_unscheduling_returns_the_message_to_draft() -> None:
    outcome = given(created, scheduled).when(cmd(UnscheduleMessage))
    outcome.then(ev(MessageUnscheduled))
    state = outcome.state()
    assert state.status is MessageStatus.DRAFT and state.schedule is None


def test_an_unscheduled_message_is_editable_again() -> None:
    edited = CONTENT.model_copy(update={"name": "Renamed"})
    given(created, scheduled, ev(MessageUnscheduled)).when(cmd(EditDraft, content=edited)).then(
        ev(DraftEdited, content=edited, plan=DeliveryPlan())
    )


def test_an_unscheduled_message_never_starts() -> None:
    given(created, scheduled, ev(MessageUnscheduled)).at(T0 + timedelta(days=1)).then()


def test_unscheduling_a_draft_is_a_no_op() -> None:
    given(created).when(cmd(UnscheduleMessage)).then_nothing()


def test_a_started_message_cannot_be_unscheduled() -> None:
    error = (
        given(created, scheduled, ev(SendingStarted))
        .when(cmd(UnscheduleMessage))
        .then_raises(CommandNotAllowedError)
    )
    assert "sending" in str(error) and "PauseMessage" in str(error)
