"""The pure parts of delivery: merge fields, the mail's bytes, the send record's fast encoder, and
what each SMTP answer means for the ledger."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy

from core import send_id
from core.ids import send_ids
from core.render import render
from schemas import Contact, Content
from schemas.sends import SendRecord, decode_send_topic, send_records_json
from services.common.settings import Settings
from services.dispatcher.delivery.ledger import Reportable
from services.dispatcher.delivery.mail import compose
from services.dispatcher.delivery.smtp import FENCED, Answer, SmtpPool
from services.dispatcher.delivery.worker import outcome_for, outcomes_command

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


def test_html_bodies_escape_values_and_subjects_never_break_lines() -> None:
    evil = Contact(
        contact_id="e",
        email="e@example.org",
        attributes={"first_name": "<script>x</script>\r\nBcc: all"},
    )
    mail = render(content("Hi {{first_name}}", "<p>{{first_name}}</p>"), evil)
    assert mail.html
    assert "<script>" not in mail.body and "&lt;script&gt;" in mail.body
    assert "\n" not in mail.subject and "\r" not in mail.subject


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
