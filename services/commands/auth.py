"""Authentication of API requests: `Authorization: Bearer <key>` names exactly one account.

Every endpoint that reads or changes a message depends on `Authenticator.account`, so a request
without a live key never reaches a handler (401), and a handler only ever sees its own account.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from services.commands.ports import KeyStore


class Authenticator:
    """Reads the bearer key of a request and asks the key store whose it is."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def account(self, request: Request) -> str:
        """FastAPI dependency: the caller's account, or 401 with the reason."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        account = await self.keys.account_for(key.strip())
        if account is None:
            raise HTTPException(
                401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        return account
