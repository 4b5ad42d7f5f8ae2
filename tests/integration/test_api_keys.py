"""API keys, against the real Postgres: created and revoked with the command-line tool, stored
hashed, and checked by the API (`GET /v1/whoami`): 401 without a live key, the key's account
with one."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench.harness.spawn import run_cli
from services.commands.app import create_app
from services.common.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("services.commands.apikeys", env["DATABASE_URL"], *args, timeout=60, env=env)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DATABASE_URL": database_url,
        "DEV_API_KEY_FILE": str(tmp_path / "dev-api-key"),
    }


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def api(database_url: str, kafka_bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


KEY = re.compile(r"mk_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}")


async def test_a_created_key_names_its_account(
    env: dict[str, str], account: str, api: httpx.AsyncClient
) -> None:
    made = cli(env, "create", "--account", account, "--label", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()

    answer = await api.get("/v1/whoami", headers=bearer(key))

    assert KEY.fullmatch(key), made.stdout
    assert answer.status_code == 200
    assert answer.json() == {"account_id": account}


async def test_the_secret_is_stored_only_as_a_hash(
    env: dict[str, str], account: str, database_url: str
) -> None:
    key = cli(env, "create", "--account", account).stdout.strip()
    key_id, secret = key.removeprefix("mk_").split(".")

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", key_id)
    finally:
        await conn.close()

    assert row is not None and row["account_id"] == account
    assert secret not in " ".join(str(v) for v in row.values())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer mk_0123456789abcdef." + "A" * 43},
    ],
    ids=["no header", "other scheme", "empty", "malformed", "unknown key"],
)
async def test_requests_without_a_live_key_get_401(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    answer = await api.get("/v1/whoami", headers=headers)

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["detail"]


async def test_a_wrong_secret_for_a_real_key_id_gets_401(
    env: dict[str, str], account: str, api: httpx.AsyncClient
) -> None:
    key = cli(env, "create", "--account", account).stdout.strip()
    forged = key[: key.index(".") + 1] + "B" * 43

    answer = await api.get("/v1/whoami", headers=bearer(forged))

    assert answer.status_code == 401


async def test_a_revoked_key_gets_401(
    env: dict[str, str], account: str, api: httpx.AsyncClient
) -> None:
    key = cli(env, "create", "--account", account).stdout.strip()
    key_id = key.removeprefix("mk_").split(".")[0]
    assert (await api.get("/v1/whoami", headers=bearer(key))).status_code == 200

    revoked = cli(env, "revoke", key_id)
    again = cli(env, "revoke", key_id)

    assert revoked.returncode == 0, revoked.stderr
    assert again.returncode == 1  # nothing live left to revoke
    assert (await api.get("/v1/whoami", headers=bearer(key))).status_code == 401
    listed = cli(env, "list", "--account", account).stdout
    assert key_id in listed and "revoked" in listed


def test_the_dev_key_is_the_same_on_every_run_until_revoked(
    env: dict[str, str], account: str
) -> None:
    first = cli(env, "dev-key", "--account", account)
    second = cli(env, "dev-key", "--account", account)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout

    cli(env, "revoke", first.stdout.strip().removeprefix("mk_").split(".")[0])
    third = cli(env, "dev-key", "--account", account)

    assert third.returncode == 0 and third.stdout != first.stdout


def test_an_invalid_account_id_is_refused(env: dict[str, str]) -> None:
    made = cli(env, "create", "--account", "no spaces allowed")

    assert made.returncode == 2
    assert "invalid account id" in made.stderr


async def test_the_cli_prints_only_the_key_even_while_it_migrates_a_new_database(
    env: dict[str, str], database_url: str, account: str
) -> None:
    # A schema of its own stands for a new database: the CLI applies every migration there first,
    # and logs it, which must not end up in the output a script captures.
    schema = f"test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in database_url else "?"
        made = cli(
            {**env, "DATABASE_URL": f"{database_url}{separator}search_path={schema}"},
            "create",
            "--account",
            account,
        )
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()

    assert made.returncode == 0, made.stderr
    assert KEY.fullmatch(made.stdout.strip()), made.stdout
    assert "migration applied" in made.stderr
