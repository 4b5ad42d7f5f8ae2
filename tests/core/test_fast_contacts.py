"""The contacts' fast path (schemas/fast.py) against pydantic, its referee: it never accepts
what Contact refuses, never returns another value than Contact's (types, field order and the
fields given included), and the decoders that use it answer exactly as plain pydantic does,
errors included. The encoders write model_dump_json's bytes."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json

from schemas import (
    Actor,
    AddRecipients,
    AudienceReport,
    Contact,
    RecipientsAdded,
    decode_event,
)
from schemas.codec import _EVENTS
from schemas.fast import (
    _plain_text,
    contact_json,
    contact_json_spans,
    contacts_json,
    dump_json,
    fast_chunk_record,
    fast_contacts,
    input_contact,
)
from schemas.text import STORED
from schemas.values import ZONE_NAMES
from schemas.wire import _INPUT, CommandRecord, decode_input

_CONTACTS: TypeAdapter[tuple[Contact, ...]] = TypeAdapter(tuple[Contact, ...])
_T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
_ACTOR = Actor(kind="service", account_id="acct-a", service="api")

# Text of every kind: control characters (NUL, TAB, CR, LF, DEL, NEL, U+2028), lone
# surrogates, spaces, Unicode letters.
_chars = st.characters(codec=None, categories=None) | st.sampled_from(
    ["\x00", "\t", "\n", "\r", "\x1f", "\x7f", "\x85", "\u2028", " ", "\ud800", "é", "ü", "@"]
)
_text = st.text(_chars, max_size=12)
_word = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)
_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
_local = st.from_regex(r"[!#-'*+\-./0-9=?A-Z^-~]{1,10}", fullmatch=True) | st.sampled_from(
    ["zoë", "a b", 'a"b', "a\x00b", "x" * 64, "x" * 65, "(a)"]
)
_domain = st.builds(
    lambda labels, tld: ".".join([*labels, tld]), st.lists(_label, min_size=1, max_size=3), _label
) | st.sampled_from(["bücher.example", "example", "-a.example", "a..example", "x" * 250 + ".org"])
_email = (
    st.builds(
        lambda pre, local, domain, post: f"{pre}{local}@{domain}{post}",
        st.sampled_from(["", "", " ", "  ", "\t"]),
        _local,
        _domain,
        st.sampled_from(["", "", " ", "\n", "\r\n", "\x00"]),
    )
    | _text
    | st.emails()
)
_zone = st.none() | st.sampled_from(
    [*ZONE_NAMES[::40], "UTC", "utc", "Europe/London ", "posix/Europe/London", "localtime", ""]
)
_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.floats()
    | _word
    | _text
)
_value = _scalar | st.lists(_scalar, max_size=2) | st.dictionaries(_text, _scalar, max_size=2)
_attributes = st.dictionaries(_word | _text, _value, max_size=4)
_id = _word | _text | st.sampled_from(["c1", "x" * 200, "x" * 201]) | st.integers()


class _Text(str):
    """A str subclass: not one of the fast path's exact types."""


def _added(contacts: Any) -> RecipientsAdded:
    """A RecipientsAdded of these contacts (the tests' fixed ids, time and actor)."""
    return RecipientsAdded(
        event_id=uuid.UUID(int=3),
        message_id=uuid.UUID(int=2),
        sequence=2,
        occurred_at=_T0,
        correlation_id=uuid.UUID(int=1),
        causation_id=uuid.UUID(int=1),
        actor=_ACTOR,
        contacts=contacts,
    )


def _shape(value: Any) -> Any:
    """A value's exact form: types, order, and floats by repr (NaN equals NaN here)."""
    if isinstance(value, BaseModel):
        return (
            type(value).__name__,
            _shape(value.__dict__),
            sorted(value.__pydantic_fields_set__),
            value.__pydantic_extra__,
            value.__pydantic_private__,
        )
    if isinstance(value, dict):
        return ("dict", [(_shape(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_shape(v) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def _pydantic(raws: Any, stored: bool) -> tuple[Contact, ...] | ValidationError:
    try:
        return _CONTACTS.validate_python(raws, context=STORED if stored else None)
    except ValidationError as error:
        return error


@st.composite
def _contact_dict(draw: st.DrawFn) -> Any:
    raw: dict[Any, Any] = {"contact_id": draw(_id), "email": draw(_email)}
    if draw(st.booleans()):
        raw["time_zone"] = draw(_zone)
    if draw(st.booleans()):
        raw["attributes"] = draw(_attributes)
    if draw(st.integers(0, 9)) == 0:
        raw[draw(st.sampled_from(["extra", "contact_id", "time_zone"]))] = draw(_scalar)
    if draw(st.integers(0, 9)) == 0:
        del raw[draw(st.sampled_from(["contact_id", "email"]))]
    return raw if draw(st.integers(0, 19)) else draw(st.sampled_from([None, [], "c1", 3]))


_PLAIN = {
    "contact_id": "c1",
    "email": "ada@example.org",
    "time_zone": "Europe/London",
    "attributes": {"first_name": "Ada", "n": 3, "f": 1.5, "b": True, "none": None},
}


@given(st.lists(_contact_dict(), min_size=1, max_size=3), st.booleans())
@example([_PLAIN], False)
@example([_PLAIN], True)
@example([{**_PLAIN, "attributes": {"b": True, "i": 1, "f": 1.0, "z": 0}}], False)
@example([{**_PLAIN, "email": " ada@example.org"}], False)
@example([{**_PLAIN, "email": "ada@example.org\n"}], True)
@example([{**_PLAIN, "contact_id": "a\x00b"}], True)
@example([{**_PLAIN, "attributes": {"k": "a\x00b"}}], True)
@example([{**_PLAIN, "attributes": {"k": float("nan"), "j": float("inf"), "h": 2**70}}], False)
@example([{**_PLAIN, "contact_id": _Text("c1"), "attributes": {_Text("k"): _Text("v")}}], False)
def test_the_fast_path_accepts_only_what_pydantic_accepts_and_returns_the_same(
    raws: list[Any], stored: bool
) -> None:
    fast = fast_contacts(raws, stored=stored)
    referee = _pydantic(raws, stored)
    if fast is not None:
        assert not isinstance(referee, ValidationError), referee
        assert _shape(fast) == _shape(referee)


@given(_id, _email, _zone, _attributes)
@example("c1", "ada@example.org", "Europe/London", {"first_name": "Ada"})
@example("c1", "ada@example.org", None, {})
@example("c1", "zoë@bücher.example", None, {})
@example("c\x001", "ada@example.org", None, {})
@example("c1", "ada@example.org", "Mars/Olympus", {})
@example("c1", "ada@example.org", None, {"a\nb": "x"})
@example("c1", "ada@example.org", None, {"a": "x\x00"})
@example("c1", "ada@example.org", None, {f"k{i}": "v" for i in range(101)})
def test_a_csv_row_s_fast_contact_is_pydantic_s(
    contact_id: Any, email: Any, zone: Any, attributes: Any
) -> None:
    fast = input_contact(contact_id, email, zone, attributes)
    try:
        referee: Contact | None = Contact(
            contact_id=contact_id, email=email, time_zone=zone, attributes=attributes
        )
    except ValidationError:
        referee = None
    if fast is not None:
        assert referee is not None
        assert _shape(fast) == _shape(referee)


@pytest.mark.parametrize("stored", [False, True])
def test_the_plain_cases_take_the_fast_path(stored: bool) -> None:
    # Not vacuous: the rows of an import (the benchmark's) are built by the fast path.
    raws = [
        {"contact_id": f"c{i}", "email": f"person{i}@example.org", "attributes": {"p": "gold"}}
        for i in range(100)
    ] + [_PLAIN, {"contact_id": "x", "email": "a.b+tag@sub.example.co.uk", "time_zone": None}]
    fast = fast_contacts(raws, stored=stored)
    assert fast is not None
    assert _shape(fast) == _shape(_CONTACTS.validate_python(raws))
    assert input_contact("c1", "ada@example.org", "Asia/Tokyo", {"a": "b"}) is not None


@pytest.mark.parametrize(
    "raw",
    [
        {**_PLAIN, "email": "zoë@example.org"},  # Unicode: Contact's own path
        {**_PLAIN, "email": " ada@example.org "},  # spaces to strip
        {**_PLAIN, "extra": 1},  # Contact refuses it, with its own error
        {**_PLAIN, "contact_id": ""},
        {**_PLAIN, "time_zone": "Mars/Olympus"},
        {**_PLAIN, "attributes": {"k": [1]}},
    ],
)
def test_what_is_not_plain_goes_to_pydantic(raw: dict[str, Any]) -> None:
    assert fast_contacts([raw], stored=False) is None


def _record(contacts: list[Any], *, ascii_only: bool = True) -> bytes:
    command = {
        "type": "AddRecipients",
        "schema_version": 1,
        "command_id": str(uuid.UUID(int=1)),
        "message_id": str(uuid.UUID(int=2)),
        "contacts": contacts,
    }
    record = {
        "type": "CommandRecord",
        "schema_version": 1,
        "command": command,
        "actor": {"kind": "service", "account_id": "acct-a", "service": "api"},
        "issued_at": "2026-12-01T09:00:00Z",
    }
    # A lone surrogate written raw (ascii_only False) becomes bytes that are not UTF-8: a record
    # the processor can be handed too.
    return json.dumps(
        record, allow_nan=True, separators=(",", ":"), ensure_ascii=ascii_only
    ).encode("utf-8", "surrogatepass")


def _outcome(decode: Any, value: bytes) -> Any:
    try:
        return _shape(decode(value))
    except ValueError as error:  # a ValidationError: its text names every error's place,
        return ("error", type(error).__name__, str(error))  # message and input


@given(st.lists(_contact_dict(), min_size=0, max_size=3), st.booleans())
@example([_PLAIN], True)
@example([{**_PLAIN, "contact_id": "a\nb"}, _PLAIN], True)
# Raw in the JSON text (not escaped): DEL, NEL, U+2028 where the one-line rule refuses them,
# DEL in a value (the text rule allows it), non-ASCII text and addresses.
@example([{**_PLAIN, "contact_id": "a\x7fb"}], True)
@example([{**_PLAIN, "attributes": {"a\x7fb": "x"}}], True)
@example([{**_PLAIN, "attributes": {"k": "a\x7fb"}}], True)
@example([{**_PLAIN, "contact_id": "a\x85b"}], False)
@example([{**_PLAIN, "attributes": {"a\u2028b": "x"}}], False)
@example([{**_PLAIN, "attributes": {"k": "a\u2029b\x85"}}], False)
@example([{**_PLAIN, "contact_id": "zoë", "email": "zoë@bücher.example"}], False)
@example([{**_PLAIN, "email": "\ud800"}], False)
def test_the_processor_s_edge_decodes_as_plain_pydantic(
    contacts: list[Any], ascii_only: bool
) -> None:
    value = _record(contacts, ascii_only=ascii_only)
    assert _outcome(decode_input, value) == _outcome(_plain_decode_input, value)


_ENVELOPE = _record([_PLAIN, {**_PLAIN, "contact_id": "c2", "email": "b@example.org"}])


@pytest.mark.parametrize(
    "value",
    [
        _ENVELOPE,
        # the rest of the record read as pydantic's parser reads it: big ints, NaN, Infinity,
        # duplicate keys (the last one counts), unknown keys at each level, keys in any order
        _ENVELOPE.replace(
            b'"schema_version":1,"command"', b'"schema_version":12345678901234567890123,"command"'
        ),
        _ENVELOPE.replace(b'"issued_at"', b'"x":NaN,"y":-Infinity,"z":1e400,"issued_at"'),
        _ENVELOPE.replace(
            b'"type":"AddRecipients",',
            b'"type":"AddRecipients","type":"AddRecipients","extra":[1,{"a":null}],',
        ),
        _ENVELOPE.replace(
            b'{"type":"CommandRecord",',
            b'{"issued_at":"2026-12-01T09:00:00Z","type":"CommandRecord",',
        ),
        _ENVELOPE.replace(b'"type":"CommandRecord"', b'"type":"CommandRecord","type":"Tick"'),
        _ENVELOPE.replace(b'"type":"AddRecipients"', b'"type":"RemoveRecipients"'),
        _ENVELOPE.replace(b'"account_id":"acct-a"', b'"account_id":"acct\\u0000a"'),
        _ENVELOPE.replace(b'"contacts":[', b'"contacts":{"a":[').replace(b"}]}", b"}]}}"),
        _ENVELOPE.replace(b'"contacts":[', b'"contacts":[1,'),
        _ENVELOPE.replace(b'"time_zone":null', b'"time_zone":"Nowhere/City"', 1),
        _ENVELOPE.replace(b'"actor":', b'"command":"AddRecipients","actor":'),
        _ENVELOPE[:-1],
        _ENVELOPE + b"x",
        b'"AddRecipients"',
        b'["AddRecipients"]',
    ],
)
def test_a_chunk_parsed_and_checked_in_one_pass_decodes_as_plain_pydantic(value: bytes) -> None:
    assert _outcome(decode_input, value) == _outcome(_plain_decode_input, value)


def test_a_plain_chunk_takes_the_one_pass_path() -> None:
    fast = fast_chunk_record(_ENVELOPE)
    assert fast is not None
    assert _plain_text(_ENVELOPE)  # and without the text rules' patterns
    for unplain in ("a\x7fb", "a\\nb", "zoë"):  # DEL, an escape, not ASCII
        assert not _plain_text(_record([{**_PLAIN, "contact_id": unplain}], ascii_only=False))
    assert all(isinstance(c, Contact) for c in fast["command"]["contacts"])
    assert (
        fast_chunk_record(_ENVELOPE.replace(b'"contact_id":"c2"', b'"contact_id":" c2\\n"')) is None
    )


def _plain_decode_input(value: bytes) -> Any:
    """decode_input before the fast path."""
    try:
        raw = from_json(value)
    except (ValueError, TypeError):
        return _INPUT.validate_json(value)
    return _INPUT.validate_python(raw)


@given(st.lists(_contact_dict(), min_size=0, max_size=3))
@example([_PLAIN])
@example([{**_PLAIN, "contact_id": "a\x00b", "attributes": {"k": "\x00"}}])
def test_the_stored_decode_is_plain_pydantic_s(contacts: list[Any]) -> None:
    event = {
        "type": "RecipientsAdded",
        "schema_version": 1,
        "event_id": str(uuid.UUID(int=3)),
        "message_id": str(uuid.UUID(int=2)),
        "sequence": 2,
        "occurred_at": "2026-12-01T09:00:00Z",
        "correlation_id": str(uuid.UUID(int=1)),
        "causation_id": str(uuid.UUID(int=1)),
        "actor": {"kind": "service", "account_id": "acct-a", "service": "api"},
        "contacts": contacts,
    }
    value = json.dumps(event, allow_nan=True, separators=(",", ":")).encode()
    assert _outcome(decode_event, value) == _outcome(
        lambda v: _EVENTS.validate_python(from_json(v), context=STORED), value
    )


_valid = st.builds(
    lambda cid, attrs: Contact.model_validate(
        {"contact_id": cid, "email": "a@example.org", "attributes": attrs}, context=STORED
    ),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10),
    st.dictionaries(
        st.text(st.characters(exclude_categories=("Cs",)), max_size=5),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
        max_size=4,
    ),
)


@given(st.lists(_valid, min_size=1, max_size=4))
@example([Contact(contact_id="c", email="a@example.org", attributes={"big": 2**70})])
@example(
    [  # the text that separates two contacts in contacts_json's array, inside a contact
        Contact(
            contact_id='},{"contact_id":"x',
            email="a@example.org",
            attributes={'},{"contact_id":': '"},{"contact_id":"', "contact_id": "y"},
        ),
        Contact(contact_id="d", email="b@example.org"),
    ]
)
@example(
    [
        Contact.model_validate(
            {
                "contact_id": "c\x00\u2028",
                "email": "zoë@bücher.example",
                "attributes": {"f": 1e16, "g": math.nan, "h": -0.0, "i": 5e-324, "t": "\t\x7f"},
            },
            context=STORED,
        )
    ]
)
def test_the_encoders_write_pydantic_s_bytes(contacts: list[Contact]) -> None:
    chunk = tuple(contacts)
    for contact in chunk:
        assert contact_json(contact) == contact.model_dump_json().encode()
    assert contacts_json(chunk) == _CONTACTS.dump_json(chunk)
    data, starts, lengths = contact_json_spans(chunk)
    assert [data[s : s + n] for s, n in zip(starts, lengths, strict=True)] == [
        c.model_dump_json().encode() for c in chunk
    ]
    command = AddRecipients.model_construct(
        type="AddRecipients",
        schema_version=1,
        command_id=uuid.UUID(int=1),
        message_id=uuid.UUID(int=2),
        contacts=chunk,
    )
    record = CommandRecord.model_construct(
        type="CommandRecord",
        schema_version=1,
        command=command,
        actor=_ACTOR,
        issued_at=_T0,
        correlation_id=None,
        default_time_zone="UTC",
    )
    event = _added(chunk)
    # A report (what the core writes beside the contacts), with text only a stored one holds.
    report = AudienceReport.model_validate(
        {
            "added": [c.contact_id for c in chunk],
            "refused": [{"contact_id": "x\u2028", "reason": "bad \x00 \u00e9"}],
        },
        context=STORED,
    )
    reported = event.model_copy(update={"report": report})
    for model in (command, record, event, reported):
        assert dump_json(model) == model.model_dump_json().encode()


def test_records_as_written_take_the_fast_path_and_decode_the_same() -> None:
    contacts = tuple(
        Contact(contact_id=f"c{i}", email=f"p{i}@example.org", time_zone=zone, attributes=attrs)
        for i, (zone, attrs) in enumerate(
            [(None, {}), ("Asia/Tokyo", {"a": "b", "n": 1, "f": 0.5, "t": True, "z": None})]
        )
    )
    record = CommandRecord(
        command=AddRecipients(
            command_id=uuid.UUID(int=1), message_id=uuid.UUID(int=2), contacts=contacts
        ),
        actor=_ACTOR,
        issued_at=_T0,
    )
    value = record.model_dump_json().encode()
    assert fast_contacts(from_json(value)["command"]["contacts"], stored=False) is not None
    assert _outcome(decode_input, value) == _outcome(_plain_decode_input, value)
    event = _added(contacts)
    stored = event.model_dump_json().encode()
    assert fast_contacts(from_json(stored)["contacts"], stored=True) is not None
    assert _shape(decode_event(stored)) == _shape(
        _EVENTS.validate_python(from_json(stored), context=STORED)
    )
