"""The pure parts of delivery: merge fields, the mail's bytes, the send record's fast encoder, and
what each SMTP answer means for the ledger."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import send_id
from core.ids import send_ids
from core.preview import merge_fields
from core.render import parts, render
from schemas import Contact, Content
from schemas.sends import SendRecord, decode_send_topic, send_records_json
from schemas.text import STORED, breaks_one_line
from services.common.settings import Settings
from services.delivery.ledger import Reportable
from services.delivery.mail import (
    MAX_ENCODED_WORD,
    MAX_LINE,
    Mail,
    UnsafeHeaderError,
    compose,
    fold_phrase,
    fold_unstructured,
)
from services.delivery.smtp import FENCED, Answer, SmtpPool
from services.delivery.worker import outcome_for, outcomes_command

ADA = Contact(
    contact_id="ada", email="ada@example.org", attributes={"first_name": "Ada", "vip": True, "n": 3}
)
ANON = Contact(contact_id="anon", email="anon@example.org")


def content(subject: str, body: str) -> Content:
    return Content(
        name="N", from_address="news@example.org", from_name="Nëws", subject=subject, body=body
    )


def test_merge_fields_take_the_contacts_values_or_the_fallback() -> None:
    c = content("Hi {{first_name|there}}", "{{ first_name | friend }} {{vip}} {{n}} {{email}}")
    assert render(c, ADA).subject == "Hi Ada"
    assert render(c, ADA).body == "Ada true 3 ada@example.org"
    assert render(c, ANON).subject == "Hi there"
    assert render(c, ANON).body == "friend   anon@example.org"


def test_html_bodies_escape_values() -> None:
    evil = Contact(
        contact_id="e",
        email="e@example.org",
        attributes={"first_name": "<script>x</script>"},
    )
    mail = render(content("Hi {{first_name}}", "<p>{{first_name}}</p>"), evil)
    assert mail.html
    assert "<script>" not in mail.body and "&lt;script&gt;" in mail.body


def test_the_mail_parses_back_with_its_message_id_headers_and_body() -> None:
    message = uuid.uuid4()
    sid = send_id(message, "ada")
    mail = compose(
        send_id=sid,
        message_id=message,
        content=content("Grüße {{first_name}}", "Hello {{first_name}},\nbye.\n"),
        contact=ADA,
        domain="example.test",
    )
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert parsed["Message-ID"] == f"<{sid}@example.test>"
    assert parsed["Subject"] == "Grüße Ada"
    assert parsed["To"] == "ada@example.org"
    assert "Nëws" in str(parsed["From"])
    assert parsed.get_content().replace("\r\n", "\n") == "Hello Ada,\nbye.\n"
    assert mail.rcpt_to == "ada@example.org" and mail.mail_from == "news@example.org"


def test_fast_send_ids_are_the_cores_uuid5() -> None:
    message = uuid.uuid4()
    names = [f"c{i}" for i in range(200)] + ["ünï", "a:b", ""]
    assert list(send_ids(message, names)) == [str(send_id(message, n)) for n in names]


def test_the_fast_send_record_encoder_decodes_to_the_model() -> None:
    message = uuid.uuid4()
    at = datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    (fast,) = send_records_json(
        message_id=message,
        account_id='acct "a"',
        released_at=at.isoformat(),
        release_sequence=7,
        sends=[(str(send_id(message, "ada")), ADA.model_dump_json())],
    )
    model = SendRecord(
        send_id=send_id(message, "ada"),
        message_id=message,
        account_id='acct "a"',
        released_at=at,
        release_sequence=7,
        contact=ADA,
    )
    assert decode_send_topic(fast) == model


def test_smtp_answers_map_to_ledger_states() -> None:
    s = Settings(delivery_max_attempts=3, delivery_retry_base_s=1.0)
    assert outcome_for("x", Answer("delivered", "250 ok"), 0, s, "{}").state == "delivered"
    assert outcome_for("x", Answer("failed", "550 no"), 0, s, "{}").state == "failed"
    assert outcome_for("x", Answer("unknown", "lost"), 0, s, "{}").state == "unknown"
    deferred = outcome_for("x", Answer("deferred", "451 later"), 0, s, "{raw}")
    assert deferred.state == "deferred" and deferred.payload == "{raw}"
    assert deferred.next_attempt_at is not None
    last = outcome_for("x", Answer("deferred", "451 later"), 2, s, "{raw}")
    assert last.state == "failed" and last.detail.startswith("gave up after 3 transient")


def test_an_outcomes_command_has_an_id_derived_from_its_send_ids() -> None:
    message = str(uuid.uuid4())
    rows = [
        Reportable("s1", message, "a", "c1", "delivered", None),
        Reportable("s2", message, "a", "c2", "failed", "550 no"),
        Reportable("s3", message, "a", "c3", "unknown", "lost"),
    ]
    first, again = outcomes_command(message, rows), outcomes_command(message, rows[::-1])
    assert first.command_id == again.command_id
    assert first.delivered == ("c1",) and first.unknown == ("c3",)
    assert first.failed[0].reason == "550 no"


# ------------------------------------------------------------------ headers: injection and folding


def mail_of(
    subject: str = "Hi",
    *,
    from_name: str | None = "News",
    email: str = "ada@example.org",
    sender: str = "news@example.org",
    attributes: dict[str, str] | None = None,
) -> Mail:
    return compose(
        send_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        content=Content(
            name="N", from_address=sender, from_name=from_name, subject=subject, body="Hello"
        ),
        # STORED: a value only an old history can hold (a NUL) reaches the builder too.
        contact=Contact.model_validate(
            {"contact_id": "c", "email": email, "attributes": attributes or {}}, context=STORED
        ),
        domain="example.test",
    )


def header_lines(mail: Mail) -> list[bytes]:
    head, _, _ = mail.data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")


def assert_within_rfc_limits(mail: Mail) -> None:
    lines = header_lines(mail)
    assert all(len(line) <= MAX_LINE for line in lines), max(map(len, lines))
    words = re.findall(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", b"\r\n".join(lines))
    assert all(len(word) <= MAX_ENCODED_WORD for word in words)
    assert all(b"\r" not in line and b"\n" not in line for line in lines)


@pytest.mark.parametrize(
    "value",
    [
        "Support\r\nBcc: someone@example.net\r\nX-Injected: yes",
        "Hi\nBcc: x@example.net",
        "Hi\rBcc: x@example.net",
        "Hi\x00there",
        "Hi\u2028Bcc: x@example.net",
    ],
)
def test_a_merge_value_bringing_a_line_break_into_the_subject_is_refused(value: str) -> None:
    with pytest.raises(UnsafeHeaderError, match="the Subject header is refused"):
        mail_of("Hello {{first_name}}", attributes={"first_name": value})


@pytest.mark.parametrize(
    ("field", "header", "bad"),
    [
        ("from_name", "From", "\r\nBcc: x@example.net"),
        ("subject", "Subject", "\r\nBcc: x@example.net"),
        # An address never held a line break (the address rule refused whitespace even before
        # the text rules), but may hold a NUL.
        ("email", "To", "\x00"),
        ("sender", "From", "\x00"),
    ],
)
def test_no_header_is_written_with_a_line_break_whatever_the_builder_is_given(
    field: str, header: str, bad: str
) -> None:
    # Values that no input accepts today, but an old history may hand to delivery.
    good = {"from_name": "News", "subject": "Hi", "email": "a@example.org", "sender": "n@e.org"}
    values = {**good, field: good[field][:1] + bad + good[field][1:]}
    content = Content.model_validate(
        {
            "name": "N",
            "from_address": values["sender"],
            "from_name": values["from_name"],
            "subject": values["subject"],
            "body": "",
        },
        context=STORED,
    )
    contact = Contact.model_validate({"contact_id": "c", "email": values["email"]}, context=STORED)
    with pytest.raises(UnsafeHeaderError, match=f"the {header} header is refused"):
        compose(
            send_id=uuid.uuid4(),
            message_id=uuid.uuid4(),
            content=content,
            contact=contact,
            domain="example.test",
        )


@pytest.mark.parametrize(
    "subject",
    [
        "Hi",
        "A plain ASCII subject with many words " * 25,
        "x" * 998,
        "Grüße aus Köln, " * 62,
        "ü" * 998,
        "日本語の件名" * 160,
        "😀 emoji " * 110,
        "=?utf-8?q?looks_encoded?= but is not",
        "two  spaces   and  trailing  " * 30,
    ],
)
def test_every_subject_is_folded_within_the_rfc_limits_and_parses_back_as_given(
    subject: str,
) -> None:
    subject = subject[:998]
    name = "Ünïcode Néws " * 15
    mail = mail_of(subject, from_name=name)
    assert_within_rfc_limits(mail)
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].addr_spec == "news@example.org"
    assert rfc2047(mail, "From") == f"{name} <news@example.org>"


def rfc2047(mail: Mail, name: str) -> str:
    """A header decoded by RFC 2047's rules: the space between two encoded words is not text.
    (The standard library's address parser keeps it inside a display name, and so does not
    read back even the headers its own generator folds: phrases are checked with decode_header.)"""
    raw = message_from_bytes(mail.data, policy=policy.compat32)[name]
    return "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decode_header(raw.replace("\r\n", ""))
    )


def test_a_long_ascii_subject_is_folded_at_its_spaces_not_encoded() -> None:
    subject = "word " * 150 + "end"
    mail = mail_of(subject)
    assert b"=?" not in b"".join(header_lines(mail))
    assert_within_rfc_limits(mail)
    assert message_from_bytes(mail.data, policy=policy.default)["Subject"] == subject


@pytest.mark.parametrize(
    ("name", "display"),
    [("plain", "Support Team"), ("quoted", 'Smith, John "JJ"'), ("non-ASCII", "Zoë Ünïcode")],
)
def test_sender_names_parse_back_as_given(name: str, display: str) -> None:
    mail = mail_of(from_name=display)
    assert_within_rfc_limits(mail)
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert parsed["From"].addresses[0].display_name == display
    assert parsed["From"].addresses[0].addr_spec == "news@example.org"


def test_an_idn_domain_with_an_ascii_local_part_goes_as_punycode_without_smtputf8() -> None:
    mail = mail_of(email="ada@bücher.example", sender="news@bücher.example")
    assert not mail.smtputf8
    assert mail.rcpt_to == "ada@xn--bcher-kva.example"
    assert mail.mail_from == "news@xn--bcher-kva.example"
    assert mail.data.isascii()
    assert message_from_bytes(mail.data, policy=policy.default)["To"] == mail.rcpt_to


def test_a_non_ascii_local_part_needs_smtputf8_and_is_written_as_given() -> None:
    mail = mail_of(email="zoë@bücher.example")
    assert mail.smtputf8
    assert mail.rcpt_to == "zoë@bücher.example"
    parsed = message_from_bytes(mail.data, policy=policy.SMTPUTF8)
    assert parsed["To"] == "zoë@bücher.example"
    assert "To: zoë@bücher.example\r\n".encode() in mail.data


def test_fold_helpers_keep_encoded_words_whole_characters() -> None:
    folded = fold_unstructured("Subject", "€" * 200)
    for word in re.findall(r"=\?utf-8\?b\?([^?]*)\?=", folded):
        base64.b64decode(word).decode()  # each word decodes on its own
    assert all(len(line) <= MAX_LINE for line in folded.split("\r\n"))
    assert fold_phrase("From", None, "a@example.org") == "From: a@example.org"


def test_a_multi_line_smtp_reply_becomes_a_one_line_reason_the_outcome_command_accepts() -> None:
    s = Settings()
    said = Answer("failed", "550-5.1.1 first line\n550 5.1.1 second line\x00")
    outcome = outcome_for("x", said, 0, s, "{}")
    assert outcome.detail == "550-5.1.1 first line 550 5.1.1 second line "
    message = str(uuid.uuid4())
    row = Reportable("s1", message, "a", "c1\x00", "failed", "550-a\r\n550 b")
    command = outcomes_command(message, [row])
    assert command.failed[0].reason == "550-a  550 b"
    assert command.failed[0].contact_id == "c1\x00"  # by reference, as the history names it


ONE_LINE_TEXT = st.text(min_size=1, max_size=998).filter(lambda s: breaks_one_line(s) is None)


@settings(max_examples=300, deadline=None)
@given(ONE_LINE_TEXT)
def test_any_one_line_subject_is_folded_within_the_limits_and_reads_back_as_given(
    subject: str,
) -> None:
    header = fold_unstructured("Subject", subject)
    assert all(len(line) <= MAX_LINE for line in header.split("\r\n")), header
    words = re.findall(r"=\?[^?]+\?b\?[^?]*\?=", header)
    assert all(len(word) <= MAX_ENCODED_WORD for word in words)
    parsed = message_from_bytes(f"{header}\r\n\r\n".encode(), policy=policy.default)
    assert parsed["Subject"] == subject


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200).filter(lambda s: breaks_one_line(s) is None))
def test_any_one_line_sender_name_is_folded_within_the_limits_and_reads_back_as_given(
    name: str,
) -> None:
    header = fold_phrase("From", name, "news@example.org")
    assert all(len(line) <= MAX_LINE for line in header.split("\r\n")), header
    data = f"{header}\r\n\r\n".encode()
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == "news@example.org"
    raw = message_from_bytes(data, policy=policy.compat32)["From"]
    decoded = "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decode_header(raw.replace("\r\n", ""))
    )
    assert decoded == f"{name} <news@example.org>"


def test_every_line_ending_of_the_body_is_one_crlf_and_a_nul_is_encoded() -> None:
    content = Content.model_validate(
        {
            "name": "N",
            "from_address": "n@example.org",
            "subject": "S",
            "body": "a\rb\r\nc\nd\x00",
        },
        context=STORED,
    )
    mail = compose(
        send_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        content=content,
        contact=ADA,
        domain="example.test",
    )
    _, _, body = mail.data.partition(b"\r\n\r\n")
    assert body == b"a\r\nb\r\nc\r\nd=00"
    assert b"\r" not in body.replace(b"\r\n", b"")


def test_a_returned_send_and_its_later_outcome_are_two_commands() -> None:
    """A send returned (paused) and, after its re-release, delivered is reported twice: the two
    commands must have different ids, or the processor would answer the second with the first's
    result and the delivery would be lost."""
    message = str(uuid.uuid4())
    returned = outcomes_command(message, [Reportable("s1", message, "a", "c1", "returned", "", 7)])
    delivered = outcomes_command(
        message, [Reportable("s1", message, "a", "c1", "delivered", "", 9)]
    )
    assert returned.returned[0].contact_id == "c1" and returned.returned[0].release == 7
    assert delivered.delivered == ("c1",) and delivered.returned == ()
    assert returned.command_id != delivered.command_id
    again = outcomes_command(message, [Reportable("s1", message, "a", "c1", "returned", "", 7)])
    assert again.command_id == returned.command_id


def test_the_pool_does_not_hand_off_a_fenced_mail() -> None:
    """The fence is asked once a connection is ready: a paused message's mail is returned
    without a word to the server (the pool's connection is not even opened)."""
    pool = SmtpPool("127.0.0.1", 9, 1, 1.0)  # nothing listens on the discard port
    mail = compose(
        send_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        content=content("s", "b"),
        contact=Contact(contact_id="c", email="c@example.org"),
        domain="mailctl.invalid",
    )
    answer = asyncio.run(pool.deliver(mail, lambda: True))
    assert answer == Answer("returned", FENCED)


def two_parts(subject: str, text: str, html: str) -> Content:
    return Content(
        name="N",
        from_address="news@example.org",
        subject=subject,
        body=text,
        html_body=html,
    )


def test_an_old_single_body_keeps_its_meaning() -> None:
    """A record without html_body: a body opening a tag is the HTML part, else the text part."""
    assert parts(content("S", "  <p>Hi</p>")) == (None, "  <p>Hi</p>")
    assert parts(content("S", "Hi <b>")) == ("Hi <b>", None)
    assert parts(content("S", "")) == ("", None)
    old = Content.model_validate(
        {"name": "N", "from_address": "n@example.org", "subject": "S", "body": "<p>x</p>"},
        context=STORED,
    )
    assert old.html_body is None and render(old, ADA).html == "<p>x</p>"
    assert render(old, ADA).text is None


def test_with_an_html_body_the_body_is_the_text_part_never_sniffed() -> None:
    assert parts(two_parts("S", "<not a tag>", "<p>x</p>")) == ("<not a tag>", "<p>x</p>")
    assert parts(two_parts("S", "", "<p>x</p>")) == (None, "<p>x</p>")
    assert parts(two_parts("S", "plain", "")) == ("plain", None)


def test_both_parts_take_the_merge_fields_and_only_the_html_one_escapes() -> None:
    evil = Contact(contact_id="e", email="e@example.org", attributes={"first_name": "<b>&"})
    mail = render(
        two_parts("Hi {{first_name}}", "T {{first_name}}", "<p>{{ first_name }}</p>"), evil
    )
    assert mail.subject == "Hi <b>&"
    assert mail.text == "T <b>&"
    assert mail.html == "<p>&lt;b&gt;&amp;</p>"


def test_the_html_body_follows_the_text_rules_of_a_body() -> None:
    with pytest.raises(ValueError, match="control character"):
        two_parts("S", "t", "<p>\x00</p>")
    with pytest.raises(ValueError):
        two_parts("S", "t", "x" * 2_000_001)
    assert two_parts("S", "t", "<p>\ta\r\nb</p>").html_body == "<p>\ta\r\nb</p>"


def _part_texts(parsed: EmailMessage) -> list[tuple[str, str]]:
    return [
        (p.get_content_type(), p.get_content().replace("\r\n", "\n")) for p in parsed.iter_parts()
    ]


def test_two_parts_are_multipart_alternative_text_then_html_parsed_back() -> None:
    message = uuid.uuid4()
    sid = send_id(message, "ada")
    html_body = "<p>Grüße {{first_name}}</p>\n<p>" + "= long line " * 20 + "</p>"
    mail = compose(
        send_id=sid,
        message_id=message,
        content=two_parts("Hi {{first_name}}", "Grüße {{first_name}},\nbye.\n", html_body),
        contact=ADA,
        domain="example.test",
    )
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_param("boundary") == f"=_mailctl_{sid.hex}"
    assert parsed["Subject"] == "Hi Ada"
    assert parsed["Message-ID"] == f"<{sid}@example.test>"
    assert _part_texts(parsed) == [
        ("text/plain", "Grüße Ada,\nbye.\n"),
        ("text/html", "<p>Grüße Ada</p>\n<p>" + "= long line " * 20 + "</p>"),
    ]
    for part in parsed.iter_parts():
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert not parsed.defects and all(not p.defects for p in parsed.iter_parts())
    # Every line within the folding limit, only CRLF line ends, the boundary only as delimiter.
    lines = mail.data.split(b"\r\n")
    assert all(len(line) <= MAX_LINE for line in lines)
    assert b"\r" not in mail.data.replace(b"\r\n", b"") and b"\n" not in mail.data.replace(
        b"\r\n", b""
    )
    boundary = f"=_mailctl_{sid.hex}".encode()
    assert [line for line in lines if boundary in line and not line.startswith(b" boundary=")] == [
        b"--" + boundary,
        b"--" + boundary,
        b"--" + boundary + b"--",
    ]


def test_a_part_holding_the_boundary_text_cannot_end_its_part() -> None:
    sid = uuid.uuid4()
    trap = f"--=_mailctl_{sid.hex}\n--=_mailctl_{sid.hex}--\n"
    mail = compose(
        send_id=sid,
        message_id=uuid.uuid4(),
        content=two_parts("S", trap, "<p>" + trap + "</p>"),
        contact=ADA,
        domain="example.test",
    )
    parsed = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert _part_texts(parsed) == [("text/plain", trap), ("text/html", "<p>" + trap + "</p>")]


def test_one_part_is_a_single_part_mail_as_before() -> None:
    for c, kind, text in (
        (two_parts("S", "", "<p>{{first_name}}</p>"), "text/html", "<p>Ada</p>"),
        (two_parts("S", "<hi {{first_name}}>", ""), "text/plain", "<hi Ada>"),
        (content("S", "<p>{{first_name}}</p>"), "text/html", "<p>Ada</p>"),
        (content("S", "hi {{first_name}}"), "text/plain", "hi Ada"),
    ):
        mail = compose(
            send_id=uuid.uuid4(), message_id=uuid.uuid4(), content=c, contact=ADA, domain="x.test"
        )
        parsed = message_from_bytes(mail.data, policy=policy.default)
        assert parsed.get_content_type() == kind
        assert parsed.get_content_charset() == "utf-8"
        assert parsed.get_content() == text
        assert b"multipart" not in mail.data


def test_the_preview_lists_the_merge_fields_of_the_subject_and_both_bodies() -> None:
    c = two_parts("Hi {{first_name}}", "T {{ city | nowhere }} {{first_name}}", "<p>{{email}}</p>")
    fields = merge_fields(c, ADA)
    assert [(f.name, f.fallback, f.missing) for f in fields] == [
        ("first_name", None, False),
        ("city", "nowhere", True),
        ("email", None, False),
    ]
