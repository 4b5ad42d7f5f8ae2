"""Create draft: a new message starts as a draft owned by the creator's account."""

from core import MessageAlreadyExistsError, MessageStatus
from schemas import CreateDraft, DeliveryPlan, DraftCreated

from .dsl import CONTENT, STRANGER, cmd, ctx, ev, given


def test_create_draft_starts_a_draft_owned_by_the_account() -> None:
    outcome = given().when(cmd(CreateDraft, content=CONTENT))
    outcome.then(ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan()))
    state = outcome.state()
    assert state.status is MessageStatus.DRAFT
    assert state.account_id == "acct-1"
    assert state.version == 1


def test_the_same_create_again_is_a_no_op() -> None:
    create = cmd(CreateDraft, content=CONTENT)
    first = given().when(create).events
    assert given(*first).when(create).events == []


def test_create_onto_an_existing_message_id_is_a_conflict() -> None:
    history = given(ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan()))
    history.when(cmd(CreateDraft, content=CONTENT)).then_raises(MessageAlreadyExistsError)


def test_create_onto_another_accounts_message_id_is_a_conflict_without_details() -> None:
    history = given(ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan()))
    error = history.when(cmd(CreateDraft, content=CONTENT), ctx(actor=STRANGER)).then_raises(
        MessageAlreadyExistsError
    )
    assert "draft" not in str(error)


def test_events_are_numbered_and_identified_deterministically() -> None:
    create = cmd(CreateDraft, content=CONTENT)
    first = given().when(create).events
    again = given().when(create).events
    assert first == again
    assert first[0].sequence == 1
    assert first[0].causation_id == create.command_id
