"""Mounts the web UI, its static assets and the offline API documentation page on the commands
service's FastAPI app (services/commands/app.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.commands.gateway import Executor
from services.commands.ports import IdempotencyStore
from services.projections.reader import PostgresViews
from services.web.pages import environment, ui_routes
from services.web.sessions import UiStore

STATIC = Path(__file__).parent / "static"


def install_ui(
    app: FastAPI,
    executor: Executor,
    views: PostgresViews,
    store: IdempotencyStore,
    ui: UiStore,
    *,
    session_hours: float,
) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(ui_routes(executor, views, store, ui, session_hours=session_hours))


def install_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the service's own static files (no CDN: it works offline)."""
    env = environment()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(env.get_template("docs.html").render(title=app.title))

    if not any(getattr(r, "path", None) == "/static" for r in app.routes):
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
