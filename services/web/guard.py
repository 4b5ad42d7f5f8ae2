"""What every route of the web UI asks of a request (docs/ui.md): who is signed in (the session
cookie), whether a state-changing request carries the session's CSRF token (a form field, or
the `X-CSRF-Token` header htmx and the upload script send), its form, and the operator as the
actor of the commands it issues. One copy for the pages (pages.py) and the audience page
(audience_pages.py).
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import Request

from schemas import Actor
from services.web.sessions import Session, UiStore

__all__ = ["SESSION_COOKIE", "csrf_ok", "form_data", "operator", "signed_in"]

SESSION_COOKIE = "mailctl_session"


async def signed_in(ui: UiStore, request: Request) -> Session | None:
    """The request's live session, or None (no cookie, expired, signed out, disabled)."""
    return await ui.session(request.cookies.get(SESSION_COOKIE, ""))


async def form_data(request: Request) -> dict[str, str]:
    """A url-encoded form body (the only kind the UI posts), first value of each field."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def csrf_ok(request: Request, session: Session, form: dict[str, str]) -> bool:
    """The request carries the session's CSRF token (compared in constant time)."""
    given = request.headers.get("X-CSRF-Token") or form.get("csrf", "")
    return hmac.compare_digest(given.encode(), session.csrf_token.encode())


def operator(session: Session) -> Actor:
    """The signed-in operator as the actor the history records (with their name)."""
    return Actor(
        kind="user",
        account_id=session.account_id,
        user_id=session.user_id,
        display_name=session.display_name,
    )
