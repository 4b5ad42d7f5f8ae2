"""The API built with hand-written fakes for the bus, the key store and the idempotency store:
no server is needed (the same app against the real ones: tests/integration/test_api_*.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.commands.app import Adapters, create_app
from services.common.settings import Settings
from tests.commands.fakes import FakeBus, FakeKeys, FakeStore

KEYS = {"key-a": "acct-a", "key-b": "acct-b"}
CONTENT = {"name": "News", "from_address": "news@example.org", "subject": "Hi", "body": "Hello"}


@dataclass
class Api:
    client: httpx.AsyncClient
    bus: FakeBus
    store: FakeStore

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        api_key: str = "key-a",
        **headers: str,
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {api_key}", **headers}
        if key is not None:
            sent["Idempotency-Key"] = key
        return await self.client.request(method, path, json=body, headers=sent)

    async def create(self, api_key: str = "key-a") -> str:
        answer = await self.call("POST", "/v1/messages", {"content": CONTENT}, api_key=api_key)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["message_id"])


Build = Callable[..., AbstractAsyncContextManager[Api]]


@pytest.fixture
def build() -> Build:
    @asynccontextmanager
    async def make(
        wait_s: float = 2.0, background_wait_s: float = 30.0, **settings: Any
    ) -> AsyncIterator[Api]:
        bus, store = FakeBus(), FakeStore(zones={"acct-b": "Europe/Berlin"})
        app = create_app(
            Settings(command_wait_s=wait_s, **settings),
            Adapters(bus=bus, store=store, keys=FakeKeys(KEYS)),
            background_wait_s=background_wait_s,
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api"
            ) as client,
        ):
            yield Api(client, bus, store)

    return make


@pytest.fixture
async def api(build: Build) -> AsyncIterator[Api]:
    async with build() as made:
        yield made
