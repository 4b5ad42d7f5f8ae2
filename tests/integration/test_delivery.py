"""Delivery end to end on the real Kafka, Postgres and SMTP sink: the processor releases, the
worker claims each send in the ledger and hands it to SMTP once, outcomes come back as events."""

from __future__ import annotations

from collections import Counter
from email import message_from_string, policy
from email.message import EmailMessage

import pytest

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import ids
from core import MessageStatus, RecipientStatus, send_id
from schemas import (
    Contact,
    Content,
    DeliveryPlan,
    RecipientsDelivered,
    RecipientsFailed,
)


@pytest.fixture
def stack(delivery_stack: DeliveryStack) -> DeliveryStack:
    return delivery_stack


async def test_every_recipient_gets_one_mail_with_its_merge_fields_and_outcomes_come_back(
    stack: DeliveryStack,
) -> None:
    """Given a message to 40 contacts, one refused for good (550) and one refused for a while
    (451), when it is sent now, then every accepted contact receives exactly one mail whose
    Message-ID is its send id and whose merge fields are its own, the 550 is failed with the
    server's reason, the 451 is tried again with backoff until it is given up, and the message
    ends sent with those counts."""
    stack.spawn_dispatcher()
    stack.spawn_delivery(DELIVERY_RETRY_BASE_S="0.2", DELIVERY_MAX_ATTEMPTS="3")
    message = ids()
    people = [
        Contact(
            contact_id=f"p{i}",
            email=f"p{i}@example.org",
            attributes={"first_name": f"Name{i}", "code": i} if i % 2 else {"code": i},
        )
        for i in range(38)
    ]
    refused = Contact(contact_id="hard", email="hard@fail-permanent.test")
    flaky = Contact(
        contact_id="soft", email=f"soft-{stack.settings.topic_prefix}@fail-transient.test"
    )
    await stack.send_now(message, (*people, refused, flaky), DeliveryPlan())

    state = await stack.wait_status(message, MessageStatus.SENT)

    counts = state.book.counts
    assert counts[RecipientStatus.DELIVERED] == 38
    assert counts[RecipientStatus.FAILED] == 2
    mails = await stack.sink()
    assert Counter(rcpt for _, rcpt in mails) == Counter(p.email for p in people)
    by_rcpt = {rcpt: mid for mid, rcpt in mails}
    for person in people:
        assert by_rcpt[person.email] == f"<{send_id(message, person.contact_id)}@mailctl.invalid>"
    events = await stack.events_of(message)
    failures = [f for e in events if isinstance(e, RecipientsFailed) for f in e.failures]
    failed = {f.contact_id: f.reason for f in failures}
    assert failed["hard"].startswith("550")
    assert "gave up after 3 transient failures" in failed["soft"]
    assert len(await stack.refusals(flaky.email)) == 3
    delivered = [c for e in events if isinstance(e, RecipientsDelivered) for c in e.contact_ids]
    assert sorted(delivered) == sorted(p.contact_id for p in people)
    ledger = await stack.ledger(message)
    assert {c: r["state"] for c, r in ledger.items()} == {
        **{p.contact_id: "delivered" for p in people},
        "hard": "failed",
        "soft": "failed",
    }
    assert all(r["reported"] for r in ledger.values())


async def test_a_text_and_html_message_reaches_the_sink_as_multipart_alternative_merged(
    stack: DeliveryStack,
) -> None:
    """Given a message with a text and an HTML body, the sink receives one multipart/alternative
    mail per contact: text/plain then text/html, each merged (the HTML one with escaped values)."""
    stack.content = Content(
        name="Two bodies",
        from_address=stack.sender,
        subject="Hi {{first_name|friend}}",
        body="Text for {{ first_name | friend }}\n",
        html_body="<p>HTML for {{first_name|friend}}</p>",
    )
    stack.spawn_dispatcher()
    stack.spawn_delivery()
    message = ids()
    ada = Contact(contact_id="ada", email="ada@example.org", attributes={"first_name": "Ada <&>"})
    anon = Contact(contact_id="anon", email="anon@example.org")
    await stack.send_now(message, (ada, anon), DeliveryPlan())
    await stack.wait_status(message, MessageStatus.SENT)
    assert stack.http is not None
    got: dict[str, list[tuple[str, str]]] = {}
    for who in (ada, anon):
        response = await stack.http.get(
            "/messages", params={"rcpt": who.email, "mail_from": stack.sender}
        )
        (item,) = response.json()["items"]
        # The sink answers a multipart mail's body as its raw MIME: parse it back with its type.
        mail = message_from_string(
            f"Content-Type: {dict(item['headers'])['Content-Type']}\n\n{item['body']}",
            policy=policy.default,
        )
        assert isinstance(mail, EmailMessage)
        assert mail.get_content_type() == "multipart/alternative"
        got[who.contact_id] = [
            (part.get_content_type(), part.get_content()) for part in mail.iter_parts()
        ]
    assert got["ada"] == [
        ("text/plain", "Text for Ada <&>\n"),
        ("text/html", "<p>HTML for Ada &lt;&amp;&gt;</p>"),
    ]
    assert got["anon"] == [
        ("text/plain", "Text for friend\n"),
        ("text/html", "<p>HTML for friend</p>"),
    ]


async def test_merge_fields_and_headers_reach_the_mail(stack: DeliveryStack) -> None:
    """Given contacts with and without a first name, the sink's copy of each mail greets them by
    name or with the fallback, in subject and body, from the message's sender and name."""
    stack.spawn_dispatcher()
    stack.spawn_delivery()
    message = ids()
    ada = Contact(contact_id="ada", email="ada@example.org", attributes={"first_name": "Ada"})
    anon = Contact(contact_id="anon", email="anon@example.org")
    await stack.send_now(message, (ada, anon), DeliveryPlan())
    await stack.wait_status(message, MessageStatus.SENT)
    assert stack.http is not None
    got = {}
    for who in (ada, anon):
        response = await stack.http.get(
            "/messages", params={"rcpt": who.email, "mail_from": stack.sender}
        )
        (item,) = response.json()["items"]
        got[who.contact_id] = item
    assert got["ada"]["subject"] == "Hello Ada"
    assert got["anon"]["subject"] == "Hello friend"
    assert "Dear Ada," in got["ada"]["body"]
    assert "Dear friend," in got["anon"]["body"]
    assert "Ünïcode News" in dict(got["ada"]["headers"])["From"]
