"""CSV files of contacts, parsed as they arrive: bytes in, contacts or invalid rows out.

Pure (no I/O): :class:`CsvContacts` is fed the bytes of a file in pieces of any size and yields
each row as soon as it is complete, with the line number it started on, so the server never
holds more of the file than one row. The header row names the columns: ``contact_id``, ``email``
and optionally ``time_zone`` (common spellings are recognised, or a mapping is given); every
other column becomes a merge attribute (an empty cell: the attribute is absent, so the
fallback applies). What it copes with: a UTF-8 BOM, Windows (CRLF) or old Mac line endings,
quoted fields holding commas, quotes and line breaks, bytes that are not UTF-8 (that row is
invalid, the others are not), a repeated contact id (the first row counts).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas import Contact
from schemas.fast import input_contact

__all__ = ["ALIASES", "ColumnMap", "CsvContacts", "InvalidRow", "ParsedRow", "map_columns"]

#: Header spellings recognised for each field (compared lower-cased, without spaces, _ or -).
ALIASES: dict[str, tuple[str, ...]] = {
    "contact_id": ("contactid", "id", "customerid", "subscriberid", "externalid"),
    "email": ("email", "emailaddress", "mail"),
    "time_zone": ("timezone", "tz", "zone"),
}

_SQUASH = re.compile(r"[\s_\-]+")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
#: The most bytes one row may hold: a row longer than this is refused (and the file with it),
#: so a file without line breaks cannot make the server hold it whole.
MAX_ROW_BYTES = 1_000_000


def _squash(name: str) -> str:
    return _SQUASH.sub("", name.strip().lower())


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Which column index holds each field; the rest are attributes (name by index)."""

    contact_id: int
    email: int
    time_zone: int | None
    attributes: tuple[tuple[int, str], ...]


class HeaderError(ValueError):
    """Raised when the header row does not name a contact id and an email column."""


def map_columns(header: list[str], mapping: Mapping[str, str] | None = None) -> ColumnMap:
    """The column map of a header row; ``mapping`` names the header of a field explicitly
    (``{"email": "E-Mail Address"}``), else the aliases are tried."""
    names = [h.strip() for h in header]
    found: dict[str, int] = {}
    for field, aliases in ALIASES.items():
        wanted = (mapping or {}).get(field)
        if wanted:
            if wanted.strip() not in names:
                raise HeaderError(f"the column {wanted!r} chosen for {field} is not in the header")
            found[field] = names.index(wanted.strip())
            continue
        for i, name in enumerate(names):
            if _squash(name) in (_squash(field), *aliases) and i not in found.values():
                found[field] = i
                break
    missing = [f for f in ("contact_id", "email") if f not in found]
    if missing:
        raise HeaderError(
            "the header names no column for " + " and ".join(missing) + f" (header: {names}); "
            "choose the columns to use"
        )
    used = set(found.values())
    # An export's own columns (mailctl_state...) are not merge data.
    attributes = tuple(
        (i, n)
        for i, n in enumerate(names)
        if i not in used and n and not n.lower().startswith("mailctl_")
    )
    return ColumnMap(found["contact_id"], found["email"], found.get("time_zone"), attributes)


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """A row that became a contact, with the line it started on (the header is line 1)."""

    line: int
    contact: Contact


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that did not, and why."""

    line: int
    contact_id: str | None
    reason: str


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = str(item["loc"][0]) if item.get("loc") else "row"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class CsvContacts:
    """Feed bytes with :meth:`feed`, then :meth:`finish`; each yields the rows completed.

    Each piece is decoded incrementally (bytes that are not UTF-8 are kept as surrogates, so the
    row holding them is reported, not the file refused); the text up to the last line end that
    is outside quotes is handed to the csv module at once, the rest waits for the next piece.
    """

    def __init__(self, mapping: Mapping[str, str] | None = None, *, remove: bool = False) -> None:
        self.mapping = dict(mapping or {})
        self.remove = remove  # a removal file needs only the contact id column
        self.columns: ColumnMap | None = None
        self.header: list[str] | None = None
        self.bytes_read = 0
        self.rows_read = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._text = ""
        self._line = 0  # physical lines handed to the csv module so far
        self._first = True
        self._mac: bool | None = None  # old Mac files end lines with a lone CR
        self._seen: set[str] = set()

    def feed(self, data: bytes) -> Iterator[ParsedRow | InvalidRow]:
        self.bytes_read += len(data)
        text = self._text + self._decoder.decode(data)
        if self._first and text:
            text = text.removeprefix("\ufeff")  # a BOM (decoded: it may span two pieces)
            self._first = False
        if self._mac is None and ("\n" in text or "\r" in text):
            self._mac = "\n" not in text and not text.endswith("\r")
        if self._mac:
            text = text.replace("\r", "\n")
        cut = self._complete(text)
        self._text = text[cut:]
        if len(self._text) > MAX_ROW_BYTES:
            raise HeaderError(f"a row is longer than {MAX_ROW_BYTES} characters: not a CSV")
        return self._parse(text[:cut])

    def finish(self) -> Iterator[ParsedRow | InvalidRow]:
        text = self._text + self._decoder.decode(b"", final=True)
        if self._mac:
            text = text.replace("\r", "\n")
        self._text = ""
        return self._parse(text)

    @staticmethod
    def _complete(text: str) -> int:
        """The length of the longest prefix of whole rows: up to a line end outside quotes."""
        end = text.rfind("\n") + 1
        if end == 0:
            return 0
        quotes = text.count('"', 0, end)
        while quotes % 2:
            # The last line end is inside a quoted field: step back a line (rare: quoted
            # line breaks), keeping the count of the quotes in the prefix.
            previous = text.rfind("\n", 0, end - 1) + 1
            quotes -= text.count('"', previous, end)
            end = previous
            if end == 0:
                return 0
        return end

    def _parse(self, text: str) -> Iterator[ParsedRow | InvalidRow]:
        if not text:
            return
        suspect = _NOT_UTF8.search(text) is not None
        reader = csv.reader(io.StringIO(text, newline=""), strict=False)
        base = self._line
        previous = 0
        try:
            for fields in reader:
                start = base + previous + 1
                previous = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                yield from self._row(start, fields, suspect)
        except csv.Error as error:
            yield InvalidRow(base + previous + 1, None, f"not a CSV row: {error}")
        self._line = base + reader.line_num

    def _row(self, line: int, fields: list[str], suspect: bool) -> Iterator[ParsedRow | InvalidRow]:
        if self.header is None:
            self.header = fields
            if self.remove:
                self.columns = _removal_columns(fields, self.mapping)
            else:
                self.columns = map_columns(fields, self.mapping)
            return
        self.rows_read += 1
        columns = self.columns
        assert columns is not None
        if suspect and any(_NOT_UTF8.search(f) for f in fields):
            cid = _cell(fields, columns.contact_id)
            yield InvalidRow(
                line,
                None if cid is None or _NOT_UTF8.search(cid) else cid,
                "the row is not valid UTF-8 text",
            )
            return
        width = len(fields)
        index = columns.contact_id
        cid = fields[index].strip() if index < width else ""
        if not cid:
            yield InvalidRow(line, None, "contact_id: missing")
            return
        if cid in self._seen:
            yield InvalidRow(line, cid, "duplicate contact id: an earlier row has it")
            return
        self._seen.add(cid)
        if self.remove:
            yield ParsedRow(line, Contact.model_construct(contact_id=cid, email="", attributes={}))
            return
        index = columns.email
        email = fields[index].strip() if index < width else ""
        if not email:
            yield InvalidRow(line, cid, "email: missing")
            return
        index_zone = columns.time_zone
        zone = fields[index_zone].strip() if index_zone is not None and index_zone < width else ""
        attributes: dict[str, Any] = {}
        for i, name in columns.attributes:
            if i >= width:
                continue
            value = fields[i].strip()
            if not value:
                continue
            if "\r" in value:
                value = value.replace("\r\n", "\n")  # a quoted line break reads as LF
            if name == "attributes" and value.startswith("{"):
                # An export's attributes column (JSON): its fields come back as they were.
                try:
                    loaded = json.loads(value)
                except ValueError:
                    loaded = None
                if isinstance(loaded, dict):
                    attributes.update(loaded)
                    continue
            attributes[name] = value
        # The fast path (schemas/fast.py) builds the Contact of a plainly valid row; any other
        # row is pydantic's, whose errors word the reason.
        contact = input_contact(cid, email, zone or None, attributes)
        if contact is None:
            try:
                contact = Contact(
                    contact_id=cid, email=email, time_zone=zone or None, attributes=attributes
                )
            except ValidationError as error:
                yield InvalidRow(line, cid, _reason(error))
                return
        yield ParsedRow(line, contact)


def _cell(fields: list[str], index: int | None) -> str | None:
    if index is None or index >= len(fields):
        return None
    return fields[index].strip()


def _removal_columns(header: list[str], mapping: Mapping[str, str]) -> ColumnMap:
    try:
        return map_columns(header, mapping)
    except HeaderError:
        # A removal file may hold only ids.
        names = [h.strip() for h in header]
        wanted = mapping.get("contact_id")
        if wanted and wanted in names:
            return ColumnMap(names.index(wanted), -1, None, ())
        for i, name in enumerate(names):
            if _squash(name) in ("contactid", *ALIASES["contact_id"]):
                return ColumnMap(i, -1, None, ())
        raise
