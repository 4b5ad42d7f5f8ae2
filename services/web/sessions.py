"""Sign-in, server-side sessions and CSRF tokens of the web UI (docs/ui.md).

The session cookie holds a random 256-bit token; the database keeps only its SHA-256 (a copy of
the table gives no usable session), the operator it belongs to, an expiry and the session's CSRF
token. Every state-changing request must echo that token (a form field or the `X-CSRF-Token`
header htmx sends). Repeated failed sign-ins lock the operator out for a growing while
(:func:`lockout`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.common.pool import LazyPool
from services.web.operators import hash_password, needs_rehash, verify_password

__all__ = ["Session", "SignIn", "UiStore", "lockout", "new_token", "token_hash"]

#: The lockout after the first locked attempt, doubled at every further failure, up to the cap.
LOCKOUT_BASE = timedelta(seconds=30)
LOCKOUT_CAP = timedelta(minutes=15)


def lockout(failures: int, after: int) -> timedelta | None:
    """How long an operator is locked out after `failures` consecutive failed sign-ins: not at
    all below `after`, then 30 s, 1 min, 2 min ... up to 15 min (pure; tested)."""
    if failures < after:
        return None
    wait: timedelta = LOCKOUT_BASE * (2 ** min(failures - after, 16))
    return min(wait, LOCKOUT_CAP)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in operator."""

    user_id: str
    account_id: str
    email: str
    display_name: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: a session token, or why not (in plain words)."""

    token: str | None = None
    error: str | None = None


WRONG = "Wrong email or password."


class UiStore(LazyPool):
    """Operators and sessions in Postgres (migration 0009), behind one lazily opened pool."""

    def __init__(self, dsn: str, *, session_hours: float, lockout_after: int) -> None:
        super().__init__(dsn, max_size=4)
        self.session_length = timedelta(hours=session_hours)
        self.lockout_after = lockout_after

    async def sign_in(self, email: str, password: str) -> SignIn:
        pool = await self.pool()
        row = await pool.fetchrow(
            "SELECT user_id, password_hash, disabled_at, locked_until, now() AS now"
            " FROM operators WHERE lower(email) = lower($1)",
            email.strip(),
        )
        if row is not None and row["locked_until"] is not None and row["locked_until"] > row["now"]:
            wait = row["locked_until"] - row["now"]
            seconds = max(1, int(wait.total_seconds()) + 1)
            return SignIn(
                error=f"Too many failed sign-ins: this account is locked. Try again in "
                f"{seconds} seconds."
            )
        stored = None if row is None else str(row["password_hash"])
        # argon2 is deliberately slow (tens of milliseconds of CPU): off the event loop.
        ok = await asyncio.to_thread(verify_password, stored, password)
        if row is None:
            return SignIn(error=WRONG)
        if not ok:
            failures: int = await pool.fetchval(
                "UPDATE operators SET failed_signins = failed_signins + 1"
                " WHERE user_id = $1 RETURNING failed_signins",
                row["user_id"],
            )
            locked = lockout(failures, self.lockout_after)
            if locked is not None:
                await pool.execute(
                    "UPDATE operators SET locked_until = now() + $2 WHERE user_id = $1",
                    row["user_id"],
                    locked,
                )
            return SignIn(error=WRONG)
        if row["disabled_at"] is not None:
            return SignIn(error="This operator is disabled. Ask an administrator.")
        token = new_token()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE operators SET failed_signins = 0, locked_until = NULL WHERE user_id = $1",
                row["user_id"],
            )
            if stored is not None and needs_rehash(stored):
                await conn.execute(
                    "UPDATE operators SET password_hash = $2 WHERE user_id = $1",
                    row["user_id"],
                    hash_password(password),
                )
            await conn.execute(
                "INSERT INTO operator_sessions (token_hash, user_id, csrf_token, expires_at)"
                " VALUES ($1, $2, $3, now() + $4)",
                token_hash(token),
                row["user_id"],
                new_token(),
                self.session_length,
            )
            # Expired sessions of this operator are tidied away at each sign-in.
            await conn.execute(
                "DELETE FROM operator_sessions WHERE user_id = $1 AND expires_at < now()",
                row["user_id"],
            )
        return SignIn(token=token)

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie's token (None: unknown, expired, or operator disabled)."""
        if not token or len(token) > 100:
            return None
        row = await (await self.pool()).fetchrow(
            "SELECT o.user_id, o.account_id, o.email, o.display_name, s.csrf_token, s.expires_at"
            " FROM operator_sessions s JOIN operators o ON o.user_id = s.user_id"
            " WHERE s.token_hash = $1 AND s.expires_at > now() AND o.disabled_at IS NULL",
            token_hash(token),
        )
        return None if row is None else Session(**dict(row))

    async def sign_out(self, token: str) -> None:
        await (await self.pool()).execute(
            "DELETE FROM operator_sessions WHERE token_hash = $1", token_hash(token)
        )

    async def display_names(self, account_id: str, user_ids: set[str]) -> dict[str, str]:
        """The names of an account's operators, for actors recorded without one."""
        if not user_ids:
            return {}
        rows = await (await self.pool()).fetch(
            "SELECT user_id, display_name FROM operators"
            " WHERE account_id = $1 AND user_id = ANY($2::text[])",
            account_id,
            sorted(user_ids),
        )
        return {r["user_id"]: r["display_name"] for r in rows}


def utcnow() -> datetime:  # the shell's clock (pages show "now" relative times)
    return datetime.now(UTC)
