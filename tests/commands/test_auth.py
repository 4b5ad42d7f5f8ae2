"""Every /v1 endpoint needs a live key; an account never sees another account's messages."""

from __future__ import annotations

import uuid

import pytest

from services.commands.app import Adapters, create_app
from services.common.settings import Settings
from tests.commands.conftest import CONTENT, Api
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore


def v1_routes() -> list[tuple[str, str]]:
    app = create_app(Settings(), Adapters(bus=FakeBus(), store=FakeStore(), keys=FakeKeys({})))
    # From the OpenAPI document: what the API promises is what is checked.
    return sorted(
        (
            method.upper(),
            # Fixed ids: the test ids stay the same from run to run.
            path.replace("{message_id}", str(uuid.UUID(int=1))).replace(
                "{command_id}", str(uuid.UUID(int=2))
            ),
        )
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    )


@pytest.mark.parametrize(("method", "path"), v1_routes())
@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Basic a2V5LWE6", "Bearer unknown-key", "key-a"]
)
async def test_every_v1_route_needs_a_live_key(
    api: Api, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    answer = await api.client.request(method, path, headers=headers, json={"content": CONTENT})

    assert answer.status_code == 401
    assert answer.json()["detail"]["code"] == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"
    assert api.bus.published == []


async def test_another_accounts_message_is_answered_as_unknown(api: Api) -> None:
    theirs = await api.create(api_key="key-b")

    foreign = await api.call("POST", f"/v1/messages/{theirs}/cancel", api_key="key-a")
    unknown = await api.call("POST", f"/v1/messages/{uuid.uuid4()}/cancel", api_key="key-a")

    assert foreign.status_code == unknown.status_code == 404
    same = {"code", "message", "command_id"}
    assert set(foreign.json()["detail"]) == set(unknown.json()["detail"]) == same
    assert foreign.json()["detail"]["code"] == "not_found"
    assert [e.type for e in api.bus.events[uuid.UUID(theirs)]] == ["DraftCreated"]


async def test_another_accounts_command_outcome_is_not_found(api: Api) -> None:
    made = await api.call("POST", "/v1/messages", {"content": CONTENT}, api_key="key-b")
    path = f"/v1/commands/{made.json()['command_id']}"

    assert (await api.call("GET", path, api_key="key-b")).status_code == 200
    assert (await api.call("GET", path, api_key="key-a")).status_code == 404


async def test_the_same_idempotency_key_in_two_accounts_names_two_commands(api: Api) -> None:
    a = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k", api_key="key-a")
    b = await api.call("POST", "/v1/messages", {"content": CONTENT}, key="k", api_key="key-b")

    assert a.status_code == b.status_code == 201
    assert a.json()["command_id"] != b.json()["command_id"]
    assert a.json()["message_id"] != b.json()["message_id"]
