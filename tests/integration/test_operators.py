"""Operators of the web UI on the real Postgres: the CLI creates, lists and disables them; a
sign-in makes a server-side session (only the token's hash stored); repeated failures lock the
operator out; disabling ends the sessions."""

from __future__ import annotations

import subprocess
import uuid

import asyncpg
import pytest

from bench.harness.spawn import run_cli
from services.web.sessions import UiStore, token_hash

PASSWORD = "a long enough password"


def cli(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_cli("services.web.operators", database_url, *args, stdin=stdin, timeout=60)


@pytest.fixture
def email() -> str:
    return f"op-{uuid.uuid4().hex[:10]}@example.org"


async def test_create_list_sign_in_lockout_and_disable(database_url: str, email: str) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    made = cli(
        database_url,
        "create",
        "--account",
        account,
        "--email",
        email,
        "--name",
        "Grace Hopper",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    user_id = made.stdout.split()[0]
    listed = cli(database_url, "list", "--account", account)
    assert f"{user_id}  {account}  {email}  active  Grace Hopper" in listed.stdout
    again = cli(
        database_url,
        "create",
        "--account",
        account,
        "--email",
        email.upper(),
        "--name",
        "Twin",
        stdin=PASSWORD + "\n",
    )
    assert again.returncode == 2 and "exists" in again.stderr
    short = cli(
        database_url,
        "create",
        "--account",
        account,
        "--email",
        f"x{email}",
        "--name",
        "Short",
        stdin="short\n",
    )
    assert short.returncode == 2 and "at least 12 characters" in short.stderr

    store = UiStore(database_url, session_hours=1, lockout_after=3)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT password_hash FROM operators WHERE user_id = $1", user_id
        )
        assert stored.startswith("$argon2id$") and PASSWORD not in stored

        signed = await store.sign_in(email.upper(), PASSWORD)  # the address in any case
        assert signed.token is not None
        session = await store.session(signed.token)
        assert session is not None
        assert (session.user_id, session.account_id, session.display_name) == (
            user_id,
            account,
            "Grace Hopper",
        )
        kept = await conn.fetchval(
            "SELECT count(*) FROM operator_sessions WHERE token_hash = $1",
            token_hash(signed.token),
        )
        assert kept == 1
        assert await store.session("forged") is None

        for _ in range(3):
            assert (await store.sign_in(email, "wrong")).error == "Wrong email or password."
        locked = await store.sign_in(email, PASSWORD)
        assert locked.token is None and "Too many failed sign-ins" in (locked.error or "")
        assert (await store.sign_in("nobody@example.org", PASSWORD)).error == (
            "Wrong email or password."
        )

        disabled = cli(database_url, "disable", email)
        assert disabled.returncode == 0, disabled.stderr
        assert await store.session(signed.token) is None  # the session ended
        await conn.execute("UPDATE operators SET locked_until = NULL WHERE user_id = $1", user_id)
        refused = await store.sign_in(email, PASSWORD)
        assert refused.token is None and "disabled" in (refused.error or "")
        assert cli(database_url, "disable", email).returncode == 1
    finally:
        await conn.close()
        await store.close()
