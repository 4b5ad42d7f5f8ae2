"""Security headers of every answer of the commands service (docs/ui.md).

The Content-Security-Policy allows scripts and styles from the service itself only: no inline
script, no inline event handler, no eval (htmx runs with ``allowEval: false``), no framing
(``frame-ancestors 'none'``). Swagger UI at /docs gets the same policy for scripts; it sets
inline styles, which its page alone allows.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-src 'self'; frame-ancestors 'none'"
)
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def policy_for(path: str) -> str:
    return DOCS_CSP if path == "/docs" else CSP


class SecurityHeaders:
    """Pure ASGI middleware (not `BaseHTTPMiddleware`, whose task group and memory streams per
    request cost more CPU than the command itself; docs/api.md "Latency"): the headers above
    are added to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = [("Content-Security-Policy", policy_for(path)), *HEADERS.items()]
        if path.startswith("/ui"):
            extra.append(("Cache-Control", "no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)
