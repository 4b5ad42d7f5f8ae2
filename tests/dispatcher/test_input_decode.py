"""The commands topic's fast decode (schemas/wire.py `decode_input`: validated straight from the
JSON bytes) decides as the exact path always did (`decode_input_exactly`: the Python objects of
the JSON first): the same command for any record either accepts, and a refused record the same
error, so its dead letter is the one of before."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from schemas import Actor
from schemas.wire import (
    CommandRecord,
    CopiedEvent,
    DeadLetter,
    InputRecord,
    decode_input,
    decode_input_exactly,
)
from services.dispatcher.decider import (
    Input,
    PartitionState,
    Rules,
    WriteDeadLetter,
    decide_record,
    key_of,
)

OPERATOR = Actor(kind="user", account_id="acct-a", user_id="ada")
MESSAGE = uuid.UUID("6f1c1f44-6b1e-4a57-9d6f-2d5b1a6c0b11")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
#: The fast path alone (no fallback): what it accepts must be what the exact path accepts.
FAST: TypeAdapter[Any] = TypeAdapter(InputRecord)

# Contacts as any publisher of the topic may write them, valid or not: control characters,
# bad and internationalised addresses, unknown zones, attribute values of every JSON kind.
_odd = st.sampled_from(["", " ", "\x00", "\t", "\n", "\r", "\x7f", "\x85", "\u2028", "é", "ü"])
_word = st.text("abcXYZ019._-+", min_size=1, max_size=12)
_text = st.builds(lambda a, b, c: a + b + c, _word, _odd, _word) | _word
_email = (
    st.builds(lambda a, d: f"{a}@{d}.example", _word, st.sampled_from(["a", "bücher", "x-y"]))
    | st.builds(lambda a, b: f" {a}@{b}.org ", _word, _word)
    | _text
    | st.sampled_from(["a@b", "@x.org", "a@@x.org", "a b@x.org", "zoë@example.org"])
)
_zone = st.none() | st.sampled_from(["UTC", "Europe/London", "Asia/Tokyo", "Mars/Base", "", "utc"])
_value = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_contact = st.fixed_dictionaries(
    {"contact_id": _text, "email": _email},
    optional={"time_zone": _zone, "attributes": st.dictionaries(_text, _value, max_size=4)},
)


def add_recipients(contacts: list[dict[str, Any]], **record: Any) -> bytes:
    raw = {
        "type": "CommandRecord",
        "schema_version": 1,
        "command": {
            "type": "AddRecipients",
            "schema_version": 1,
            "command_id": str(uuid.uuid4()),
            "message_id": str(MESSAGE),
            "contacts": contacts,
        },
        "actor": OPERATOR.model_dump(exclude_none=True),
        "issued_at": T0.isoformat(),
        **record,
    }
    return json.dumps(raw).encode()


def outcome(decode: Any, value: bytes) -> Any:
    try:
        return decode(value)
    except (ValidationError, ValueError) as error:
        return f"{type(error).__name__}: {error}"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_contact, min_size=0, max_size=6))
def test_the_fast_decode_gives_the_command_the_exact_decode_gives(
    contacts: list[dict[str, Any]],
) -> None:
    value = add_recipients(contacts)
    exact = outcome(decode_input_exactly, value)
    # The fast path on its own accepts exactly what the exact path accepts, with the same
    # command; when it refuses, decode_input answers with the exact path's error.
    fast = outcome(FAST.validate_json, value)
    assert isinstance(fast, str) == isinstance(exact, str)
    if not isinstance(exact, str):
        assert fast == exact
    assert outcome(decode_input, value) == exact


def test_a_valid_chunk_decodes_to_the_same_record() -> None:
    contacts = [
        {
            "contact_id": f"c{i}",
            "email": f" person{i}@example.org ",
            "time_zone": ["Europe/London", None][i % 2],
            "attributes": {"first_name": f"N{i}", "n": i, "vip": i % 3 == 0, "x": None},
        }
        for i in range(200)
    ]
    value = add_recipients(contacts, correlation_id=str(uuid.uuid4()), default_time_zone="UTC")
    item = decode_input(value)
    assert isinstance(item, CommandRecord)
    assert item == decode_input_exactly(value)
    assert item.command.contacts[0].email == "person0@example.org"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        {"contact_id": "c\x00", "email": "a@example.org"},
        {"contact_id": "c1", "email": "not-an-address"},
        {"contact_id": "c1", "email": "a@example.org", "time_zone": "Mars/Base"},
        {"contact_id": "c1", "email": "a@example.org", "attributes": {"k\n": "v"}},
        {"contact_id": "c1", "email": "a@example.org", "extra": 1},
    ],
)
def test_an_invalid_chunk_is_dead_lettered_with_the_error_of_the_exact_decode(
    bad: dict[str, Any],
) -> None:
    value = add_recipients([{"contact_id": "ok", "email": "ok@example.org"}, bad])
    with pytest.raises(ValidationError) as exact:
        decode_input_exactly(value)
    record = Input("t.commands", 0, 3, key_of(MESSAGE), value, 0, 1)

    decision = decide_record(PartitionState(0), record, Rules(partitions=1))

    letter = decision.writes[0]
    assert isinstance(letter, WriteDeadLetter)
    assert letter.letter == DeadLetter.of(record, exact.value)
    assert letter.letter.error.startswith("ValidationError: ")


def test_a_copied_event_is_still_read_as_a_stored_record() -> None:
    # A copy of an old draft holds text today's input rules refuse: it decodes as stored.
    event = {
        "type": "DraftCreated",
        "schema_version": 2,
        "event_id": str(uuid.uuid4()),
        "message_id": str(MESSAGE),
        "sequence": 1,
        "occurred_at": T0.isoformat(),
        "correlation_id": str(uuid.uuid4()),
        "causation_id": str(uuid.uuid4()),
        "actor": OPERATOR.model_dump(exclude_none=True),
        "account_id": "acct-a",
        "content": {"name": "Old\x00name", "from_address": "news@example.org", "subject": "Hi"},
        "plan": {"mode": "fixed", "max_in_flight": None},
    }
    value = json.dumps(
        {
            "type": "CopiedEvent",
            "schema_version": 1,
            "copy_command_id": str(uuid.uuid4()),
            "event": event,
        }
    ).encode()
    with pytest.raises(ValidationError):
        FAST.validate_json(value)  # as input, refused
    item = decode_input(value)
    assert isinstance(item, CopiedEvent)
    assert item == decode_input_exactly(value)
    assert item.event.content.name == "Old\x00name"  # type: ignore[union-attr]
