"""The commands REST API (FastAPI): every command of the product (services/commands/api.py),
the caller's identity (`GET /v1/whoami`), health and the OpenAPI document. See docs/api.md.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run
# time, and those name dependencies that only exist inside create_app.
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.values import TimeZoneName
from services.commands.api import command_routes
from services.commands.audience_api import audience_routes
from services.commands.audiences import AudienceService
from services.commands.auth import Authenticator
from services.commands.bodies import Strict
from services.commands.bus import KafkaCommandBus
from services.commands.errors import (
    ERROR_RESPONSES,
    Problem,
    install_error_handlers,
    problem_response,
)
from services.commands.gateway import Executor
from services.commands.ports import CommandBus, IdempotencyStore, KeyStore
from services.commands.read_api import ViewReader, read_routes
from services.commands.store import PostgresStore
from services.common.checks import KafkaCheck, PostgresCheck
from services.common.health import Check, run_checks
from services.common.settings import Settings
from services.delivery.smtp import SmtpPool
from services.projections.reader import PostgresViews
from services.web.app import install_docs, install_ui
from services.web.audience_pages import audience_pages
from services.web.security import install_security_headers
from services.web.sessions import UiStore

SERVICE = "commands"


class AccountSettings(BaseModel):
    account_id: str
    default_time_zone: str = Field(description="an IANA zone name, e.g. Europe/Berlin")


class TimeZoneBody(Strict):
    default_time_zone: TimeZoneName


# How long the API keeps waiting, in the background, for a result it answered 202 for; past it
# the row stays pending and a retry with the same key publishes the command again.
BACKGROUND_WAIT_S = 600.0

# Request bodies read as a stream in pieces (CSV imports), exempt from the body size limit.
STREAMED_SUFFIXES = ("/imports", "/audience/upload")


NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


class BodyLimit:
    """A body larger than the largest record cannot become a command: refused (413) before it
    is read (requests without Content-Length are bounded by the record check). A CSV upload is
    streamed, never held whole, and is exempt. Pure ASGI middleware, not `BaseHTTPMiddleware`
    (whose task group and memory streams per request cost more CPU than the command itself)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("path", "").endswith(STREAMED_SUFFIXES):
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    length = value.decode("latin-1")
                    if length.isdigit() and int(length) > self.max_bytes:
                        refused = problem_response(
                            Problem(
                                code="too_large",
                                message=f"the request body is {length} bytes; at most "
                                f"{self.max_bytes} are accepted: send smaller chunks",
                            )
                        )
                        await refused(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


async def _nothing() -> None:
    return None


@dataclass
class Adapters:
    """The outside world of the API: real (Kafka, Postgres) or fakes in tests."""

    bus: CommandBus
    store: IdempotencyStore
    keys: KeyStore
    checks: dict[str, Check] = field(default_factory=dict)
    close: Callable[[], Awaitable[None]] = _nothing
    views: ViewReader | None = None  # the read API (services/commands/read_api.py) when set
    ui: UiStore | None = None  # the operators' web UI (services/web) when set, on `views`


def real_adapters(settings: Settings) -> Adapters:
    postgres = PostgresStore(settings.database_url)
    kafka = KafkaCheck(settings)
    postgres_check = PostgresCheck(settings.database_url)
    views = PostgresViews(settings.database_url)
    ui = UiStore(
        settings.database_url,
        session_hours=settings.ui_session_hours,
        lockout_after=settings.ui_lockout_after,
    )

    async def close() -> None:
        await ui.close()
        await kafka.close()
        await postgres_check.close()
        await postgres.close()
        await views.close()

    return Adapters(
        bus=KafkaCommandBus(settings),
        store=postgres,
        keys=postgres,
        checks={"kafka": kafka, "postgres": postgres_check},
        close=close,
        views=views,
        ui=ui,
    )


def create_app(
    settings: Settings,
    adapters: Adapters | None = None,
    *,
    background_wait_s: float = BACKGROUND_WAIT_S,
) -> FastAPI:
    parts = adapters or real_adapters(settings)
    auth = Authenticator(parts.keys)
    executor = Executor(
        parts.bus,
        parts.store,
        wait_s=settings.command_wait_s,
        background_wait_s=background_wait_s,
        max_record_bytes=settings.max_record_bytes,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await parts.bus.start()  # creates the topics if missing
        try:
            yield
        finally:
            await executor.close()
            await parts.bus.stop()
            await parts.close()

    app = FastAPI(
        title="mailctl commands",
        summary="Control batch email sends: create, schedule, pause, resume, cancel, copy.",
        description="Every command answers with its outcome once the processor decided it, or "
        "202 with a URL to poll. Authenticate with `Authorization: Bearer <key>`; send an "
        "`Idempotency-Key` with every command to make retries safe. See docs/api.md.",
        version="0.1.0",
        lifespan=lifespan,
        # /docs is served from the service's own files (services/web/app.py); no ReDoc (CDN).
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks: nothing here collects traces or metrics, and
        # asking whether anything does costs every request a lookup of the environment.
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app)
    install_security_headers(app)

    app.add_middleware(BodyLimit, max_bytes=settings.max_record_bytes)

    @app.get(
        "/health",
        tags=["operations"],
        summary="Whether the service and the servers it needs are reachable",
        responses={503: {"description": "A dependency check failed; the body says which."}},
    )
    async def health() -> JSONResponse:
        healthy, report = await run_checks(SERVICE, parts.checks, settings.health_check_timeout)
        return JSONResponse(report, status_code=200 if healthy else 503)

    @app.get(
        "/v1/whoami",
        tags=["accounts"],
        summary="The account the presented API key belongs to",
        responses={401: ERROR_RESPONSES[401]},
    )
    async def whoami(account: Annotated[str, Depends(auth.account)]) -> dict[str, str]:
        return {"account_id": account}

    @app.get(
        "/v1/account",
        tags=["accounts"],
        summary="The account's settings: its default time zone",
        description="`default_time_zone` is the zone of contacts without one, and the zone of "
        "`send_at_local` outside recipient_timezone mode (UTC unless set).",
        responses={401: ERROR_RESPONSES[401]},
    )
    async def account_settings(
        account: Annotated[str, Depends(auth.account)],
    ) -> AccountSettings:
        zone = await parts.store.default_time_zone(account)
        return AccountSettings(account_id=account, default_time_zone=zone)

    @app.put(
        "/v1/account/time-zone",
        tags=["accounts"],
        summary="Change the account's default time zone",
        description="An IANA zone name (422 naming `default_time_zone` otherwise). Commands "
        "issued from then on carry it; messages already scheduled keep the zone they were "
        "scheduled with.",
        responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]},
    )
    async def change_time_zone(
        account: Annotated[str, Depends(auth.account)], body: TimeZoneBody
    ) -> AccountSettings:
        await parts.store.set_default_time_zone(account, body.default_time_zone)
        return AccountSettings(account_id=account, default_time_zone=body.default_time_zone)

    app.include_router(command_routes(auth.account, executor, parts.store))
    if parts.views is not None:
        app.include_router(read_routes(auth.account, parts.views, settings.read_max_wait_s))
    if parts.ui is not None and isinstance(parts.views, PostgresViews):
        install_ui(
            app,
            executor,
            parts.views,
            parts.store,
            parts.ui,
            session_hours=settings.ui_session_hours,
        )
    if isinstance(parts.views, PostgresViews):
        audiences = AudienceService(
            executor,
            parts.views,
            parts.store,
            smtp=SmtpPool(
                settings.smtp_host, settings.smtp_port, size=2, timeout=settings.smtp_timeout_s
            ),
            message_id_domain=settings.message_id_domain,
        )
        app.include_router(audience_routes(auth.account, audiences))
        if parts.ui is not None:
            app.include_router(audience_pages(audiences, parts.views, parts.ui))
    install_docs(app)
    install_openapi(app)
    return app


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the `null` branch of an optional one: a header or query
    parameter is absent or a string, never the JSON null a generator would send as "null"."""
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**kept[0], **rest}
    return schema


def install_openapi(app: FastAPI) -> None:
    """The OpenAPI document as the API behaves: the Bearer scheme declared (every /v1 operation
    needs it), optional parameters without a `null` they could never carry."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = doc.setdefault("components", {})
        components.setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`mk_...`, docs/api.md#authentication-and-accounts).",
        }
        for path, operations in doc.get("paths", {}).items():
            for operation in operations.values():
                if path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}]
                for parameter in operation.get("parameters", []):
                    if "schema" in parameter:
                        parameter["schema"] = _not_null(parameter["schema"])
        app.openapi_schema = doc
        return doc

    app.openapi = document  # type: ignore[method-assign]
