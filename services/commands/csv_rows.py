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

import csv
import json
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas import Contact

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
    """Feed bytes with :meth:`feed`, then :meth:`finish`; each yields the rows completed."""

    def __init__(self, mapping: Mapping[str, str] | None = None, *, remove: bool = False) -> None:
        self.mapping = dict(mapping or {})
        self.remove = remove  # a removal file needs only the contact id column
        self.columns: ColumnMap | None = None
        self.header: list[str] | None = None
        self.bytes_read = 0
        self.rows_read = 0
        self._pending = b""
        self._lines: deque[str] = deque()
        self._reader = csv.reader(self._take_lines(), strict=False)
        self._physical = 0  # physical lines handed to the csv reader
        self._first = True
        self._seen: set[str] = set()
        self._done = False

    def _take_lines(self) -> Iterator[str]:
        while True:
            while self._lines:
                self._physical += 1
                yield self._lines.popleft()
            if self._done:
                return
            # Nothing more fed yet: the outer loop stops before asking (see _rows).
            yield ""  # pragma: no cover - never reached: _rows checks for buffered lines

    def feed(self, data: bytes) -> Iterator[ParsedRow | InvalidRow]:
        self.bytes_read += len(data)
        buffer = self._pending + data
        # Split after every LF, and after a CR not followed by LF (old Mac endings); a CR at the
        # very end waits for the next piece (it may be half of a CRLF).
        cut = 0
        parts: list[bytes] = []
        i = 0
        n = len(buffer)
        while True:
            lf = buffer.find(b"\n", i)
            cr = buffer.find(b"\r", i)
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 >= n:
                    break
                end = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            elif lf != -1:
                end = lf + 1
            else:
                break
            parts.append(buffer[cut:end])
            cut = i = end
        self._pending = buffer[cut:]
        if len(self._pending) > MAX_ROW_BYTES:
            raise HeaderError(f"a line is longer than {MAX_ROW_BYTES} bytes: not a CSV of contacts")
        for part in parts:
            self._push(part)
        return self._rows(final=False)

    def finish(self) -> Iterator[ParsedRow | InvalidRow]:
        if self._pending:
            self._push(self._pending)
            self._pending = b""
        self._done = True
        return self._rows(final=True)

    def _push(self, raw: bytes) -> None:
        if self._first:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
            self._first = False
        text = raw.decode("utf-8", errors="surrogateescape")
        # csv wants "\n"-terminated lines; a lone CR (old Mac) is a line end too.
        if text.endswith("\r\n"):
            text = text[:-2] + "\n"
        elif text.endswith("\r"):
            text = text[:-1] + "\n"
        self._lines.append(text)

    def _rows(self, *, final: bool) -> Iterator[ParsedRow | InvalidRow]:
        # A row may span lines (a quoted field with a line break): hand the reader a row only
        # when the buffered lines can complete it, i.e. when its quotes balance, or at the end.
        while self._lines:
            if not final and not self._balanced():
                return
            start = self._physical + 1
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield InvalidRow(start, None, f"not a CSV row: {error}")
                continue
            if not any(f.strip() for f in fields):
                continue  # blank line
            yield from self._row(start, fields)

    def _balanced(self) -> bool:
        quotes = 0
        for line in self._lines:
            quotes += line.count('"')
            if quotes % 2 == 0:
                return True
        return False

    def _row(self, line: int, fields: list[str]) -> Iterator[ParsedRow | InvalidRow]:
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
        if any(_NOT_UTF8.search(f) for f in fields):
            cid = _cell(fields, columns.contact_id)
            yield InvalidRow(
                line,
                None if cid is None or _NOT_UTF8.search(cid) else cid,
                "the row is not valid UTF-8 text",
            )
            return
        cid = _cell(fields, columns.contact_id)
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
        email = _cell(fields, columns.email)
        if not email:
            yield InvalidRow(line, cid, "email: missing")
            return
        zone = _cell(fields, columns.time_zone) if columns.time_zone is not None else None
        attributes: dict[str, Any] = {}
        for i, name in columns.attributes:
            value = _cell(fields, i)
            if not value:
                continue
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
