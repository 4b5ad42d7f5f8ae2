"""CSV files parsed as they arrive (services/commands/csv_rows.py): every kind of bad row, any
piece size, the header spellings and mapping, an export read back."""

from __future__ import annotations

import pytest

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
