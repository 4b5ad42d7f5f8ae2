"""CSV files parsed as they arrive (services/commands/csv_rows.py): every kind of bad row, any
piece size, the header spellings and mapping, an export read back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import Contact
from services.commands.csv_rows import CsvContacts, HeaderError, InvalidRow, ParsedRow

BAD = (
    (
        "\ufeffContact ID,Email,Time Zone,first_name\r\n"
        'a,a@example.org,Europe/London,"Ann, ""the"" first\r\nof her name"\r\n'
        "b,,,Bob\r\n"
        "c,c@example.org,Mars/Olympus_Mons,Cy\r\n"
        "a,other@example.org,,Again\r\n"
        "d,not-an-address,,Dee\r\n"
    ).encode()
    + b"e,e@example.org,,\xff\xfe\r\n"
    + b"f,f@example.org,,Fay"
)


def parse(data: bytes, step: int, **kwargs: object) -> list[ParsedRow | InvalidRow]:
    parser = CsvContacts(**kwargs)  # type: ignore[arg-type]
    out: list[ParsedRow | InvalidRow] = []
    for i in range(0, len(data), step):
        out.extend(parser.feed(data[i : i + step]))
    out.extend(parser.finish())
    return out


@pytest.mark.parametrize("step", [1, 2, 5, 64, 10_000])
def test_every_kind_of_bad_row_is_reported_with_its_line_whatever_the_piece_size(
    step: int,
) -> None:
    rows = parse(BAD, step)
    good = [(r.line, r.contact.contact_id) for r in rows if isinstance(r, ParsedRow)]
    bad = [(r.line, r.contact_id, r.reason) for r in rows if isinstance(r, InvalidRow)]
    assert good == [(2, "a"), (9, "f")]
    assert bad == [
        (4, "b", "email: missing"),
        (5, "c", "time_zone: unknown IANA time zone 'Mars/Olympus_Mons'"),
        (6, "a", "duplicate contact id: an earlier row has it"),
        (7, "d", "email: not a syntactically valid email address"),
        (8, "e", "the row is not valid UTF-8 text"),
    ]
    first = rows[0]
    assert isinstance(first, ParsedRow)
    assert first.contact.time_zone == "Europe/London"
    assert first.contact.attributes == {"first_name": 'Ann, "the" first\nof her name'}


def test_old_mac_line_endings_and_blank_lines() -> None:
    rows = parse(b"id,email\r\ra,a@example.org\rb,b@example.org\r", 3)
    assert [(r.line, r.contact.contact_id) for r in rows if isinstance(r, ParsedRow)] == [
        (3, "a"),
        (4, "b"),
    ]


def test_a_header_without_the_fields_needs_a_mapping() -> None:
    data = b"Customer,E-Mail Address,City\nx1,x1@example.org,Paris\n"
    with pytest.raises(HeaderError, match="choose the columns"):
        parse(data, 100)
    [row] = parse(data, 100, mapping={"contact_id": "Customer", "email": "E-Mail Address"})
    assert isinstance(row, ParsedRow)
    assert row.contact.attributes == {"City": "Paris"}


def test_an_export_reads_back_with_its_attributes_and_without_its_own_columns() -> None:
    data = (
        b"contact_id,email,time_zone,mailctl_state,mailctl_reason,attributes\r\n"
        b'x1,x1@example.org,,pending,,"{""n"":1,""city"":""Oslo""}"\r\n'
    )
    [row] = parse(data, 7)
    assert isinstance(row, ParsedRow)
    assert row.contact.attributes == {"n": 1, "city": "Oslo"}


def test_a_removal_file_needs_only_ids() -> None:
    rows = parse(b"contact_id\nx1\nx2\nx1\n", 4, remove=True)
    assert [r.contact.contact_id for r in rows if isinstance(r, ParsedRow)] == ["x1", "x2"]
    assert [r.line for r in rows if isinstance(r, InvalidRow)] == [4]


# ---------------------------------------------------------------- rows validated per piece

_odd = st.sampled_from(["", "\x00", "\t", "\x1b", "\x7f", "\x85", "\u2028", "é"])
_word = st.text("abcXYZ019._-+", min_size=1, max_size=10)
_cell = st.builds(lambda a, b, c: a + b + c, _word, _odd, _word) | _word
_row = st.tuples(
    _cell,  # contact id
    _cell | st.builds(lambda a, d: f"{a}@{d}.example", _word, st.sampled_from(["a", "bü"])),
    st.sampled_from(["", "UTC", "Europe/London", "Mars/Base", "utc"]),
    _cell | st.just(""),
)


def _one_contact(cid: str, email: str, zone: str, note: str) -> tuple[str, object]:
    """The verdict of one row validated alone, as the parser did before it validated a piece's
    rows together: a Contact, or the reason from its own ValidationError."""
    try:
        contact = Contact(
            contact_id=cid,
            email=email,
            time_zone=zone or None,
            attributes={"note": note} if note else {},
        )
    except ValidationError as error:
        parts = []
        for item in error.errors(include_url=False):
            where = str(item["loc"][0]) if item.get("loc") else "row"
            parts.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
        return "invalid", "; ".join(parts)
    return "parsed", contact


@settings(max_examples=200)
@given(st.lists(_row, max_size=12), st.sampled_from([7, 64, 100_000]))
def test_rows_validated_together_get_the_verdict_each_gets_alone(
    rows: list[tuple[str, str, str, str]], step: int
) -> None:
    cells = [tuple(c.replace('"', "").replace(",", "").strip() for c in row) for row in rows]
    text = "contact_id,email,time_zone,note\r\n" + "".join(
        '"' + '","'.join(c) + '"\r\n' for c in cells
    )
    expected: dict[int, tuple[str, object]] = {}
    seen: set[str] = set()
    for line, (cid, email, zone, note) in enumerate(cells, start=2):
        if not cid or cid in seen or not email:
            continue  # missing or repeated: decided before validation, as before
        seen.add(cid)
        expected[line] = _one_contact(cid, email, zone, note)
    found = {
        r.line: ("parsed", r.contact) if isinstance(r, ParsedRow) else ("invalid", r.reason)
        for r in parse(text.encode(), step)
        if r.line in expected
    }
    assert found == expected
