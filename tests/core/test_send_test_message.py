"""Test sends: of a draft or scheduled message, recorded with the operator, outside the audience."""

from __future__ import annotations

from core import CommandNotAllowedError, InvalidCommandError
from core.preview import MergeField, merge_fields
from schemas import (
    Content,
    DeliveryPlan,
    DraftCreated,
    MessageScheduled,
    RecipientsAdded,
    SendingStarted,
    SendTestMessage,
    TestSendRequested,
)

from .dsl import CONTENT, T0, cmd, contact, contacts, ev, given

created = ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan())
audience = ev(RecipientsAdded, contacts=contacts("a", "b"))
scheduled = ev(MessageScheduled, send_at=T0, default_time_zone="UTC")


def test_a_draft_can_be_sent_as_a_test_and_the_history_records_it() -> None:
    outcome = given(created, audience).when(
        cmd(SendTestMessage, addresses=("me@example.org", "me@example.org"), contact_id="a")
    )
    outcome.then(
        ev(TestSendRequested, addresses=("me@example.org",), contact_id="a", status="draft")
    )


def test_a_test_send_changes_no_recipient_and_no_count() -> None:
    history = given(created, audience, scheduled)
    before = history.state()
    assert before is not None
    counts = dict(before.book.counts)
    outcome = history.when(cmd(SendTestMessage, addresses=("me@example.org",)))
    after = outcome.state()
    assert dict(after.book.counts) == counts and len(after.book) == 2
    assert after.status == before.status


def test_a_sending_message_is_not_sent_as_a_test() -> None:
    history = given(created, audience, scheduled, ev(SendingStarted))
    history.when(cmd(SendTestMessage, addresses=("me@example.org",))).then_raises(
        CommandNotAllowedError
    )


def test_the_contact_whose_data_a_test_renders_must_be_in_the_audience() -> None:
    history = given(created, audience)
    history.when(cmd(SendTestMessage, addresses=("me@example.org",), contact_id="zz")).then_raises(
        InvalidCommandError
    )


def test_a_preview_lists_each_merge_field_with_its_value_or_its_fallback() -> None:
    content = Content(
        name="n",
        from_address="news@example.org",
        subject="Hi {{ first_name | friend }}",
        body="<p>{{first_name|friend}} from {{city}} ({{ email }})</p>",
    )
    person = contact("a").model_copy(update={"attributes": {"first_name": "Ann"}})
    assert merge_fields(content, person) == [
        MergeField("first_name", "Ann", "friend", False),
        MergeField("city", None, None, True),
        MergeField("email", "a@example.org", None, False),
    ]
