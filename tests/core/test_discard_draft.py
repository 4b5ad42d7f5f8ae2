"""Discard: a draft is thrown away for good; it leaves the Drafts list and is never sent."""

from datetime import timedelta

import pytest

from core import ALLOWED_COMMANDS, CommandNotAllowedError, MessageStatus
from schemas import (
    AddRecipients,
    CopyMessage,
    DeliveryPlan,
    DiscardDraft,
    DraftCreated,
    DraftDiscarded,
    EditDraft,
    MessageScheduled,
    MessageUnscheduled,
    ScheduleMessage,
    SendingStarted,
)

from .dsl import CONTENT, COPY, T0, ZONE, cmd, contact, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
scheduled = ev(MessageScheduled, send_at=T0 + timedelta(hours=1), default_time_zone=ZONE)


def test_a_draft_is_discarded() -> None:
    outcome = given(created).when(cmd(DiscardDraft))
    outcome.then(ev(DraftDiscarded))
    assert outcome.state().status is MessageStatus.DISCARDED


def test_an_unscheduled_message_is_a_draft_and_can_be_discarded() -> None:
    given(created, scheduled, ev(MessageUnscheduled)).when(cmd(DiscardDraft)).then(
        ev(DraftDiscarded)
    )


def test_discarding_a_discarded_draft_is_a_no_op() -> None:
    given(created, ev(DraftDiscarded)).when(cmd(DiscardDraft)).then_nothing()


@pytest.mark.parametrize(
    "history",
    [(created, scheduled), (created, scheduled, ev(SendingStarted))],
    ids=["scheduled", "sending"],
)
def test_only_a_draft_can_be_discarded(history: tuple[object, ...]) -> None:
    error = given(*history).when(cmd(DiscardDraft)).then_raises(CommandNotAllowedError)  # type: ignore[arg-type]
    assert "DiscardDraft" in str(error)


@pytest.mark.parametrize(
    "command",
    [
        cmd(EditDraft, content=CONTENT.model_copy(update={"name": "Again"})),
        cmd(ScheduleMessage, send_now=True),
        cmd(AddRecipients, contacts=(contact("c1"),)),
    ],
    ids=["edit", "schedule", "add recipients"],
)
def test_a_discarded_draft_is_final(command: object) -> None:
    error = given(created, ev(DraftDiscarded)).when(command).then_raises(CommandNotAllowedError)  # type: ignore[arg-type]
    assert "discarded" in str(error)


def test_a_discarded_draft_never_starts() -> None:
    given(created, ev(DraftDiscarded)).at(T0 + timedelta(days=1)).then()


def test_a_discarded_draft_can_still_be_copied() -> None:
    outcome = given(created, ev(DraftDiscarded)).when(cmd(CopyMessage, new_message_id=COPY))
    assert [type(e).__name__ for e in outcome.events][:2] == ["MessageCopied", "DraftCreated"]


def test_discard_is_offered_in_draft_only() -> None:
    offering = {s for s, allowed in ALLOWED_COMMANDS.items() if "DiscardDraft" in allowed}
    assert offering == {MessageStatus.DRAFT}
