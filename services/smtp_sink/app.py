"""The SMTP sink process: the SMTP server and its HTTP JSON API share one event loop.

HTTP API (JSON, OpenAPI at /docs):
  GET    /health              the store answers and the SMTP server is listening
  GET    /messages            received mails, filtered by rcpt / message_id / mail_from, paged
  GET    /messages/{id}       one mail
  GET    /refusals            recipients refused by the failure rules
  GET    /stats               totals and duplicates (by Message-ID, and by Message-ID + recipient)
  PUT    /slow                answer DATA late for matching senders (a slow server; tests)
  DELETE /messages            forget everything (tests)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import structlog
from aiosmtpd.smtp import SMTP
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.common.health import Check, run_checks
from services.common.settings import Settings, split_patterns
from services.smtp_sink.handler import SinkHandler
from services.smtp_sink.store import SinkStore, StoredMessage

SERVICE = "smtp_sink"

log = structlog.get_logger(__name__)


class MessageOut(BaseModel):
    id: int
    received_at: str
    peer: str | None
    mail_from: str
    rcpts: list[str]
    message_id: str | None
    subject: str | None
    size: int
    headers: list[tuple[str, str]]
    body: str

    @classmethod
    def of(cls, stored: StoredMessage) -> MessageOut:
        headers, body = stored.parsed()
        return cls(
            id=stored.id,
            received_at=stored.received_at,
            peer=stored.peer,
            mail_from=stored.mail_from,
            rcpts=stored.rcpts,
            message_id=stored.message_id,
            subject=stored.subject,
            size=stored.size,
            headers=headers,
            body=body,
        )


class MessagesPage(BaseModel):
    items: list[MessageOut]
    total: int
    next_after: int | None


class SinkRuntime:
    """What the lifespan opens and the endpoints use: the store and the SMTP listener."""

    def __init__(self) -> None:
        self._store: SinkStore | None = None
        self._server: asyncio.Server | None = None
        self._handler: SinkHandler | None = None

    @property
    def handler(self) -> SinkHandler:
        if self._handler is None:
            raise RuntimeError("the sink is not started")
        return self._handler

    @property
    def store(self) -> SinkStore:
        if self._store is None:
            raise RuntimeError("the sink is not started")
        return self._store

    @property
    def server(self) -> asyncio.Server:
        if self._server is None:
            raise RuntimeError("the sink is not started")
        return self._server

    async def start(self, settings: Settings) -> None:
        self._store = SinkStore(settings.smtp_sink_db)
        handler = SinkHandler(
            self._store,
            fail_permanent=split_patterns(settings.smtp_sink_fail_permanent),
            fail_transient=split_patterns(settings.smtp_sink_fail_transient),
            data_delay_s=settings.smtp_sink_data_delay_s,
            error_limit=settings.smtp_sink_error_limit,
        )
        self._handler = handler
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(
                handler,
                hostname="mailctl-smtp-sink",
                ident="mailctl SMTP sink",
                enable_SMTPUTF8=settings.smtp_sink_smtputf8,
            ),
            settings.bind_host,
            settings.smtp_port,
        )
        log.info(
            "smtp sink listening",
            smtp=f"{settings.bind_host}:{settings.smtp_port}",
            db=str(settings.smtp_sink_db),
            fail_permanent=handler.fail_permanent,
            fail_transient=handler.fail_transient,
            smtputf8=settings.smtp_sink_smtputf8,
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._store is not None:
            self._store.close()
            self._store = None


def create_app(settings: Settings) -> FastAPI:
    runtime = SinkRuntime()

    def store() -> SinkStore:
        return runtime.store

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start(settings)
        try:
            yield
        finally:
            await runtime.close()

    app = FastAPI(title="mailctl SMTP sink", version="0.1.0", lifespan=lifespan)

    async def store_ok() -> None:
        store().ping()

    async def smtp_listening() -> None:
        if not runtime.server.is_serving():
            raise RuntimeError("SMTP server is not serving")

    @app.get("/health", responses={503: {"description": "The store or the SMTP server failed."}})
    async def health() -> JSONResponse:
        checks: dict[str, Check] = {"store": store_ok, "smtp": smtp_listening}
        healthy, report = await run_checks(SERVICE, checks, settings.health_check_timeout)
        return JSONResponse(report, status_code=200 if healthy else 503)

    @app.get("/messages")
    async def messages(
        rcpt: str | None = None,
        message_id: str | None = None,
        mail_from: str | None = None,
        after: Annotated[int, Query(ge=0, description="cursor: next_after of the last page")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> MessagesPage:
        page, next_after, total = store().find(
            rcpt=rcpt, message_id=message_id, mail_from=mail_from, after=after, limit=limit
        )
        return MessagesPage(
            items=[MessageOut.of(m) for m in page], total=total, next_after=next_after
        )

    @app.get("/deliveries")
    async def deliveries(
        mail_from: str,
        after: Annotated[int, Query(ge=0, description="cursor: the last row of the last page")] = 0,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> list[tuple[int, str | None, str, str]]:
        """Compact list of (row, Message-ID, recipient, received_at) of one sender's mails."""
        return store().deliveries(mail_from=mail_from, after=after, limit=limit)

    @app.get("/messages/{row}", responses={404: {"description": "No such mail."}})
    async def message(row: int) -> MessageOut:
        found = store().get(row)
        if found is None:
            raise HTTPException(404, f"no mail {row}")
        return MessageOut.of(found)

    @app.delete("/messages")
    async def clear() -> dict[str, int]:
        dropped = store().clear()
        log.info("store cleared", dropped=dropped)
        return {"deleted": dropped}

    @app.get("/refusals")
    async def refusals(
        rcpt: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        return store().refusals(rcpt=rcpt, limit=limit)

    @app.put("/slow")
    async def slow(
        mail_from: Annotated[str, Query(min_length=1, description="fnmatch pattern of senders")],
        delay_s: Annotated[float, Query(ge=0, le=60)],
    ) -> dict[str, float]:
        """Answer DATA from these senders `delay_s` late (after recording the mail); 0: normal."""
        runtime.handler.set_slow(mail_from, delay_s)
        log.info("slow senders", mail_from=mail_from, delay_s=delay_s)
        return dict(runtime.handler.slow)

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return store().stats()

    return app
