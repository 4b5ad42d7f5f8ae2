"""The API's Postgres store against the real Postgres: the first row for an Idempotency-Key
stands (also when first tries race), the first answer stands, an account sees only its own
commands, and the account's default time zone is set with the command-line tool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from bench.harness.processor import REPO_ROOT
from services.commands.store import PostgresStore


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(database_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


async def test_racing_first_tries_all_get_the_one_row(store: PostgresStore, account: str) -> None:
    tries = [(f"print-{i}", uuid.uuid4(), uuid.uuid4()) for i in range(10)]

    claims = await asyncio.gather(*(store.claim(account, "key", p, c, m) for p, c, m in tries))

    assert len({(c.fingerprint, c.command_id, c.message_id) for c in claims}) == 1
    assert (claims[0].fingerprint, claims[0].command_id, claims[0].message_id) in tries
    assert all(c.response_status is None for c in claims)


async def test_the_first_answer_stands(store: PostgresStore, account: str) -> None:
    command_id = uuid.uuid4()
    await store.claim(account, "key", "print", command_id, uuid.uuid4())

    await store.answer(command_id, 200, {"status": "paused"})
    await store.answer(command_id, 409, {"detail": {"code": "not_allowed"}})

    again = await store.claim(account, "key", "print", uuid.uuid4(), uuid.uuid4())
    assert (again.command_id, again.response_status) == (command_id, 200)
    assert again.response_body == {"status": "paused"}


async def test_an_account_sees_only_its_own_commands(store: PostgresStore, account: str) -> None:
    command_id = uuid.uuid4()
    await store.claim(account, "key", "print", command_id, uuid.uuid4())

    mine = await store.outcome(account, command_id)
    theirs = await store.outcome(f"{account}-other", command_id)

    assert mine is not None and mine.command_id == command_id
    assert theirs is None


async def test_the_default_time_zone_is_utc_until_set(
    store: PostgresStore, account: str, database_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATABASE_URL": database_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.commands.apikeys", "time-zone", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    before = await store.default_time_zone(account)
    shown = cli("--account", account)
    wrong = cli("--account", account, "Mars/Olympus_Mons")
    set_ = cli("--account", account, "America/New_York")

    assert before == "UTC" and shown.stdout.strip() == "UTC"
    assert wrong.returncode != 0 and "unknown IANA time zone" in wrong.stderr
    assert set_.returncode == 0 and set_.stdout.strip() == "America/New_York"
    assert await store.default_time_zone(account) == "America/New_York"


async def test_the_default_time_zone_is_set_through_the_store(
    store: PostgresStore, account: str
) -> None:
    await store.set_default_time_zone(account, "Asia/Tokyo")
    first = await store.default_time_zone(account)
    await store.set_default_time_zone(account, "Europe/Berlin")

    assert first == "Asia/Tokyo"
    assert await store.default_time_zone(account) == "Europe/Berlin"
