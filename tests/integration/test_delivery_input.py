"""Bad and unusual input against the real stack (issue 10): internationalized addresses with and
without SMTPUTF8 at the server, a header injection through a merge field, a NUL command on the
command topic, and a send only an old history could hold. In every case the service answers
that input alone (delivered, failed with its reason, or dead-lettered), and another account's
message on the SAME partition is mailed afterwards: no single input stops delivery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid5

import httpx
import pytest

from bench.harness.delivery import DeliveryStack
from bench.harness.processor import OPERATOR, STRANGER, free_port, ids, record
from bench.harness.projections import drop_schema, new_schema, spawn_projections, with_schema
from core import MessageStatus, RecipientStatus, send_id
from schemas import (
    Actor,
    AddRecipients,
    Contact,
    Content,
    CreateDraft,
    DeliveryPlan,
    RecipientsAdded,
    RecipientsFailed,
    ScheduleMessage,
)
from schemas.sends import MailContent, SendRecord
from services.commands.app import Adapters, create_app
from services.common.settings import Settings
from services.delivery.smtp import NO_SMTPUTF8
from services.delivery.worker import OUTCOMES_NAMESPACE
from services.dispatcher.decider import key_of, partition_of
from services.projections.reader import PostgresViews
from services.smtp_sink.app import SinkRuntime
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore

ZOE = "zoë@bücher.example"


def same_partition(stack: DeliveryStack, count: int) -> list[UUID]:
    """``count`` message ids whose commands, events and sends share one partition."""
    partitions = stack.settings.kafka_partitions
    first = ids()
    wanted = partition_of(key_of(first), partitions)
    found = [first]
    while len(found) < count:
        candidate = ids()
        if partition_of(key_of(candidate), partitions) == wanted:
            found.append(candidate)
    return found


async def send_as(
    stack: DeliveryStack,
    actor: Actor,
    message: UUID,
    audience: Sequence[Contact],
    content: Content | None = None,
) -> None:
    """Create, fill and send now one message of ``actor``'s account; wait for the results."""
    results = await stack.decide(
        record(
            CreateDraft(
                command_id=ids(),
                message_id=message,
                content=content or stack.content,
                plan=DeliveryPlan(),
            ),
            actor,
        ),
        record(
            AddRecipients(command_id=ids(), message_id=message, contacts=tuple(audience)), actor
        ),
        record(ScheduleMessage(command_id=ids(), message_id=message, send_now=True), actor),
    )
    assert [r.outcome for r in results] == ["accepted"] * 3, results


async def failure_reasons(stack: DeliveryStack, message: UUID) -> dict[str, str]:
    return {
        f.contact_id: f.reason
        for e in await stack.events_of(message)
        if isinstance(e, RecipientsFailed)
        for f in e.failures
    }


async def another_account_is_still_mailed(stack: DeliveryStack, message: UUID) -> None:
    """A message of another account on the same partition, sent after the bad input, is
    delivered and ends sent."""
    person = Contact(contact_id="after", email=f"after-{message.hex[:8]}@example.org")
    await send_as(stack, STRANGER, message, [person])
    await stack.wait_delivered(message, 1)
    state = await stack.wait_status(message, MessageStatus.SENT)
    assert state.book.counts[RecipientStatus.DELIVERED] == 1


@pytest.fixture
def stack(delivery_stack: DeliveryStack) -> DeliveryStack:
    delivery_stack.spawn_dispatcher()
    return delivery_stack


@pytest.fixture
async def views(stack: DeliveryStack) -> AsyncIterator[PostgresViews]:
    """The projections on the stack's topics, writing views into a schema of the test's own."""
    schema = await new_schema(stack.database_url)
    dsn = with_schema(stack.database_url, schema)
    spawn_projections(stack, dsn)
    reader = PostgresViews(dsn)
    try:
        yield reader
    finally:
        await reader.close()
        await drop_schema(stack.database_url, schema)


async def test_an_internationalized_address_is_delivered_with_smtputf8_as_given(
    stack: DeliveryStack, views: PostgresViews
) -> None:
    """Given a sink that offers SMTPUTF8, when a message goes to zoë@bücher.example and to an
    ASCII local part at an IDN domain, then both are delivered: Zoë's envelope carries her
    address byte for byte (UTF-8), the other's domain goes as punycode, and the events and the
    recipients view show both as given; another account's message follows."""
    stack.spawn_delivery()
    first, then = same_partition(stack, 2)
    zoe = Contact(contact_id="zoë", email=ZOE, attributes={"first_name": "Zoë"})
    ada = Contact(contact_id="ada", email="ada@bücher.example")
    await send_as(stack, OPERATOR, first, [zoe, ada])

    state = await stack.wait_status(first, MessageStatus.SENT)
    assert state.book.counts[RecipientStatus.DELIVERED] == 2
    rcpts = {rcpt: mid for mid, rcpt in await stack.sink()}
    assert rcpts[ZOE] == f"<{send_id(first, 'zoë')}@mailctl.invalid>"
    assert rcpts["ada@xn--bcher-kva.example"] == f"<{send_id(first, 'ada')}@mailctl.invalid>"
    rows = await stack.ledger(first)
    assert rows["zoë"]["state"] == "delivered"
    added = [
        c
        for e in await stack.events_of(first)
        if isinstance(e, RecipientsAdded)
        for c in e.contacts
    ]
    assert [c.email.encode() for c in added] == [ZOE.encode(), "ada@bücher.example".encode()]

    async def shown() -> dict[str, tuple[str, str]] | None:
        page = await views.recipients(OPERATOR.account_id, first, None, after=None, limit=10)
        found = {r["contact_id"]: (r["email"], r["state"]) for r in page}
        return found if {s for _, s in found.values()} == {"delivered"} else None

    assert await stack.wait_for("the recipients view", shown) == {
        "ada": ("ada@bücher.example", "delivered"),
        "zoë": (ZOE, "delivered"),
    }
    # The read API over these views (real Postgres): the addresses as given, and a NUL in a
    # query parameter is a 422 naming it (Postgres text cannot hold one: it was a 500).
    app = create_app(
        Settings(),
        Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys({"key-a": "acct-a"}), views=views),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        api.headers["Authorization"] = "Bearer key-a"
        page = await api.get(f"/v1/messages/{first}/recipients")
        after = await api.get(f"/v1/messages/{first}/recipients", params={"after": "a\x00"})
        search = await api.get("/v1/views/sent", params={"q": "Launch\x00"})
    assert page.status_code == 200, page.text
    assert ZOE.encode() in page.content  # the JSON carries the address byte for byte
    assert [i["email"] for i in page.json()["items"]] == ["ada@bücher.example", ZOE]
    assert (after.status_code, after.json()["detail"]["field"]) == (422, "after")
    assert (search.status_code, search.json()["detail"]["field"]) == (422, "q")
    await another_account_is_still_mailed(stack, then)


@pytest.fixture
async def plain_sink(tmp_path: Path) -> AsyncIterator[tuple[SinkRuntime, int]]:
    """A second SMTP sink, without SMTPUTF8 (SMTP_SINK_SMTPUTF8=false)."""
    port = free_port()
    runtime = SinkRuntime()
    await runtime.start(
        Settings(smtp_port=port, smtp_sink_db=tmp_path / "plain.sqlite3", smtp_sink_smtputf8=False)
    )
    try:
        yield runtime, port
    finally:
        await runtime.close()


async def test_an_internationalized_address_fails_with_its_reason_where_smtputf8_is_missing(
    stack: DeliveryStack, plain_sink: tuple[SinkRuntime, int]
) -> None:
    """Given a server without SMTPUTF8, when a message goes to zoë@bücher.example and to an
    ASCII address, then Zoë's send is failed with the reason (never handed over), the other is
    delivered on the same connection pool, and another account's message follows."""
    runtime, port = plain_sink
    stack.smtp = ("127.0.0.1", port)
    stack.spawn_delivery()
    first, then = same_partition(stack, 2)
    zoe = Contact(contact_id="zoë", email=ZOE)
    bob = Contact(contact_id="bob", email="bob@example.org")
    await send_as(stack, OPERATOR, first, [zoe, bob])

    state = await stack.wait_status(first, MessageStatus.SENT)
    assert state.book.counts[RecipientStatus.DELIVERED] == 1
    assert (await failure_reasons(stack, first)) == {"zoë": NO_SMTPUTF8}
    assert (await stack.ledger(first))["zoë"]["state"] == "failed"
    await another_account_is_still_mailed(stack, then)
    received = [rcpt for _, _, rcpt, _ in runtime.store.deliveries(mail_from=stack.sender)]
    assert sorted(received) == sorted(["bob@example.org", f"after-{then.hex[:8]}@example.org"])


async def test_a_header_injection_through_a_merge_field_fails_that_send_only(
    stack: DeliveryStack,
) -> None:
    """Given a subject with a merge field and a contact whose value for it carries CR LF and a
    Bcc header (an attribute may hold line breaks: it may be merged into a body), when the
    message is sent, then that send is failed with the builder's reason and no mail carries
    the injected header, the other contact is delivered, and another account's message
    follows."""
    stack.spawn_delivery()
    first, then = same_partition(stack, 2)
    content = stack.content.model_copy(update={"subject": "Hello {{first_name}}"})
    evil = Contact(
        contact_id="evil",
        email="evil@example.org",
        attributes={"first_name": "x\r\nBcc: someone@example.net\r\nX-Injected: yes"},
    )
    fine = Contact(contact_id="fine", email="fine@example.org", attributes={"first_name": "F"})
    await send_as(stack, OPERATOR, first, [evil, fine], content)

    state = await stack.wait_status(first, MessageStatus.SENT)
    assert state.book.counts[RecipientStatus.DELIVERED] == 1
    reason = (await failure_reasons(stack, first))["evil"]
    assert reason.startswith("the mail cannot be composed: the Subject header is refused")
    assert "U+000D CR" in reason
    rcpts = [rcpt for _, rcpt in await stack.sink()]
    assert rcpts == ["fine@example.org"]
    assert not await stack.refusals("someone@example.net")
    await another_account_is_still_mailed(stack, then)


async def test_a_nul_command_on_the_topic_is_dead_lettered_and_the_partition_goes_on(
    stack: DeliveryStack,
) -> None:
    """Given a CreateDraft published on the command topic with a NUL in its name (the topic
    refuses what the API refuses), then it is dead-lettered with the field at fault, the message
    never exists, and another account's message on the same partition is mailed."""
    stack.spawn_delivery()
    first, then = same_partition(stack, 2)
    command = CreateDraft(
        command_id=ids(), message_id=first, content=stack.content, plan=DeliveryPlan()
    )
    raw = json.loads(record(command).model_dump_json())
    raw["command"]["content"]["name"] = "Launch\x00"
    await stack.publish_raw(key_of(first), json.dumps(raw).encode())

    await another_account_is_still_mailed(stack, then)
    letters = [d for d in await stack.dead_letters() if str(first) in d.value]
    assert len(letters) == 1
    assert "content.name" in letters[0].error and "U+0000 NUL" in letters[0].error
    assert await stack.events_of(first) == []


async def test_sends_only_an_old_history_could_hold_fail_with_their_reason(
    stack: DeliveryStack,
) -> None:
    """Given sends written before the input rules (a NUL in an address, a NUL in a contact id,
    which the ledger cannot store), when the delivery worker reads them, then each is failed
    with its reason (the second reported straight to the command topic) and none stops the
    worker: another account's message on the same partition is mailed afterwards."""
    stack.spawn_delivery()
    first, then = same_partition(stack, 2)
    partition = partition_of(key_of(first), stack.settings.kafka_partitions)
    mail_content = json.loads(
        MailContent(
            message_id=first, account_id="acct-a", content=stack.content, sequence=3
        ).model_dump_json()
    )
    sends = []
    for contact_id, email in [("nul-address", "z\x00@example.org"), ("nul\x00id", "y@example.org")]:
        send = json.loads(
            SendRecord(
                send_id=send_id(first, contact_id),
                message_id=first,
                account_id="acct-a",
                released_at=datetime.now(UTC),
                release_sequence=4,
                contact=Contact(contact_id="placeholder", email="p@example.org"),
            ).model_dump_json()
        )
        send["contact"] = {"contact_id": contact_id, "email": email, "attributes": {}}
        sends.append(send)
    assert stack.producer is not None
    for value in (mail_content, *sends):
        await stack.producer.send_and_wait(
            stack.topics.sends,
            value=json.dumps(value).encode(),
            key=key_of(first),
            partition=partition,
        )

    async def failed() -> dict[str, str] | None:
        rows = await stack.ledger(first)
        # The row is written "claimed" first, its outcome after: wait for the outcome.
        row = rows.get("nul-address")
        done = row is not None and row["state"] != "claimed"
        return {k: r["detail"] for k, r in rows.items()} if done else None

    found = await stack.wait_for("the NUL address failed", failed)
    assert (await stack.ledger(first))["nul-address"]["state"] == "failed"
    assert found["nul-address"].startswith("the mail cannot be composed: the To header is refused")
    # The unstorable send's outcome went straight to the processor (which does not know the
    # message: the sends were written by hand, so the outcome is refused there, but answered).
    reported = uuid5(OUTCOMES_NAMESPACE, str(send_id(first, "nul\x00id")))
    assert (await stack.result_of(reported)).outcome == "rejected"
    await another_account_is_still_mailed(stack, then)
    assert [rcpt for _, rcpt in await stack.sink()] == [f"after-{then.hex[:8]}@example.org"]
