"""Each endpoint becomes its command, for the caller's account, with the right answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from schemas import (
    AddRecipients,
    CancelMessage,
    CopyMessage,
    CreateDraft,
    DiscardDraft,
    EditDraft,
    PauseMessage,
    RemoveRecipients,
    ResumeMessage,
    ScheduleMessage,
    UnscheduleMessage,
)
from services.commands.ids import created_message_id
from tests.commands.conftest import CONTENT, Api, Build

CONTACTS = [{"contact_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(3)]


async def sending(api: Api) -> str:
    message = await api.create()
    await api.call("POST", f"/v1/messages/{message}/recipients", {"contacts": CONTACTS})
    await api.call("PUT", f"/v1/messages/{message}/schedule", {"send_now": True})
    api.bus.tick(datetime.now(UTC) + timedelta(seconds=1))
    assert api.bus.states[uuid.UUID(message)].status.value == "sending"
    return message


async def test_create_answers_201_with_the_new_message_and_its_location(api: Api) -> None:
    answer = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k1")

    body = answer.json()
    command = api.bus.published[0].command
    assert answer.status_code == 201
    assert isinstance(command, CreateDraft)
    assert body["message_id"] == str(command.message_id)
    assert command.message_id == created_message_id(command.command_id, "create")
    assert answer.headers["location"] == f"/v1/messages/{command.message_id}"
    assert body["status"] == "draft" and body["sequence"] == 1
    assert [e["type"] for e in body["events"]] == ["DraftCreated"]


async def test_every_command_endpoint_publishes_its_command(api: Api) -> None:
    draft = await api.create()
    base = f"/v1/messages/{draft}"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    calls = [
        ("PATCH", base, {"content": {**CONTENT, "subject": "New"}}, EditDraft, 200),
        ("POST", f"{base}/recipients", {"contacts": CONTACTS}, AddRecipients, 200),
        ("DELETE", f"{base}/recipients", {"contact_ids": ["c2"]}, RemoveRecipients, 200),
        ("PUT", f"{base}/schedule", {"send_at": later}, ScheduleMessage, 200),
        ("POST", f"{base}/unschedule", None, UnscheduleMessage, 200),
        ("POST", f"{base}/copy", {"exclude_delivered": True}, CopyMessage, 201),
        ("POST", f"{base}/discard", None, DiscardDraft, 200),
    ]
    for method, path, body, kind, status in calls:
        answer = await api.call(method, path, body)
        assert answer.status_code == status, (path, answer.text)
        assert isinstance(api.bus.published[-1].command, kind)
        assert answer.json()["events"], path

    live = await sending(api)
    for action, kind in (
        ("pause", PauseMessage),
        ("resume", ResumeMessage),
        ("cancel", CancelMessage),
    ):
        answer = await api.call("POST", f"/v1/messages/{live}/{action}")
        assert answer.status_code == 200, answer.text
        assert isinstance(api.bus.published[-1].command, kind)
    assert answer.json()["status"] == "canceled"


async def test_copy_names_the_new_draft(api: Api) -> None:
    original = await api.create()

    answer = await api.call("POST", f"/v1/messages/{original}/copy", key="copy-1")

    command = api.bus.published[-1].command
    assert isinstance(command, CopyMessage)
    assert answer.status_code == 201
    assert answer.json()["message_id"] == original
    assert answer.json()["new_message_id"] == str(command.new_message_id)
    assert answer.headers["location"] == f"/v1/messages/{command.new_message_id}"
    assert api.bus.states[command.new_message_id].status.value == "draft"


async def test_reasons_reach_the_command(api: Api) -> None:
    message = await sending(api)

    await api.call("POST", f"/v1/messages/{message}/pause", {"reason": "typo in subject"})

    command = api.bus.published[-1].command
    assert isinstance(command, PauseMessage) and command.reason == "typo in subject"


async def test_the_actor_is_the_named_operator_or_the_api_service(api: Api) -> None:
    await api.call("POST", "/v1/messages", {"content": CONTENT}, **{"X-Actor-User": "ada"})
    await api.call("POST", "/v1/messages", {"content": CONTENT})

    operator, service = (r.actor for r in api.bus.published)
    assert (operator.kind, operator.account_id, operator.user_id) == ("user", "acct-a", "ada")
    assert (service.kind, service.account_id, service.service) == ("service", "acct-a", "api")


async def test_the_record_carries_the_clock_correlation_and_the_accounts_zone(api: Api) -> None:
    correlation = uuid.uuid4()
    before = datetime.now(UTC)

    await api.call("POST", "/v1/messages", {"content": CONTENT}, api_key="key-b")
    await api.call(
        "POST", "/v1/messages", {"content": CONTENT}, **{"X-Correlation-Id": str(correlation)}
    )

    theirs, ours = api.bus.published
    assert theirs.default_time_zone == "Europe/Berlin" and ours.default_time_zone == "UTC"
    assert before <= ours.issued_at <= datetime.now(UTC)
    assert theirs.correlation_id == theirs.command.command_id
    assert ours.correlation_id == correlation


async def test_the_lifespan_starts_and_stops_the_bus(build: Build) -> None:
    async with build() as api:
        assert api.bus.started
    assert not api.bus.started
