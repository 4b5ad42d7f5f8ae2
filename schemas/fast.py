"""The contacts' fast path on the wire, with pydantic as the referee (docs/api.md, "Import speed").

An import moves every contact through pydantic four times (the API's CSV row, the processor's
edge, the event it writes, the projection worker's stored decode) and encodes it as JSON three
times. Most of the decode's cost is the Python validators of :class:`~schemas.values.Contact`
(`_check_email`, `_check_attributes`, the text rules), called once per contact from pydantic's
Rust core. This module checks contacts against a stricter copy of Contact's schema that pydantic
runs without calling Python at all (plain types, lengths, regular expressions, the zone names),
and builds the Contacts from what it returns. When the strict schema refuses anything, the
answer is ``None``: "not sure", and the caller validates with :class:`Contact` itself as before,
so every refusal, its message and its field path stay pydantic's. The fast path never refuses
anything on its own; it only accepts what is plainly valid. tests/core/test_fast_contacts.py
holds the property tests: it never accepts what Contact refuses, never returns another value
than Contact's, and falls back for inputs outside its plain cases.

The plain cases (a subset of Contact's rules, input or stored alike):

* exact types: ``contact_id``, ``email`` and a ``time_zone`` are ``str`` (a ``time_zone`` may
  be None), ``attributes`` a ``dict`` of ``str`` keys to ``str``, ``bool``, ``int``, ``float``
  or None, at most 100 of them; no other key (extra keys are Contact's to refuse);
* ``contact_id`` of 1 to 200 characters; ``email`` an ASCII address of at most 254 characters
  without surrounding spaces, matching the same expression as `_ASCII_INPUT` (so the address
  is returned as given, as `_check_email` returns it); ``time_zone`` one of tzdata's zones
  that loads (`is_valid_time_zone`, checked once per distinct zone of a chunk);
* input only: the one-line rule on the contact id and the attribute names, the text rule on
  text values (schemas/text.py, the same characters). Stored records skip them, as Contact does,
  and so does a command record whose JSON text cannot hold a character they refuse
  (:func:`_plain_text`).

Users: the processor's edge (:func:`fast_chunk_record`), the stored decode (schemas/codec.py),
the CSV import's rows (:func:`input_contact`) and the REST body of a chunk
(:func:`fast_input_contacts`, a ``WrapValidator`` of ``AddRecipientsBody.contacts``).

Anything else (an IDN or Unicode address, spaces to strip, a zone only the host's zoneinfo
knows, an int past 64 bits in an encode, a str subclass) takes Contact's own path.

Building: pydantic's `model-fields` validator returns a contact's field dict (in field order,
defaults filled) and the fields given; :func:`_built` makes the Contact from them as
``Contact.model_construct`` does (the same ``__dict__``, fields set, no extra, no private).
(A `model` schema of the Contact class itself cannot be used: pydantic reuses the class's own
prebuilt validator for it, Python validators and all.)

Encoding: :func:`dump_json` writes a record holding a chunk of contacts with orjson from the
contacts' own field dicts, byte for byte what ``model_dump_json`` writes (same field order,
compact separators, UTF-8 unescaped, the same escapes and float forms; the tests compare the
bytes), so the idempotency digests, the contact file and every reader see the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import accumulate
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError, ValidatorFunctionWrapHandler
from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

from schemas.text import ONE_LINE, TEXT
from schemas.values import ZONE_NAMES, Contact, is_valid_time_zone

__all__ = [
    "contact_json",
    "contact_json_spans",
    "contacts_json",
    "dump_json",
    "fast_chunk_record",
    "fast_contacts",
    "fast_input_contacts",
    "input_contact",
    "json_data",
]

#: `_ASCII_INPUT` without the surrounding spaces, as pydantic's (Rust) regular expressions
#: read it: the local part's class spelled out as the printable ASCII characters it allows.
_EMAIL = (
    r"^[!#-'*+\-./0-9=?A-Z^-~]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$"
)
_new = object.__new__
_set = object.__setattr__
_CONTACT_JSON = Contact.__pydantic_serializer__.to_json


def _fields(stored: bool) -> cs.ModelFieldsSchema:
    one_line = None if stored else ONE_LINE.pattern
    text = None if stored else TEXT.pattern
    value = cs.union_schema(
        [
            cs.str_schema(pattern=text, strict=True),
            cs.bool_schema(strict=True),
            cs.int_schema(strict=True),
            cs.float_schema(strict=True),
            cs.none_schema(),
        ],
        mode="left_to_right",
    )
    attributes = cs.dict_schema(
        cs.str_schema(pattern=one_line, strict=True), value, max_length=100, strict=True
    )
    zone = cs.nullable_schema(cs.literal_schema(list(ZONE_NAMES)), strict=True)
    return cs.model_fields_schema(
        {
            "contact_id": cs.model_field(
                cs.str_schema(min_length=1, max_length=200, pattern=one_line, strict=True)
            ),
            "email": cs.model_field(
                cs.str_schema(min_length=3, max_length=254, pattern=_EMAIL, strict=True)
            ),
            "time_zone": cs.model_field(cs.with_default_schema(zone, default=None)),
            "attributes": cs.model_field(cs.with_default_schema(attributes, default_factory=dict)),
        },
        extra_behavior="forbid",
    )


@cache
def _one(stored: bool) -> SchemaValidator:
    return SchemaValidator(_fields(stored))


@cache
def _many(stored: bool) -> SchemaValidator:
    return SchemaValidator(cs.list_schema(_fields(stored), strict=True))


def _built(fields: dict[str, Any], given: set[str]) -> Contact:
    """The Contact of checked field values, as ``model_construct`` makes it (without its
    generic loop over the fields)."""
    contact: Contact = _new(Contact)
    _set(contact, "__dict__", fields)
    _set(contact, "__pydantic_fields_set__", given)
    _set(contact, "__pydantic_extra__", None)
    _set(contact, "__pydantic_private__", None)
    return contact


def _zones_load(zones: Iterable[str | None]) -> bool:
    return all(zone is None or is_valid_time_zone(zone) for zone in zones)


def input_contact(
    contact_id: str, email: str, time_zone: str | None, attributes: dict[str, Any]
) -> Contact | None:
    """``Contact(contact_id=..., email=..., time_zone=..., attributes=...)`` when the values
    are plainly valid (input rules); None: "not sure", validate them with Contact."""
    try:
        fields, _, given = _one(False).validate_python(
            {
                "contact_id": contact_id,
                "email": email,
                "time_zone": time_zone,
                "attributes": attributes,
            }
        )
    except ValidationError:
        return None
    if time_zone is not None and not is_valid_time_zone(time_zone):
        return None
    return _built(fields, given)


def fast_contacts(raws: Any, *, stored: bool) -> tuple[Contact, ...] | None:
    """The Contacts that ``TypeAdapter(tuple[Contact, ...])`` validates from a list of contact
    dicts (as JSON decodes them), all of them, or None when any one is not plainly valid (then
    validate the whole with pydantic, whose errors name the index as before). ``stored``: the
    rules of a record read back from the log (:data:`schemas.text.STORED`), else input's."""
    try:
        checked = _many(stored).validate_python(raws)
    except ValidationError:
        return None
    return _built_all(checked)


def fast_input_contacts(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A ``WrapValidator`` of a list of contacts in a request body (input rules): when
    :func:`fast_contacts` takes them all, pydantic is handed the Contacts it built (instances,
    which it passes as they are; the list's own constraints stay pydantic's), else the dicts
    as they came, and every refusal is pydantic's own, with its message and field path."""
    contacts = fast_contacts(value, stored=False)
    return handler(value if contacts is None else list(contacts))


def _built_all(checked: list[tuple[dict[str, Any], Any, set[str]]]) -> tuple[Contact, ...] | None:
    """The Contacts of the strict schema's output, or None when a zone does not load."""
    if not _zones_load({fields["time_zone"] for fields, _, _ in checked}):
        return None
    return tuple([_built(fields, given) for fields, _, given in checked])


@cache
def _record_of_chunk(plain_text: bool) -> SchemaValidator:
    """A record's JSON with its ``command.contacts`` checked as :func:`fast_contacts` checks
    them (input rules) while it is parsed, and everything else taken as pydantic's JSON parser
    reads it (``from_json``'s values). ``plain_text``: the record's text holds no character
    the text rules refuse (:func:`_plain_text`), so their patterns are left out (the schema of
    stored records, which skips them)."""
    command = cs.typed_dict_schema(
        {
            "contacts": cs.typed_dict_field(
                cs.list_schema(_fields(plain_text), strict=True), required=False
            )
        },
        extra_behavior="allow",
    )
    return SchemaValidator(
        cs.typed_dict_schema(
            {"command": cs.typed_dict_field(command, required=False)}, extra_behavior="allow"
        )
    )


def _plain_text(value: bytes) -> bool:
    """True when no string in the JSON text ``value`` can hold a character that the one-line
    rule refuses (and so none the text rule refuses, a subset): ASCII, no escape (no
    backslash), no DEL. A raw control character is not JSON inside a string (the parser
    refuses it) and only whitespace between tokens; NEL, U+2028 and U+2029 are not ASCII.
    Three scans of the bytes in C, where the patterns cost ~1.2 us a contact."""
    return value.isascii() and b"\\" not in value and b"\x7f" not in value


def fast_chunk_record(value: bytes) -> dict[str, Any] | None:
    """A ``CommandRecord`` of an ``AddRecipients`` (JSON bytes) parsed with its contacts
    checked and built in the same pass: the record's dict (as ``from_json`` reads it) with the
    Contacts in place of the contact dicts, or None ("not sure": parse and validate it as
    before) when it is not such a record or any contact is not plainly valid (input rules)."""
    try:
        raw = _record_of_chunk(_plain_text(value)).validate_json(value)
    except ValidationError:
        return None
    command = raw.get("command")
    if (
        raw.get("type") != "CommandRecord"
        or not isinstance(command, dict)
        or command.get("type") != "AddRecipients"
        or "contacts" not in command
    ):
        return None
    contacts = _built_all(command["contacts"])
    if contacts is None:
        return None
    return {**raw, "command": {**command, "contacts": contacts}}


def contact_json(contact: Contact) -> bytes:
    """``contact.model_dump_json().encode()``: pydantic's serializer called directly (for one
    small contact its Python wrapper and the str round trip cost more than the serializing;
    orjson, per contact, measured slower still: docs/api.md "Import speed")."""
    return _CONTACT_JSON(contact)


def contacts_json(contacts: Sequence[Contact]) -> bytes:
    """``TypeAdapter(tuple[Contact, ...]).dump_json(contacts)``, by orjson."""
    try:
        return orjson.dumps([c.__dict__ for c in contacts])
    except TypeError:
        return b"[" + b",".join(c.model_dump_json().encode() for c in contacts) + b"]"


#: Where one contact's JSON ends and the next one's begins in :func:`contacts_json`'s array. A
#: contact's object opens with its ``contact_id`` (the first field), its attribute values are
#: scalars (no nested object closes inside it), and a ``"`` inside a JSON string is escaped: the
#: bytes ``},{"contact_id":`` occur nowhere else.
_BETWEEN = re.compile(rb'\},\{"contact_id":')


def contact_json_spans(contacts: Sequence[Contact]) -> tuple[bytes, list[int], list[int]]:
    """Each contact's :func:`contact_json`, from one :func:`contacts_json` of them all (one
    call instead of one per contact): the bytes of the contacts joined by commas, and where each
    contact's JSON starts in them and how long it is."""
    if not contacts:
        return b"", [], []
    body = contacts_json(contacts)[1:-1]
    starts = [0]
    starts += [match.start() + 2 for match in _BETWEEN.finditer(body)]
    if len(starts) != len(contacts):  # cannot happen (see _BETWEEN): each contact on its own
        parts = [contact_json(contact) for contact in contacts]
        starts = list(accumulate([len(part) + 1 for part in parts[:-1]], initial=0))
        return b",".join(parts), starts, [len(part) for part in parts]
    ends = [*starts[1:], len(body) + 1]
    lengths = [end - start - 1 for start, end in zip(starts, ends, strict=True)]
    return body, starts, lengths


def _holder(record: BaseModel) -> tuple[BaseModel, BaseModel | None]:
    """The model holding a chunk of contacts in ``record`` (itself, or its ``command``), and
    the record around it."""
    if isinstance(record.__dict__.get("contacts"), tuple | list):
        return record, None
    inner = record.__dict__.get("command")
    if isinstance(inner, BaseModel) and isinstance(inner.__dict__.get("contacts"), tuple | list):
        return inner, record
    return record, None


def _data(record: BaseModel, holder: BaseModel, outer: BaseModel | None, contacts: Any) -> Any:
    """``record.model_dump(mode="json")`` with its chunk of ``contacts`` (held by ``holder``,
    inside ``outer`` or the record itself) as their own field dicts."""
    listed = [c.__dict__ for c in contacts]
    envelope = holder.model_copy(update={"contacts": type(contacts)()})
    if outer is None:
        data = envelope.model_dump(mode="json")
        data["contacts"] = listed
    else:
        data = outer.model_copy(update={"command": envelope}).model_dump(mode="json")
        data["command"]["contacts"] = listed
    return data


def json_data(record: BaseModel) -> Any:
    """What orjson writes as the bytes it writes of ``record.model_dump(mode="json")``, at a
    fraction of the cost when ``record`` (or its ``command``) holds a chunk of Contacts: their
    own field dicts in place of their dump (plain JSON values; a float that is not finite is
    ``null`` either way). orjson raises TypeError for an int past 64 bits in them: the caller
    then dumps the record itself. Without a chunk of Contacts: the record's dump."""
    holder, outer = _holder(record)
    contacts = holder.__dict__.get("contacts")
    if not contacts or not all(type(c) is Contact for c in contacts):
        return record.model_dump(mode="json")
    return _data(record, holder, outer, contacts)


def dump_json(record: BaseModel) -> bytes:
    """``record.model_dump_json().encode()``, the same bytes; a record carrying a chunk of
    contacts (``RecipientsAdded``, ``AddRecipients``, a ``CommandRecord`` of one) has its
    envelope dumped by pydantic and its contacts by orjson."""
    holder, outer = _holder(record)
    contacts = holder.__dict__.get("contacts")
    if not isinstance(contacts, tuple) or not contacts:
        return record.model_dump_json().encode()
    try:
        return orjson.dumps(_data(record, holder, outer, contacts))
    except TypeError:
        return record.model_dump_json().encode()
