"""Who may act for which account (core/trust.py): the intake relay's rule, as pure cases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from core.trust import Admitted, Refused, admit
from schemas import Actor, Content, CreateDraft, RecordDeliveryOutcomes
from schemas.wire import CommandRecord

CONTENT = Content(name="N", from_address="n@example.org", subject="S", body="B")


def item(command: CreateDraft | RecordDeliveryOutcomes, account: str) -> CommandRecord:
    return CommandRecord(
        command=command,
        actor=Actor(kind="user", account_id=account, user_id="claimed"),
        issued_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def draft() -> CreateDraft:
    return CreateDraft(command_id=uuid.uuid4(), message_id=uuid.uuid4(), content=CONTENT)


def test_a_granted_account_is_admitted_acting_as_the_principal() -> None:
    verdict = admit(item(draft(), "acct-a"), "crm", {"acct-a", "acct-c"})
    assert isinstance(verdict, Admitted)
    assert verdict.record.actor == Actor(kind="service", account_id="acct-a", service="crm")


def test_an_account_not_granted_is_refused_whatever_the_actor_claims() -> None:
    verdict = admit(item(draft(), "acct-b"), "crm", {"acct-a"})
    assert verdict == Refused("principal crm may not act for account acct-b", "actor.account_id")


def test_delivery_outcomes_are_refused_even_for_a_granted_account() -> None:
    outcomes = RecordDeliveryOutcomes(
        command_id=uuid.uuid4(), message_id=uuid.uuid4(), delivered=("c1",)
    )
    verdict = admit(item(outcomes, "acct-a"), "crm", {"acct-a"})
    assert isinstance(verdict, Refused) and verdict.field == "command.type"
