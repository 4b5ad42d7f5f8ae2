"""What characters a text field may hold (docs/api.md, "Text fields").

Two rules, applied by the shared schemas so that the REST API and the command topic refuse alike:

* **one line** (names, subjects, sender name and address, contact ids, emails, attribute keys,
  reasons, time zones, ids): no C0 control character (U+0000 to U+001F, so no NUL, TAB, CR or
  LF), no DEL (U+007F), no NEL (U+0085) and no line or paragraph separator (U+2028, U+2029).
  Every value that can reach a mail header is one line, so CR/LF never gets there from a field;
* **text** (bodies, attribute values): TAB, LF and CR are allowed, every other C0 control
  character is not (NUL cannot be stored in Postgres text, and none of them belongs in a mail).

The rules apply to *input*: what a command or an API body carries. Records read back from the
log were accepted under the rules of their day and must still decode and rebuild, so a decoder
of stored records validates with the context :data:`STORED`, under which these checks pass
everything through (a history holding a NUL still folds; delivery fails such a send cleanly).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "ONE_LINE",
    "STORED",
    "TEXT",
    "UnsafeTextError",
    "breaks_one_line",
    "breaks_text",
    "check_one_line",
    "check_text",
    "first_unsafe",
    "is_stored",
    "one_line",
]

_NOT_ONE_LINE: Final = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_NOT_TEXT: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")

#: The bare tests (a match, or None), for the hot paths: a chunk of 10,000 contacts runs them
#: tens of thousands of times, and :func:`first_unsafe` is only needed to word a refusal.
breaks_one_line: Final = _NOT_ONE_LINE.search
breaks_text: Final = _NOT_TEXT.search

#: The validation context of records read back from the log (events, sends, stored content).
STORED: Final[Mapping[str, Any]] = {"stored": True}


class UnsafeTextError(ValueError):
    """Raised when a text value holds a character its field does not allow."""


def is_stored(info: ValidationInfo | None) -> bool:
    """True when validating a record read back from the log (the :data:`STORED` context)."""
    # On every text field of every contact: kept to an identity test in the common cases.
    context = None if info is None else info.context
    if context is None:
        return False
    return context is STORED or (isinstance(context, dict) and context.get("stored") is True)


def _name(char: str) -> str:
    names = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x7f": "DEL", "\x85": "NEL"}
    known = names.get(char)
    return known if known is not None else unicodedata.name(char, "control character")


def first_unsafe(value: str, *, multiline: bool) -> str | None:
    """Why ``value`` breaks its rule (naming the first bad character and where), or None."""
    found = (_NOT_TEXT if multiline else _NOT_ONE_LINE).search(value)
    if found is None:
        return None
    char = found.group()
    rule = (
        "may hold TAB, LF and CR but no other control character"
        if multiline
        else "must be one line without control characters"
    )
    return f"{rule} (found U+{ord(char):04X} {_name(char)} at position {found.start()})"


def check_one_line(value: str, info: ValidationInfo) -> str:
    """The one-line rule as a pydantic validator (skipped for stored records)."""
    if breaks_one_line(value) is not None and not is_stored(info):
        raise UnsafeTextError(first_unsafe(value, multiline=False))
    return value


def check_text(value: str, info: ValidationInfo) -> str:
    """The text rule as a pydantic validator (skipped for stored records)."""
    if breaks_text(value) is not None and not is_stored(info):
        raise UnsafeTextError(first_unsafe(value, multiline=True))
    return value


def one_line(value: str) -> str:
    """``value`` with every character the one-line rule refuses replaced by a space: for text the
    service writes itself from what others said (an SMTP server's multi-line reply)."""
    return _NOT_ONE_LINE.sub(" ", value)


@dataclass(frozen=True)
class TextRule:
    """Annotated metadata applying a text rule after the type's own checks, and declaring it in
    the JSON Schema as a `pattern` (so the OpenAPI document and schemas/json say what the API
    refuses, and a fuzzer generates what it accepts)."""

    check: Callable[[str, ValidationInfo], str]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        found = handler(schema)
        found["pattern"] = self.pattern
        return found


#: Annotated metadata applying the rules, e.g. ``Annotated[str, Field(...), ONE_LINE]``.
ONE_LINE: Final = TextRule(check_one_line, "^[^\\u0000-\\u001f\\u007f\\u0085\\u2028\\u2029]*$")
TEXT: Final = TextRule(check_text, "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f]*$")
