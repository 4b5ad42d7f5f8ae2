"""Security headers of every answer of the commands service (docs/ui.md).

The Content-Security-Policy allows scripts and styles from the service itself only: no inline
script, no inline event handler, no eval (htmx runs with ``allowEval: false``), no framing
(``frame-ancestors 'none'``). Swagger UI at /docs gets the same policy for scripts; it sets
inline styles, which its page alone allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

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


def install_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", policy_for(request.url.path))
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/ui"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
