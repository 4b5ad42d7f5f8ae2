"""The commands REST API (FastAPI): every command of the product (services/commands/api.py),
the caller's identity (`GET /v1/whoami`), health and the OpenAPI document. See docs/api.md.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run
# time, and those name dependencies that only exist inside create_app.
import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import structlog
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.commands.api import command_routes
from services.commands.auth import Authenticator
from services.commands.bus import KafkaCommandBus
from services.commands.store import IdempotencyStore
from services.common.checks import KafkaCheck, PostgresCheck
from services.common.health import Check, run_checks
from services.common.settings import Settings
from services.common.topics import Topics, ensure_topics

SERVICE = "commands"

log = structlog.get_logger(__name__)


def create_app(settings: Settings) -> FastAPI:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    postgres = PostgresCheck(settings.database_url)
    auth = Authenticator(settings.database_url)
    topics = Topics(settings.topic_prefix)
    bus = KafkaCommandBus(settings, topics)

    connected = asyncio.Event()

    async def connect() -> None:
        # Kafka may come up after the API: keep trying in the background, and answer command
        # requests with 503 until then (health says what is wrong), rather than exit.
        delay = 0.5
        while True:
            try:
                await ensure_topics(settings)
                await bus.start()
                connected.set()
                return
            except (KafkaError, OSError) as error:
                log.warning("kafka not ready, retrying", error=repr(error), retry_in_s=delay)
                await bus.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connecting = asyncio.create_task(connect())
        # In tests and at a normal start Kafka is there: wait briefly so the first request
        # does not get a 503 for nothing.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(connected.wait()), 10)
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await bus.stop()
            await kafka.close()
            await postgres.close()
            await auth.close()

    def connected_bus() -> KafkaCommandBus:
        if not connected.is_set():
            raise HTTPException(503, "not connected to Kafka yet; see /health")
        return bus

    async def store() -> IdempotencyStore:
        return IdempotencyStore(await auth.pool())

    app = FastAPI(
        title="mailctl commands",
        summary="Control batch email sends: schedule, pause, resume, cancel.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.get(
        "/health",
        tags=["operations"],
        summary="Whether the service and the servers it needs are reachable",
        responses={503: {"description": "A dependency check failed; the body says which."}},
    )
    async def health() -> JSONResponse:
        checks: dict[str, Check] = {"kafka": kafka, "postgres": postgres}
        healthy, report = await run_checks(SERVICE, checks, settings.health_check_timeout)
        return JSONResponse(report, status_code=200 if healthy else 503)

    @app.get(
        "/v1/whoami",
        tags=["accounts"],
        summary="The account the presented API key belongs to",
        responses={401: {"description": "No key, or a malformed, unknown or revoked one."}},
    )
    async def whoami(account: Annotated[str, Depends(auth.account)]) -> dict[str, str]:
        return {"account_id": account}

    app.include_router(command_routes(auth.account, connected_bus, store, settings.command_wait_s))

    @app.exception_handler(ValidationError)
    async def invalid_command(_: Request, error: ValidationError) -> JSONResponse:
        # A body that parsed but does not make a valid command (e.g. two send times at once):
        # 422 naming the field, like any other invalid input.
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        return JSONResponse(
            {"detail": {"code": "invalid", "message": first["msg"], "field": field}},
            status_code=422,
        )

    return app
