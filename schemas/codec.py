"""One decoder for every command and event, with upcasting of old versions.

Old records are rewritten on the raw dict, before validation, by a chain of upcasters registered
per ``(type, schema_version)``; each produces the next version. So a version-1 ``DraftCreated``
written years ago validates as today's version 2, and the models only ever describe the current
shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from schemas.commands import Command
from schemas.events import Event
from schemas.fast import dump_json, fast_contacts
from schemas.text import STORED

__all__ = [
    "UPCASTERS",
    "UnknownRecordVersionError",
    "decode_command",
    "decode_event",
    "encode",
    "upcast",
]

RawRecord: TypeAlias = dict[str, Any]
Upcaster: TypeAlias = Callable[[RawRecord], RawRecord]


class UnknownRecordVersionError(ValueError):
    """Raised when a raw record has no ``type`` or no integer ``schema_version``."""


class MalformedOldRecordError(ValueError):
    """Raised when a record of an old version lacks what its upcaster needs (a field missing
    or of the wrong kind): a bad record, dead-lettered like any other that does not decode."""


def _draft_created_v1_to_v2(raw: RawRecord) -> RawRecord:
    """v1 kept content flat (name, from_address, subject, body) and the mode as ``delivery_mode``.

    v2 nests them as ``content`` and ``plan``; plan settings v1 did not have take their defaults.
    """
    out = {
        k: v
        for k, v in raw.items()
        if k not in {"name", "from_address", "subject", "body", "delivery_mode"}
    }
    out["content"] = {
        "name": raw["name"],
        "from_address": raw["from_address"],
        "subject": raw["subject"],
        "body": raw["body"],
    }
    # No in-flight window: v1 had none, and the default of today must not change its meaning.
    out["plan"] = {"mode": raw.get("delivery_mode", "fixed"), "max_in_flight": None}
    out["schema_version"] = 2
    return out


#: ``(type, version) -> function`` returning the record at ``version + 1``.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("DraftCreated", 1): _draft_created_v1_to_v2,
}

_EVENTS: TypeAdapter[Event] = TypeAdapter(Event)
_COMMANDS: TypeAdapter[Command] = TypeAdapter(Command)


def _raw(record: bytes | str | Mapping[str, Any]) -> RawRecord:
    if isinstance(record, bytes | str):
        parsed = from_json(record)
        if not isinstance(parsed, dict):
            raise UnknownRecordVersionError("a record is a JSON object")
        return parsed
    return dict(record)


def upcast(raw: RawRecord) -> RawRecord:
    """Apply registered upcasters until the record is at a version no upcaster starts from."""
    kind = raw.get("type")
    version = raw.get("schema_version")
    if not isinstance(kind, str) or not isinstance(version, int) or isinstance(version, bool):
        raise UnknownRecordVersionError("a record needs a string type and an int schema_version")
    while (step := UPCASTERS.get((kind, version))) is not None:
        try:
            raw = step(raw)
        except (KeyError, TypeError, AttributeError) as error:
            raise MalformedOldRecordError(
                f"{kind} version {version} cannot be read: {type(error).__name__}: {error}"
            ) from error
        version = raw["schema_version"]
    return raw


def decode_event(record: bytes | str | Mapping[str, Any]) -> Event:
    """Decode any event, of any version still readable, into today's model.

    Raises ``pydantic.ValidationError`` (or :class:`UnknownRecordVersionError`) for bad input;
    the shell sends such records to the dead-letter topic. Events are stored records: the text
    rules of inputs (schemas/text.py) do not apply, so an old history still decodes.
    """
    raw = upcast(_raw(record))
    if raw.get("type") == "RecipientsAdded":
        # The chunk's contacts checked by the fast path (schemas/fast.py): pydantic then takes
        # the built Contacts as they are and validates the rest; when any contact is not
        # plainly valid, pydantic validates them all (the errors are its own).
        contacts = fast_contacts(raw.get("contacts"), stored=True)
        if contacts is not None:
            try:
                return _EVENTS.validate_python({**raw, "contacts": contacts}, context=STORED)
            except ValidationError:
                pass  # refused for something else: the errors are those of the record as read
    return _EVENTS.validate_python(raw, context=STORED)


def decode_command(record: bytes | str | Mapping[str, Any]) -> Command:
    """Decode any command into its model (same upcasting rules as events). A command is input:
    the text rules (schemas/text.py) apply."""
    return _COMMANDS.validate_python(upcast(_raw(record)))


def encode(record: Event | Command) -> bytes:
    """Serialize a command or event as JSON bytes (the Kafka value)."""
    return dump_json(record)
