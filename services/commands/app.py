"""The commands REST API (FastAPI). For now it serves its health, its OpenAPI document and the
caller's identity (`GET /v1/whoami`, which proves an API key works); the command endpoints arrive
with a later change.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run
# time, and those name dependencies that only exist inside create_app.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from services.commands.auth import Authenticator
from services.common.checks import KafkaCheck, PostgresCheck
from services.common.health import Check, run_checks
from services.common.settings import Settings

SERVICE = "commands"


def create_app(settings: Settings) -> FastAPI:
    kafka = KafkaCheck(settings.kafka_bootstrap_servers)
    postgres = PostgresCheck(settings.database_url)
    auth = Authenticator(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await kafka.close()
        await postgres.close()
        await auth.close()

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

    return app
