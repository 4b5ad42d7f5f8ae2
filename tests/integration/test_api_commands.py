"""The REST API end to end against the real Kafka, Postgres and processor: HTTP in, the
command's events read back from the events topic with read_committed."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import fold
from schemas import MAX_CHUNK
from services.commands.app import create_app
from services.common.settings import Settings
from tests.integration.processor_harness import REPO_ROOT, Stack

CONTENT = {"name": "News", "from_address": "news@example.org", "subject": "Hi", "body": "Hello"}


def new_key(account: str, database_url: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "services.commands.apikeys", "create", "--account", account],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return made.stdout.strip()


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


@pytest.fixture
async def client(
    stack: Stack, database_url: str, kafka_bootstrap: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=stack.settings.topic_prefix,
        kafka_partitions=stack.settings.kafka_partitions,
        command_wait_s=30.0,
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
def api(client: httpx.AsyncClient, database_url: str) -> Api:
    return Api(client, new_key(f"acct-{uuid.uuid4().hex[:8]}", database_url))


async def history(stack: Stack, message_id: str) -> list[str]:
    return [e.type for e in await stack.events_of(uuid.UUID(message_id))]


async def test_the_whole_lifecycle_over_http(api: Api, stack: Stack) -> None:
    message = await api.create()
    contacts = [{"contact_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(3)]

    edited = await api.call(
        "PATCH", f"/v1/messages/{message}", {"content": {**CONTENT, "subject": "Hello"}}
    )
    added = await api.call("POST", f"/v1/messages/{message}/recipients", {"contacts": contacts})
    removed = await api.call(
        "DELETE", f"/v1/messages/{message}/recipients", {"contact_ids": ["c2"]}
    )
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled = await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_at": later})
    unscheduled = await api.call("POST", f"/v1/messages/{message}/unschedule")
    now = await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_now": True})

    assert [r.status_code for r in (edited, added, removed, scheduled, unscheduled, now)] == [
        200
    ] * 6
    assert scheduled.json()["status"] == "scheduled"
    assert unscheduled.json()["status"] == "draft"

    async def sending() -> bool:
        return "SendingStarted" in await history(stack, message)

    await stack.wait_for("sending", sending)
    paused = await api.call(
        "POST", f"/v1/messages/{message}/pause", {"reason": "typo"}, **{"X-Actor-User": "ada"}
    )
    resumed = await api.call("POST", f"/v1/messages/{message}/resume")
    copied = await api.call("POST", f"/v1/messages/{message}/copy", {"exclude_delivered": True})
    canceled = await api.call("POST", f"/v1/messages/{message}/cancel")

    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert resumed.status_code == 200
    assert copied.status_code == 201 and copied.headers["location"].startswith("/v1/messages/")
    assert canceled.status_code == 200, canceled.text  # no delivery worker yet: still sending
    events = await stack.events_of(uuid.UUID(message))
    fold(events)
    types = [e.type for e in events]
    for expected in (
        "DraftCreated",
        "DraftEdited",
        "RecipientsAdded",
        "RecipientsRemoved",
        "MessageScheduled",
        "MessageUnscheduled",
        "SendingStarted",
        "MessagePaused",
        "MessageResumed",
        "MessageCopied",
    ):
        assert expected in types
    paused_event = next(e for e in events if e.type == "MessagePaused")
    assert paused_event.actor.user_id == "ada"
    assert paused.json()["sequence"] == paused_event.sequence
    new_id = copied.headers["location"].rsplit("/", 1)[1]

    async def copy_exists() -> bool:
        return "DraftCreated" in await history(stack, new_id)

    await stack.wait_for("the copy", copy_exists)


async def test_rejections_carry_their_code_and_reason(
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
    stranger = Api(client, new_key(f"other-{uuid.uuid4().hex[:8]}", database_url))
    theirs = await stranger.call("POST", f"/v1/messages/{message}/pause")
    nobody = await api.client.post(f"/v1/messages/{message}/pause")

    assert unknown.status_code == 404
    assert not_now.status_code == 409
    assert not_now.json()["detail"]["status"] == "draft"
    assert "ScheduleMessage" in not_now.json()["detail"]["allowed"]
    assert past.status_code == 422 and past.json()["detail"]["field"] == "send_at"
    assert theirs.status_code == 404 and theirs.json() == {
        **theirs.json(),
        "detail": {**theirs.json()["detail"], "code": "not_found"},
    }
    assert nobody.status_code == 401
    assert await history(stack, message) == ["DraftCreated"]


@pytest.mark.parametrize(
    ("body", "raw"),
    [
        (None, b"{not json"),
        ({"content": CONTENT, "colour": "red"}, None),
        ({"content": {**CONTENT, "from_address": "not-an-address"}}, None),
        (
            {
                "content": CONTENT,
                "plan": {
                    "mode": "recipient_timezone",
                    "throttle": {"batch_size": 10, "interval_seconds": 3600},
                },
            },
            None,
        ),
    ],
    ids=["malformed JSON", "unknown field", "invalid address", "throttle with time zones"],
)
async def test_invalid_creates_are_422_and_write_nothing(
    api: Api, stack: Stack, body: Any, raw: bytes | None
) -> None:
    before = len(await stack.events())
    if raw is not None:
        answer = await api.client.post(
            "/v1/messages",
            content=raw,
            headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"},
        )
    else:
        answer = await api.call("POST", "/v1/messages", body)

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
    assert len(await stack.events()) == before


async def test_invalid_commands_on_a_message_are_422_and_write_nothing(
    api: Api, stack: Stack
) -> None:
    message = await api.create()
    too_many = [{"contact_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(MAX_CHUNK + 1)]

    answers = [
        await api.call("POST", f"/v1/messages/{message}/recipients", {"contacts": too_many}),
        await api.call(
            "POST",
            f"/v1/messages/{message}/recipients",
            {
                "contacts": [
                    {"contact_id": "z", "email": "z@example.org", "time_zone": "Mars/Olympus"}
                ]
            },
        ),
        await api.call(
            "PUT",
            f"/v1/messages/{message}/schedule",
            {"send_now": True, "send_at_local": "2030-01-01T09:00:00"},
        ),
        await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_at": "tomorrow"}),
    ]

    assert [a.status_code for a in answers] == [422] * 4, [a.text for a in answers]
    assert await history(stack, message) == ["DraftCreated"]


async def test_the_same_idempotency_key_returns_the_first_outcome(api: Api, stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = await api.call("POST", "/v1/messages", {"content": CONTENT}, key=key)
    again = await api.call("POST", "/v1/messages", {"content": CONTENT}, key=key)
    other = await api.call(
        "POST", "/v1/messages", {"content": {**CONTENT, "name": "Other"}}, key=key
    )

    assert first.status_code == 201 and again.status_code == 201
    assert again.json() == first.json()
    assert other.status_code == 422 and other.json()["detail"]["field"] == "Idempotency-Key"
    assert await history(stack, first.json()["message_id"]) == ["DraftCreated"]


async def test_a_retry_after_the_processor_was_killed_is_applied_once(
    api: Api, stack: Stack, client: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
) -> None:
    message = await api.create()
    for process in stack.processes:
        stack.kill(process)
    key = uuid.uuid4().hex
    body = {"contacts": [{"contact_id": "a", "email": "a@example.org"}]}
    path = f"/v1/messages/{message}/recipients"

    # No processor: the API cannot learn the outcome in time and says where to look.
    settings_wait = 30.0
    first = await asyncio.wait_for(api.call("POST", path, body, key=key), settings_wait + 30)
    assert first.status_code == 202, first.text
    assert first.headers["location"] == first.json()["status_url"]
    stack.spawn()
    retried = await api.call("POST", path, body, key=key)

    assert retried.status_code == 200, retried.text
    assert await history(stack, message) == ["DraftCreated", "RecipientsAdded"]

    async def recorded() -> bool:
        answer = await api.call("GET", first.json()["status_url"])
        return answer.json().get("state") == "done"

    await stack.wait_for("the 202 command's outcome stored", recorded)
    outcome = (await api.call("GET", first.json()["status_url"])).json()
    assert outcome["http_status"] == 200 and outcome["response"] == retried.json()


async def test_fifty_concurrent_pause_resume_cancel_requests_form_a_valid_history(
    api: Api, stack: Stack
) -> None:
    message = await api.create()
    contacts = [{"contact_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(3)]
    await api.call("POST", f"/v1/messages/{message}/recipients", {"contacts": contacts})
    await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_now": True})

    async def sending() -> bool:
        return "SendingStarted" in await history(stack, message)

    await stack.wait_for("sending", sending)
    rng = random.Random(11)
    actions = [rng.choice(["pause", "resume", "cancel"]) for _ in range(50)]
    answers = await asyncio.gather(
        *(api.call("POST", f"/v1/messages/{message}/{a}") for a in actions)
    )

    assert {a.status_code for a in answers} <= {200, 409}
    events = await stack.events_of(uuid.UUID(message))
    fold(events)  # a valid history, or this raises
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    changed = [a for a in answers if a.status_code == 200 and a.json()["events"]]
    lifecycle = [
        e for e in events if e.type in {"MessagePaused", "MessageResumed", "MessageCanceled"}
    ]
    assert len(changed) == len(lifecycle)
    if any(e.type == "MessageCanceled" for e in lifecycle):
        assert lifecycle[-1].type == "MessageCanceled"
