"""Edit draft: content and plan can be edited only in draft."""

from datetime import timedelta

from core import CommandNotAllowedError, MessageNotFoundError
from schemas import DeliveryPlan, DraftCreated, DraftEdited, EditDraft, MessageScheduled

from .dsl import CONTENT, STRANGER, T0, ZONE, cmd, ctx, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
new_content = CONTENT.model_copy(update={"subject": "New subject"})


def test_editing_a_draft_replaces_what_is_given_and_keeps_the_rest() -> None:
    given(created).when(cmd(EditDraft, content=new_content)).then(
        ev(DraftEdited, content=new_content, plan=DeliveryPlan())
    )


def test_an_edit_that_changes_nothing_is_a_no_op() -> None:
    given(created).when(cmd(EditDraft, content=CONTENT)).then_nothing()


def test_a_scheduled_message_cannot_be_edited_and_the_error_names_status_and_allowed() -> None:
    scheduled = ev(MessageScheduled, send_at=T0 + timedelta(hours=1), default_time_zone=ZONE)
    error = (
        given(created, scheduled)
        .when(cmd(EditDraft, content=new_content))
        .then_raises(CommandNotAllowedError)
    )
    assert isinstance(error, CommandNotAllowedError)
    assert error.status == "scheduled"
    assert "UnscheduleMessage" in error.allowed
    assert "scheduled" in str(error) and "UnscheduleMessage" in str(error)


def test_another_accounts_message_is_not_found() -> None:
    given(created).when(cmd(EditDraft, content=new_content), ctx(actor=STRANGER)).then_raises(
        MessageNotFoundError
    )


def test_an_unknown_message_is_not_found() -> None:
    given().when(cmd(EditDraft, content=new_content)).then_raises(MessageNotFoundError)
