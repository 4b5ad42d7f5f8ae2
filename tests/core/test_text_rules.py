"""Text at the edge (schemas/text.py): a command refuses a control character in any text field,
naming the field, whether it was built by the API or decoded from the command topic; a history
written before the rules still decodes, folds, plans and records outcomes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import hypothesis
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core import MessageStatus, fold
from schemas import (
    AddRecipients,
    Contact,
    Content,
    CreateDraft,
    DeliveryPlan,
    DraftCreated,
    FailedRecipient,
    RecipientsAdded,
    RecipientsReleased,
    RecordDeliveryOutcomes,
    ScheduleMessage,
    decode_command,
    decode_event,
    encode,
)
from schemas.sends import MailContent, SendRecord, decode_send_topic
from schemas.text import STORED, first_unsafe, one_line
from schemas.wire import CommandRecord, decode_input

from .dsl import CONTENT, MESSAGE, OPERATOR, T0, cmd, ctx, ev, given, new_id

#: Every character the one-line rule refuses, by kind: NUL, other C0 (TAB, LF, CR, ESC, US),
#: DEL, NEL and the Unicode line and paragraph separators.
NOT_ONE_LINE = [
    "\x00",
    "\x01",
    "\t",
    "\n",
    "\r",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
]
#: What the text rule (bodies, attribute values) refuses: C0 except TAB, LF, CR.
NOT_TEXT = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x0e", "\x1b", "\x1f"]


def spoil(value: str, char: str) -> str:
    """``value`` with ``char`` after its first character (inside, never stripped away)."""
    return value[:1] + char + value[1:]


def content(**change: Any) -> dict[str, Any]:
    return {**CONTENT.model_dump(), "from_name": "News", **change}


def create(**change: Any) -> dict[str, Any]:
    return {"type": "CreateDraft", "content": content(**change)}


def add(**change: Any) -> dict[str, Any]:
    person: dict[str, Any] = {
        "contact_id": "ada",
        "email": "ada@example.org",
        "time_zone": "Europe/London",
        "attributes": {"first_name": "Ada"},
        **change,
    }
    return {"type": "AddRecipients", "contacts": [person]}


#: (the field as the 422 names it, the command body with the bad value) for every one-line field.
ONE_LINE_FIELDS: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("content.name", lambda c: create(name=spoil("Launch", c))),
    ("content.subject", lambda c: create(subject=spoil("Hello", c))),
    ("content.from_name", lambda c: create(from_name=spoil("Support", c))),
    ("content.from_address", lambda c: create(from_address=spoil("news@example.org", c))),
    ("contacts.0.contact_id", lambda c: add(contact_id=spoil("ada", c))),
    ("contacts.0.email", lambda c: add(email=spoil("ada@example.org", c))),
    ("contacts.0.time_zone", lambda c: add(time_zone=spoil("Europe/London", c))),
    ("contacts.0.attributes", lambda c: add(attributes={spoil("first_name", c): "Ada"})),
    ("contact_ids.0", lambda c: {"type": "RemoveRecipients", "contact_ids": [spoil("ada", c)]}),
    ("reason", lambda c: {"type": "PauseMessage", "reason": spoil("check", c)}),
    ("reason", lambda c: {"type": "CancelMessage", "reason": spoil("stop", c)}),
    (
        "failed.0.reason",
        lambda c: {
            "type": "RecordDeliveryOutcomes",
            "failed": [{"contact_id": "ada", "reason": spoil("550 no", c)}],
        },
    ),
]

TEXT_FIELDS: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("content.body", lambda c: create(body=spoil("Dear reader", c))),
    ("contacts.0.attributes", lambda c: add(attributes={"first_name": spoil("Ada", c)})),
]


def command(body: dict[str, Any]) -> dict[str, Any]:
    return {"command_id": str(new_id()), "message_id": str(MESSAGE), "schema_version": 1, **body}


def on_the_topic(body: dict[str, Any], actor: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        {
            "type": "CommandRecord",
            "command": command(body),
            "actor": actor or OPERATOR.model_dump(exclude_none=True),
            "issued_at": T0.isoformat(),
        }
    ).encode()


def refused_at(error: ValidationError) -> list[str]:
    """The dotted paths the error names, without pydantic's union tags."""
    tags = {"CommandRecord", "CreateDraft", "AddRecipients", "RemoveRecipients"}
    tags |= {"PauseMessage", "CancelMessage", "RecordDeliveryOutcomes", "command"}
    return [".".join(str(part) for part in e["loc"] if part not in tags) for e in error.errors()]


def assert_refused(body: dict[str, Any], field: str) -> None:
    # Built as the API builds it, and decoded from the command topic: the same refusal.
    with pytest.raises(ValidationError) as built:
        decode_command(command(body))
    assert field in refused_at(built.value)
    with pytest.raises(ValidationError) as published:
        decode_input(on_the_topic(body))
    assert field in refused_at(published.value)
    assert "control character" in str(published.value)


@pytest.mark.parametrize("char", NOT_ONE_LINE, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(("field", "body"), ONE_LINE_FIELDS, ids=[f for f, _ in ONE_LINE_FIELDS])
def test_a_one_line_field_refuses_control_characters_and_line_breaks(
    field: str, body: Callable[[str], dict[str, Any]], char: str
) -> None:
    assert_refused(body(char), field)


@pytest.mark.parametrize("char", NOT_TEXT, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(("field", "body"), TEXT_FIELDS, ids=[f for f, _ in TEXT_FIELDS])
def test_a_body_or_attribute_value_refuses_control_characters_but_tab_lf_cr(
    field: str, body: Callable[[str], dict[str, Any]], char: str
) -> None:
    assert_refused(body(char), field)


@pytest.mark.parametrize(("field", "body"), TEXT_FIELDS, ids=[f for f, _ in TEXT_FIELDS])
def test_a_body_or_attribute_value_may_hold_tab_lf_and_cr(
    field: str, body: Callable[[str], dict[str, Any]]
) -> None:
    decode_command(command(body("\t\r\n")))
    decode_input(on_the_topic(body("\t\r\n")))


@pytest.mark.parametrize("name", ["account_id", "user_id", "display_name"])
def test_the_actor_of_a_command_on_the_topic_is_one_line(name: str) -> None:
    actor = {**OPERATOR.model_dump(exclude_none=True), name: "ada\x00"}
    with pytest.raises(ValidationError, match=f"actor.{name} must be one line"):
        decode_input(on_the_topic(create(), actor))


def test_a_header_injection_in_the_sender_name_is_refused() -> None:
    evil = "Support\r\nBcc: someone@example.net\r\nX-Injected: yes"
    with pytest.raises(ValidationError) as error:
        CreateDraft(command_id=new_id(), message_id=MESSAGE, content=content(from_name=evil))
    assert refused_at(error.value) == ["content.from_name"]
    assert "U+000D CR at position 7" in str(error.value)


@pytest.mark.parametrize(
    "email",
    [
        "zoë@example.org",
        "ada@bücher.example",
        "zoë@bücher.example",
        "用户@例子.广告",
        "a@xn--bcher-kva.example",
    ],
)
def test_internationalized_addresses_are_valid_and_kept_as_given(email: str) -> None:
    assert Contact(contact_id="z", email=email).email == email
    assert Content(name="N", from_address=email, subject="S", body="").from_address == email


@pytest.mark.parametrize("email", ["zoë@-bad-.example", "a@exa mple.org", "a@☃", "a b@example.org"])
def test_addresses_that_are_no_addresses_are_still_refused(email: str) -> None:
    with pytest.raises(ValidationError, match="not a syntactically valid email address"):
        Contact(contact_id="z", email=email)


def old(record: object, **change: Any) -> dict[str, Any]:
    """A record as an old history may hold it: its JSON with some values replaced."""
    raw: dict[str, Any] = json.loads(encode(record))  # type: ignore[arg-type]
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = raw
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
    return raw


def test_an_old_history_with_nul_in_every_field_still_decodes_folds_plans_and_completes() -> None:
    created = old(
        ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan()),
        content__name="Launch\x00",
        content__subject="Hi\r\nBcc: x",
        content__from_name="News\x00",
        content__from_address="ne\x00ws@example.org",
        content__body="Dear\x00 reader\x01",
        actor__user_id="ada\x00",
    )
    added = old(
        ev(RecipientsAdded, contacts=(Contact(contact_id="z", email="z@example.org"),)),
        contacts__0__contact_id="z\x00",
        contacts__0__email="z\x00@example.org",
        contacts__0__attributes={"na\x00me": "v\x00"},
    )
    history = given(decode_event(created), decode_event(added)).events
    assert history[0].content.body == "Dear\x00 reader\x01"  # type: ignore[union-attr]
    scheduled = given(*history).when(cmd(ScheduleMessage, send_now=True), ctx()).events
    released = given(*history, *scheduled).at(T0 + timedelta(seconds=1)).events
    assert any(isinstance(e, RecipientsReleased) and "z\x00" in e.contact_ids for e in released)
    # The delivery step reports the contact by reference: the outcome is decided, not refused.
    outcome = cmd(
        RecordDeliveryOutcomes,
        failed=(FailedRecipient(contact_id="z\x00", reason="the mail cannot be composed"),),
    )
    decided = given(*history, *scheduled, *released).when(outcome, ctx(T0 + timedelta(seconds=2)))
    assert decided.error is None and decided.events
    everything = [*history, *scheduled, *released, *decided.events]
    state = fold(everything)
    assert state is not None and state.status in {MessageStatus.SENDING, MessageStatus.SENT}
    for event in everything:
        assert decode_event(encode(event)) == event


def test_sends_from_an_old_history_still_decode_for_delivery_to_fail_them() -> None:
    send = SendRecord(
        send_id=new_id(),
        message_id=MESSAGE,
        account_id="acct-1",
        released_at=T0,
        release_sequence=3,
        contact=Contact(contact_id="z", email="z@example.org"),
    )
    raw = json.dumps(old(send, contact__email="z\x00@example.org")).encode()
    decoded = decode_send_topic(raw)
    assert isinstance(decoded, SendRecord) and decoded.contact.email == "z\x00@example.org"
    body = MailContent(message_id=MESSAGE, account_id="a", content=CONTENT, sequence=2)
    raw = json.dumps(old(body, content__subject="a\nb")).encode()
    assert decode_send_topic(raw).content.subject == "a\nb"  # type: ignore[union-attr]


def test_a_copied_event_of_an_old_draft_is_appended_not_refused() -> None:
    created = old(
        ev(DraftCreated, account_id="acct-1", content=CONTENT, plan=DeliveryPlan()),
        content__name="Old\x00",
    )
    copied = {"type": "CopiedEvent", "schema_version": 1, "copy_command_id": str(new_id())}
    item = decode_input(json.dumps({**copied, "event": created}).encode())
    assert item.event.content.name == "Old\x00"  # type: ignore[union-attr]


def test_input_rules_describe_the_character_and_reasons_are_made_one_line() -> None:
    assert first_unsafe("ok", multiline=False) is None
    assert first_unsafe("a\u2028b", multiline=False) == (
        "must be one line without control characters (found U+2028 LINE SEPARATOR at position 1)"
    )
    assert first_unsafe("a\nb\tc\r", multiline=True) is None
    assert one_line("550-first\r\n550 second\x00") == "550-first  550 second "
    assert isinstance(
        CommandRecord(
            command=cmd(AddRecipients, contacts=(Contact(contact_id="ü", email="ü@ü.de"),)),
            actor=OPERATOR,
            issued_at=T0,
        ),
        CommandRecord,
    )


@pytest.mark.parametrize("value", [None, b"", b"{", b"[1]", b"\xff", b'"\x00"'])
def test_a_command_topic_value_that_is_no_record_is_a_validation_error(value: bytes) -> None:
    # The processor dead-letters a ValidationError; any other exception would end it.
    with pytest.raises(ValidationError):
        decode_input(value)


ADDRESS_LIKE = st.from_regex(r"\A[ a-zA-Z0-9.@_+\-\"(),:;<>\[\]\\]{1,80}\Z") | st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.from_regex(r"\A[a-zA-Z0-9._+\-]{0,70}\Z"),
    st.from_regex(r"\A[a-zA-Z0-9.\-]{0,70}\Z"),
)


@settings(max_examples=500, deadline=None)
@hypothesis.given(ADDRESS_LIKE)
def test_the_fast_check_of_an_ascii_address_agrees_with_the_full_one(address: str) -> None:
    def verdict(context: object) -> str | None:
        try:
            return Contact.model_validate(
                {"contact_id": "c", "email": address}, context=context
            ).email
        except ValidationError:
            return None

    # Input takes the one-expression path for ASCII; a stored record the general one.
    assert verdict(None) == verdict(STORED)


def test_a_stored_zone_accepted_under_the_old_rule_still_decodes_but_new_input_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Zones became tzdata's list (issue 11); a history stored before holds names zoneinfo loads
    # that the list lacks (e.g. "posix/Europe/Berlin"). Such a stored record must still decode,
    # or its partition could never be folded again; a new command with it is refused.
    import schemas.values as values

    monkeypatch.setattr(values, "_ZONES", values._ZONES - {"Europe/Berlin"})
    values.is_valid_time_zone.cache_clear()
    try:
        contact = {"contact_id": "c1", "email": "a@example.org", "time_zone": "Europe/Berlin"}
        stored = Contact.model_validate(contact, context=STORED)
        assert stored.time_zone == "Europe/Berlin"
        with pytest.raises(ValidationError, match="time_zone"):
            Contact.model_validate(contact)
        # Not everything passes as stored: a name zoneinfo cannot load is still refused.
        with pytest.raises(ValidationError, match="time_zone"):
            Contact.model_validate({**contact, "time_zone": "Mars/Olympus"}, context=STORED)
    finally:
        values.is_valid_time_zone.cache_clear()
