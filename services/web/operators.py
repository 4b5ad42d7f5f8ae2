"""Operators of the web UI: people of an account who sign in with an email and a password.

Created, listed and disabled from the command line, like the API keys. Passwords are stored as
argon2id hashes (argon2-cffi's defaults: memory-hard, salted); a hash made with older
parameters is replaced at the next successful sign-in.

    python -m services.web.operators create --account ACCOUNT --email EMAIL --name NAME
        [--password-file PATH]   # else the password is read from the terminal (or stdin)
    python -m services.web.operators list [--account ACCOUNT]
    python -m services.web.operators disable EMAIL
    python -m services.web.operators dev-operator [--account dev]   # what `make run` prints
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schemas.values import EmailAddress
from services.commands.apikeys import ACCOUNT, InvalidAccountError
from services.common.admin import AdminCli, renewed, reported
from services.common.settings import Settings

__all__ = [
    "DEV_EMAIL",
    "MIN_PASSWORD",
    "InvalidOperatorError",
    "Operator",
    "create_operator",
    "disable_operator",
    "hash_password",
    "list_operators",
    "verify_password",
]

MIN_PASSWORD = 12
DEV_EMAIL = "dev@example.org"

_HASHER = PasswordHasher()
# Verified when the email is unknown, so that an unknown address takes as long as a wrong
# password (the answer time does not tell which addresses are operators).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class InvalidOperatorError(ValueError):
    """Raised for a malformed email, an empty name, a short password or a taken email."""


@dataclass(frozen=True)
class Operator:
    user_id: str
    account_id: str
    email: str
    display_name: str
    created_at: datetime
    disabled_at: datetime | None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored` (None: an unknown operator, always False)."""
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


def _check(account_id: str, email: str, name: str, password: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    if not ACCOUNT.match(account_id):
        raise InvalidAccountError(f"invalid account id {account_id!r}")
    try:
        address: str = TypeAdapter(EmailAddress).validate_python(email)
    except ValidationError:
        raise InvalidOperatorError(f"not a valid email address: {email!r}") from None
    if not name.strip() or len(name) > 200:
        raise InvalidOperatorError("the display name must have 1 to 200 characters")
    if len(password) < MIN_PASSWORD:
        raise InvalidOperatorError(f"the password must have at least {MIN_PASSWORD} characters")
    return address


async def create_operator(
    conn: asyncpg.Connection, account_id: str, email: str, name: str, password: str
) -> Operator:
    address = _check(account_id, email, name, password)
    user_id = f"op_{secrets.token_hex(8)}"
    try:
        row = await conn.fetchrow(
            "INSERT INTO operators (user_id, account_id, email, display_name, password_hash)"
            " VALUES ($1, $2, $3, $4, $5)"
            " RETURNING user_id, account_id, email, display_name, created_at, disabled_at",
            user_id,
            account_id,
            address,
            name.strip(),
            hash_password(password),
        )
    except asyncpg.UniqueViolationError:
        raise InvalidOperatorError(f"an operator with email {address} exists") from None
    return Operator(**dict(row))


async def list_operators(
    conn: asyncpg.Connection | asyncpg.Pool, account_id: str | None = None
) -> list[Operator]:
    rows = await conn.fetch(
        "SELECT user_id, account_id, email, display_name, created_at, disabled_at"
        " FROM operators WHERE $1::text IS NULL OR account_id = $1 ORDER BY created_at, user_id",
        account_id,
    )
    return [Operator(**dict(row)) for row in rows]


async def disable_operator(conn: asyncpg.Connection, email: str) -> bool:
    """Disable an operator and end their sessions; False when no enabled operator has it."""
    async with conn.transaction():
        user_id = await conn.fetchval(
            "UPDATE operators SET disabled_at = now()"
            " WHERE lower(email) = lower($1) AND disabled_at IS NULL RETURNING user_id",
            email,
        )
        if user_id is None:
            return False
        await conn.execute("DELETE FROM operator_sessions WHERE user_id = $1", user_id)
    return True


async def dev_operator(conn: asyncpg.Connection, account_id: str, kept: str) -> tuple[str, str]:
    """The development operator `make run` prints: (email, password); `kept` is the password
    printed last time, kept while it still works."""
    stored = await conn.fetchrow(
        "SELECT password_hash FROM operators WHERE lower(email) = lower($1)"
        " AND account_id = $2 AND disabled_at IS NULL",
        DEV_EMAIL,
        account_id,
    )
    if stored is not None and kept and verify_password(stored["password_hash"], kept):
        return DEV_EMAIL, kept
    password = secrets.token_urlsafe(12)
    if stored is None:
        await conn.execute("DELETE FROM operators WHERE lower(email) = lower($1)", DEV_EMAIL)
        await create_operator(conn, account_id, DEV_EMAIL, "Dev Operator", password)
    else:
        await conn.execute(
            "UPDATE operators SET password_hash = $2, failed_signins = 0, locked_until = NULL"
            " WHERE lower(email) = lower($1)",
            DEV_EMAIL,
            hash_password(password),
        )
    return DEV_EMAIL, password


def _read_password(path: str | None) -> str:
    if path is not None:
        return Path(path).read_text().strip()
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InvalidOperatorError("the passwords differ")
        return first
    return sys.stdin.readline().strip()


async def _create(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    password = _read_password(args.password_file)
    op = await create_operator(conn, args.account, args.email, args.name, password)
    print(f"{op.user_id}  {op.account_id}  {op.email}  {op.display_name}")
    return 0


async def _dev_operator(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> int:
    async def password(kept: str | None) -> str:
        return (await dev_operator(conn, args.account, kept or ""))[1]

    print(f"{DEV_EMAIL} {await renewed(settings.dev_operator_file, password)}")
    return 0


async def _disable(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    done = await disable_operator(conn, args.email)
    return reported(done, f"disabled {args.email}", f"no enabled operator {args.email}")


async def _list(conn: asyncpg.Connection, args: argparse.Namespace, _: Settings) -> int:
    for op in await list_operators(conn, args.account):
        state = f"disabled {op.disabled_at:%Y-%m-%d %H:%M}" if op.disabled_at else "active"
        print(f"{op.user_id}  {op.account_id}  {op.email}  {state}  {op.display_name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    cli = AdminCli(
        "python -m services.web.operators",
        errors=(InvalidAccountError, InvalidOperatorError),
        log_name="operators",
    )
    create = cli.command("create", "create an operator of an account", _create)
    create.add_argument("--account", required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True, help="the display name shown in the history")
    create.add_argument("--password-file", help="read the password from this file")
    dev = cli.command("dev-operator", "the development operator make run prints", _dev_operator)
    dev.add_argument("--account", default="dev")
    disable = cli.command("disable", "disable an operator (ends their sessions)", _disable)
    disable.add_argument("email")
    listing = cli.command("list", "list operators (never their passwords)", _list)
    listing.add_argument("--account")
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
