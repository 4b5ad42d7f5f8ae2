"""Schemas: one decoder for every command and event; old versions stay readable."""

from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import ValidationError

from core import Context, decide
from schemas import (
    IN_FLIGHT_SECONDS,
    Actor,
    CreateDraft,
    DeliveryPlan,
    DraftCreated,
    FailedRecipient,
    PauseMessage,
    RecipientsAdded,
    RecordDeliveryOutcomes,
    ScheduleMessage,
    decode_command,
    decode_event,
    encode,
)

from .dsl import CONTENT, OPERATOR, T0, Sim, cmd, contact

GOLDEN = Path(__file__).parent / "golden"


def test_a_version_1_draft_created_from_the_archive_reads_as_today_s_event() -> None:
    event = decode_event((GOLDEN / "draft_created_v1.json").read_bytes())
    assert isinstance(event, DraftCreated)
    assert event.schema_version == 2
    assert event.content.name == "Autumn sale"
    assert event.content.from_address == "shop@example.com"
    # No in-flight window: the default added later does not change what the old event meant.
    assert event.plan == DeliveryPlan(mode="recipient_timezone", max_in_flight=None)
    assert event.message_id == UUID("b7a1f0de-51b2-4c38-8a57-0e6f3c2d9b22")


def test_an_old_version_missing_what_its_upcaster_needs_is_a_bad_record_not_a_crash() -> None:
    # A ValueError (what every consumer sets aside), not the upcaster's KeyError.
    raw = {"type": "DraftCreated", "schema_version": 1, "message_id": str(UUID(int=1))}
    with pytest.raises(ValueError, match="DraftCreated version 1 cannot be read"):
        decode_event(raw)


def every_kind_of_event() -> list[object]:
    sim = Sim(DeliveryPlan(release_rate=2), [contact("a"), contact("b"), contact("c")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.run(until=T0 + timedelta(seconds=1), deliver=False)
    sim.do(
        cmd(
            RecordDeliveryOutcomes,
            delivered=("a",),
            failed=(FailedRecipient(contact_id="b", reason="bounce"),),
        )
    )
    sim.do(cmd(PauseMessage, reason="check"))
    return list(sim.log)


def test_every_event_survives_encoding_and_decoding() -> None:
    events = every_kind_of_event()
    assert len({type(e) for e in events}) >= 8
    for event in events:
        assert decode_event(encode(event)) == event  # type: ignore[arg-type]


def test_commands_decode_through_one_union() -> None:
    command = cmd(ScheduleMessage, send_at=T0)
    assert decode_command(encode(command)) == command
    assert decode_command(command.model_dump(mode="json")) == command


def test_every_record_has_a_literal_type_that_is_rejected_if_unknown() -> None:
    raw = cmd(PauseMessage).model_dump(mode="json")
    raw["type"] = "PauseEverything"
    with pytest.raises(ValidationError):
        decode_command(raw)


def test_a_future_version_is_rejected_not_guessed() -> None:
    raw = cmd(PauseMessage).model_dump(mode="json")
    raw["schema_version"] = 9
    with pytest.raises(ValidationError):
        decode_command(raw)


def test_unknown_fields_are_rejected() -> None:
    raw = cmd(PauseMessage).model_dump(mode="json")
    raw["colour"] = "red"
    with pytest.raises(ValidationError):
        decode_command(raw)


def test_records_are_frozen() -> None:
    command = cmd(PauseMessage)
    with pytest.raises(ValidationError):
        command.reason = "changed"  # type: ignore[misc]


def test_an_event_envelope_names_message_sequence_actor_and_causes() -> None:
    create = cmd(CreateDraft, content=CONTENT)
    (event,) = decide(create, None, Context(now=T0, actor=OPERATOR))
    assert event.message_id == create.message_id
    assert event.sequence == 1
    assert event.occurred_at == T0
    assert event.causation_id == create.command_id == event.correlation_id
    assert event.actor == OPERATOR
    raw = event.model_dump(mode="json")
    assert raw["type"] == "DraftCreated" and raw["schema_version"] == 2


def test_contact_addresses_are_stored_stripped() -> None:
    assert contact("a", email="  a@example.org ").email == "a@example.org"
    added = RecipientsAdded.model_fields["contacts"]
    assert added.metadata  # chunk bounds are declared on the schema


def test_a_user_actor_may_carry_a_display_name_and_old_actors_still_read() -> None:
    named = Actor(kind="user", account_id="acct-1", user_id="op_1", display_name="Ada Lovelace")
    assert Actor.model_validate_json(named.model_dump_json()) == named
    old = Actor.model_validate_json('{"kind": "user", "account_id": "acct-1", "user_id": "ada"}')
    assert old.display_name is None
    with pytest.raises(ValidationError):
        Actor(kind="service", account_id="acct-1", service="api", display_name="API")


def test_a_plan_without_a_window_gets_the_default_one_written_into_the_record() -> None:
    plan = DeliveryPlan(release_rate=200)
    assert plan.max_in_flight == IN_FLIGHT_SECONDS * 200
    assert f'"max_in_flight":{IN_FLIGHT_SECONDS * 200}' in plan.model_dump_json()
    # A stored plan says what it meant: an explicit null stays unbounded.
    stored = DeliveryPlan.model_validate_json('{"release_rate":200,"max_in_flight":null}')
    assert stored.max_in_flight is None
    assert DeliveryPlan.model_validate_json(plan.model_dump_json()) == plan


def test_an_outcomes_command_written_before_returns_existed_reads_the_same() -> None:
    old = (
        '{"type":"RecordDeliveryOutcomes","schema_version":1,'
        '"command_id":"0b9b6a1e-2f53-4c1e-9a51-6f1b7d7d2c01",'
        '"message_id":"b7a1f0de-51b2-4c38-8a57-0e6f3c2d9b22","delivered":["a"]}'
    )
    command = decode_command(old)
    assert isinstance(command, RecordDeliveryOutcomes)
    assert command.delivered == ("a",) and command.returned == ()


def test_a_returned_send_is_an_outcome_and_round_trips() -> None:
    sim = Sim(DeliveryPlan(release_rate=2), [contact("a"), contact("b")])
    sim.do(cmd(ScheduleMessage, send_at=T0))
    sim.tick(T0)
    sim.do(cmd(PauseMessage))
    events = sim.give_back("a")
    assert [e.type for e in events] == ["RecipientsReturned"]
    assert decode_event(encode(events[0])) == events[0]
