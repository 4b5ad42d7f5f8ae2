"""The REST API end to end against the real Kafka, Postgres and processor (a subprocess on topics
of its own): HTTP in, the command's events read back from the events topic with read_committed;
rejections with their codes; nothing written for input refused at the edge; a retry after the
processor was killed applied once; racing commands decided one after the other."""

from __future__ import annotations

import asyncio
import itertools
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness.processor import Stack
from bench.harness.spawn import cli as run_cli
from core import fold
from schemas import MAX_CHUNK, Event, MessageScheduled
from services.commands.app import create_app
from services.common.settings import Settings

CONTENT = {"name": "News", "from_address": "news@example.org", "subject": "Hi", "body": "Hello"}
CONTACTS = [{"contact_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(3)]


def cli(database_url: str, *args: str) -> str:
    """The API-keys CLI (`services.commands.apikeys`) against `database_url`: its output."""
    return run_cli("services.commands.apikeys", database_url, *args, timeout=60)


class Api:
    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.key = key

    async def call(
        self, method: str, path: str, body: Any = None, key: str | None = None, **headers: str
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {self.key}", **headers}
        if key is not None:
            sent["Idempotency-Key"] = key
        return await self.client.request(method, path, json=body, headers=sent)

    async def create(self, **extra: Any) -> str:
        answer = await self.call("POST", "/v1/messages", {"content": CONTENT, **extra})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["message_id"])


@pytest.fixture
async def stack(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(kafka_bootstrap, tmp_path)
    await stack.start()
    stack.spawn()
    try:
        yield stack
    finally:
        await stack.close()


@asynccontextmanager
async def serving(
    stack: Stack, database_url: str, wait_s: float = 30.0
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=stack.bootstrap,
        topic_prefix=stack.settings.topic_prefix,
        kafka_partitions=stack.settings.kafka_partitions,
        command_wait_s=wait_s,
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(stack: Stack, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(stack, database_url) as client:
        yield client


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(client: httpx.AsyncClient, database_url: str, account: str) -> Api:
    return Api(client, cli(database_url, "create", "--account", account))


async def history(stack: Stack, message_id: str) -> list[str]:
    return [e.type for e in await stack.events_of(uuid.UUID(message_id))]


async def until_sending(stack: Stack, message_id: str) -> None:
    async def sending() -> bool:
        return "SendingStarted" in await history(stack, message_id)

    await stack.wait_for(f"{message_id} sending", sending)


async def on_topic(stack: Stack, answer: httpx.Response) -> list[Event]:
    """The events an accepted answer names, read back from the events topic."""
    named = {uuid.UUID(e["event_id"]) for e in answer.json()["events"]}

    async def found() -> list[Event]:
        events = [e for e in await stack.events() if e.event_id in named]
        return events if len(events) == len(named) else []

    events: list[Event] = await stack.wait_for("the answer's events", found)
    return events


async def test_each_command_end_to_end(api: Api, stack: Stack) -> None:
    created = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="create")
    message = created.json()["message_id"]
    base = f"/v1/messages/{message}"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    steps = [
        (created, "DraftCreated"),
        (
            await api.call("PATCH", base, {"content": {**CONTENT, "subject": "Hello"}}),
            "DraftEdited",
        ),
        (
            await api.call("POST", f"{base}/recipients", {"contacts": CONTACTS}),
            "RecipientsAdded",
        ),
        (
            await api.call("DELETE", f"{base}/recipients", {"contact_ids": ["c2"]}),
            "RecipientsRemoved",
        ),
        (await api.call("PUT", f"{base}/schedule", {"send_at": later}), "MessageScheduled"),
        (await api.call("POST", f"{base}/unschedule"), "MessageUnscheduled"),
        (await api.call("PUT", f"{base}/schedule", {"send_now": True}), "MessageScheduled"),
    ]
    await until_sending(stack, message)
    steps += [
        (
            await api.call("POST", f"{base}/pause", {"reason": "typo"}, **{"X-Actor-User": "ada"}),
            "MessagePaused",
        ),
        (await api.call("POST", f"{base}/resume"), "MessageResumed"),
        (await api.call("POST", f"{base}/copy", {"exclude_delivered": True}), "MessageCopied"),
        # No delivery worker runs here: released recipients await their outcomes, so the
        # message is still sending and can be canceled.
        (await api.call("POST", f"{base}/cancel", {"reason": "done"}), "MessageCanceled"),
    ]

    for answer, event_type in steps:
        assert answer.status_code in (200, 201), answer.text
        mine = [e for e in await on_topic(stack, answer) if str(e.message_id) == message]
        assert [e.type for e in mine] == [event_type], answer.json()
        assert answer.json()["sequence"] == mine[-1].sequence
    assert steps[-1][0].json()["status"] == "canceled"
    events = await stack.events_of(uuid.UUID(message))
    final = fold(events)
    assert final is not None and final.status.value == "canceled"
    paused = next(e for e in events if e.type == "MessagePaused")
    assert (paused.actor.kind, paused.actor.user_id) == ("user", "ada")
    assert next(e for e in events if e.type == "MessageCanceled").actor.service == "api"

    copy = steps[-2][0]
    new_id = copy.json()["new_message_id"]
    assert copy.status_code == 201 and copy.headers["location"] == f"/v1/messages/{new_id}"

    async def copy_exists() -> bool:
        return "DraftCreated" in await history(stack, new_id)

    await stack.wait_for("the copy's draft on its own partition", copy_exists)


async def test_rejections_carry_their_code_and_write_nothing(
    api: Api, stack: Stack, client: httpx.AsyncClient, database_url: str
) -> None:
    message = await api.create()

    unknown = await api.call("POST", f"/v1/messages/{uuid.uuid4()}/pause")
    not_now = await api.call("POST", f"/v1/messages/{message}/pause")
    past = await api.call(
        "PUT",
        f"/v1/messages/{message}/schedule",
        {"send_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
    )
    stranger = Api(client, cli(database_url, "create", "--account", f"other-{uuid.uuid4().hex}"))
    theirs = await stranger.call("POST", f"/v1/messages/{message}/cancel")
    nobody = await api.client.post(f"/v1/messages/{message}/pause")

    assert unknown.status_code == 404 and unknown.json()["detail"]["code"] == "not_found"
    assert not_now.status_code == 409
    problem = not_now.json()["detail"]
    assert (problem["code"], problem["status"]) == ("not_allowed", "draft")
    assert "ScheduleMessage" in problem["allowed"]
    assert past.status_code == 409
    assert (past.json()["detail"]["code"], past.json()["detail"]["field"]) == (
        "conflict",
        "send_at",
    )
    assert theirs.status_code == 404
    assert set(theirs.json()["detail"]) == set(unknown.json()["detail"])
    assert theirs.json()["detail"]["code"] == "not_found"
    assert nobody.status_code == 401 and nobody.json()["detail"]["code"] == "unauthenticated"
    assert await history(stack, message) == ["DraftCreated"]


async def test_input_refused_at_the_edge_writes_nothing(api: Api, stack: Stack) -> None:
    message = await api.create()
    base = f"/v1/messages/{message}"
    results_before = len(await stack.results())
    events_before = len(await stack.events())
    too_many = [{"contact_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(MAX_CHUNK + 1)]
    bad_zone = [{"contact_id": "z", "email": "z@example.org", "time_zone": "Mars/Olympus"}]

    malformed = await api.client.post(
        "/v1/messages",
        content=b'{"content": {"name": ',
        headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
    )
    answers = {
        "malformed JSON": (malformed, None),
        "unknown field": (
            await api.call("POST", "/v1/messages", {"content": CONTENT, "colour": "red"}),
            "colour",
        ),
        "oversized chunk": (
            await api.call("POST", f"{base}/recipients", {"contacts": too_many}),
            "contacts",
        ),
        "invalid time zone": (
            await api.call("POST", f"{base}/recipients", {"contacts": bad_zone}),
            "contacts.0.time_zone",
        ),
        "two send times": (
            await api.call(
                "PUT", f"{base}/schedule", {"send_now": True, "send_at_local": "2030-01-01T09:00"}
            ),
            None,
        ),
        "throttle with time zones": (
            await api.call(
                "PATCH",
                base,
                {
                    "plan": {
                        "mode": "recipient_timezone",
                        "throttle": {"batch_size": 10, "interval_seconds": 3600},
                    }
                },
            ),
            "plan",
        ),
    }

    # A rule between members each valid alone is a 409 `conflict` (the document allows the
    # request), still refused at the edge; the rest is 422 `invalid`.
    between = {"throttle with time zones"}
    for name, (answer, field) in answers.items():
        expected = (409, "conflict") if name in between else (422, "invalid")
        assert answer.status_code == expected[0], (name, answer.text)
        assert answer.json()["detail"]["code"] == expected[1], name
        assert answer.json()["detail"].get("field") == field, name
    # Nothing was published: no result, no event (the processor answers every command).
    assert len(await stack.results()) == results_before
    assert len(await stack.events()) == events_before


async def test_the_same_idempotency_key_returns_the_first_outcome(api: Api, stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = await api.call("POST", "/v1/messages", {"content": CONTENT}, key=key)
    again = await api.call("POST", "/v1/messages", {"content": CONTENT}, key=key)
    other = await api.call(
        "POST", "/v1/messages", {"content": {**CONTENT, "name": "Other"}}, key=key
    )

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422
    assert other.json()["detail"]["code"] == "idempotency_key_reused"
    assert await history(stack, first.json()["message_id"]) == ["DraftCreated"]
    assert len((await stack.results())[uuid.UUID(first.json()["command_id"])]) == 1


async def test_a_retry_after_the_processor_was_killed_is_applied_once(
    api: Api, stack: Stack, database_url: str
) -> None:
    message = await api.create()
    for process in stack.processes:
        stack.kill(process)  # SIGKILL: no clean shutdown, no goodbye
    key = uuid.uuid4().hex
    body = {"contacts": [{"contact_id": "a", "email": "a@example.org"}]}
    path = f"/v1/messages/{message}/recipients"

    async with serving(stack, database_url, wait_s=1.0) as impatient:
        first = await Api(impatient, api.key).call("POST", path, body, key=key)

        # No processor: the outcome is not known in time; the API says where to look.
        assert first.status_code == 202, first.text
        assert first.headers["location"] == first.json()["status_url"]
        status = await Api(impatient, api.key).call("GET", first.json()["status_url"])
        assert status.json()["state"] == "pending"

    stack.spawn()
    retried = await api.call("POST", path, body, key=key)

    assert retried.status_code == 200, retried.text
    assert retried.json()["command_id"] == first.json()["command_id"]
    assert await history(stack, message) == ["DraftCreated", "RecipientsAdded"]
    outcome = (await api.call("GET", first.json()["status_url"])).json()
    assert outcome["state"] == "done"
    assert outcome["http_status"] == 200 and outcome["response"] == retried.json()
    # The command may have been published twice (first try, retry): decided once.
    command_id = uuid.UUID(first.json()["command_id"])
    assert {r.outcome for r in (await stack.results())[command_id]} == {"accepted"}


async def test_the_accounts_default_time_zone_reaches_the_schedule(
    api: Api, stack: Stack, account: str, database_url: str
) -> None:
    assert cli(database_url, "time-zone", "--account", account, "Asia/Kathmandu") == (
        "Asia/Kathmandu"
    )
    message = await api.create(plan={"mode": "recipient_timezone"})

    answer = await api.call(
        "PUT", f"/v1/messages/{message}/schedule", {"send_at_local": "2031-03-01T09:00:00"}
    )

    assert answer.status_code == 200, answer.text
    (scheduled,) = await on_topic(stack, answer)
    assert isinstance(scheduled, MessageScheduled)
    assert scheduled.default_time_zone == "Asia/Kathmandu"
    assert scheduled.send_at == datetime(2031, 3, 1, 3, 15, tzinfo=UTC)  # 09:00 at +05:45


async def test_fifty_concurrent_pause_resume_cancel_requests_form_a_valid_history(
    api: Api, stack: Stack
) -> None:
    message = await api.create()
    await api.call("POST", f"/v1/messages/{message}/recipients", {"contacts": CONTACTS})
    await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_now": True})
    await until_sending(stack, message)
    actions = ["pause", "resume", "cancel", "pause", "resume"] * 10

    answers = await asyncio.gather(
        *(
            api.call("POST", f"/v1/messages/{message}/{action}", key=f"race-{i}")
            for i, action in enumerate(actions)
        )
    )

    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    events = await stack.events_of(uuid.UUID(message))
    final = fold(events)  # a valid history, or this raises
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    lifecycle = [
        e for e in events if e.type in {"MessagePaused", "MessageResumed", "MessageCanceled"}
    ]
    answered = sorted(
        uuid.UUID(ref["event_id"])
        for a in answers
        if a.status_code == 200
        for ref in a.json()["events"]
    )
    assert sorted(e.event_id for e in lifecycle) == answered
    # Accepted changes alternate pause/resume and end at most once, with the cancel.
    kinds = [e.type for e in lifecycle]
    assert all(a != b for a, b in itertools.pairwise(kinds))
    assert "MessageCanceled" not in kinds[:-1]
    assert final is not None
    if "MessageCanceled" in kinds:
        assert final.status.value == "canceled"


async def test_without_kafka_the_api_is_up_and_commands_are_503(
    database_url: str, account: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    app = create_app(
        Settings(
            database_url=database_url,
            kafka_bootstrap_servers=nowhere,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            command_wait_s=0.5,
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        api = Api(client, cli(database_url, "create", "--account", account))
        health = await client.get("/health")
        answer = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k")

    assert health.status_code == 503
    assert answer.status_code == 503, answer.text
    assert answer.json()["detail"]["code"] == "unavailable"
