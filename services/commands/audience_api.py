"""REST routes of audiences (issue 16): preview, CSV import and removal, import progress and
problems, export, allowed test addresses and test sends. The work is services/commands/audiences.py;
see docs/api.md "Audiences".

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from schemas import Actor
from schemas.text import ONE_LINE
from schemas.values import ContactId, EmailAddress
from services.commands.audiences import MAX_TEST_ADDRESSES, STATES, AudienceService
from services.commands.errors import ERROR_RESPONSES, ErrorBody, Problem, ProblemError

QueryText = Annotated[str, ONE_LINE] | None


class TestAddressBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: EmailAddress


class TestSendBody(BaseModel):
    """At most 10 addresses, each on the account's allowed test addresses; `contact_id`
    optionally renders the merge fields with that audience contact's data."""

    model_config = ConfigDict(extra="forbid")
    addresses: list[EmailAddress] = Field(min_length=1, max_length=MAX_TEST_ADDRESSES)
    contact_id: ContactId | None = None


class CsvResponse(StreamingResponse):
    """A streamed CSV file: the document's 200 is `text/csv` (with `CSV_OK`), not JSON."""

    media_type = "text/csv"


def _csv_ok(what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a CSV route is text/csv; its errors stay JSON (FastAPI would document them
    under the route's media type, text/csv, as it does a `model`)."""
    errors: dict[int | str, dict[str, Any]] = {
        status: {
            "description": response["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        }
        for status, response in ERROR_RESPONSES.items()
    }
    return {
        **errors,
        200: {
            "description": what,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    }


def _actor(account: str, user: str | None) -> Actor:
    if user is not None:
        return Actor(kind="user", account_id=account, user_id=user)
    return Actor(kind="service", account_id=account, service="api")


def _not_found(what: str) -> ProblemError:
    return ProblemError(Problem(code="not_found", message=f"{what} not found"))


def audience_routes(
    account: Callable[..., Awaitable[str]], audiences: AudienceService
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audiences"], responses=ERROR_RESPONSES)
    Account = Annotated[str, Depends(account)]
    ActorUser = Annotated[
        str | None,
        Header(
            alias="X-Actor-User",
            min_length=1,
            max_length=200,
            description="The operator acting, recorded in the history",
        ),
    ]
    IdempotencyKey = Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ]

    @router.get(
        "/messages/{message_id}/preview",
        summary="The mail as a recipient receives it (rendered as delivery renders it)",
        description="By `contact_id`, or the first `limit` contacts of the audience. Each "
        "preview has the subject, the body (HTML or text) and every merge field with its value, "
        "or `missing: true` and the fallback used.",
    )
    async def preview(
        account_id: Account,
        message_id: UUID,
        contact_id: Annotated[QueryText, Query(min_length=1, max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=20)] = 3,
    ) -> dict[str, Any]:
        found = await audiences.preview(account_id, message_id, contact_id, limit)
        return {"message_id": str(message_id), "previews": found}

    @router.post(
        "/messages/{message_id}/imports",
        summary="Import a CSV file into the audience (or remove its contacts), streamed",
        description="The request body is the CSV file itself (`Content-Type: text/csv`), of any "
        "size: it is parsed as it arrives and sent in chunks of 10,000 contacts, each one "
        "AddRecipients (or RemoveRecipients with `mode=remove`) command whose Idempotency-Key "
        "is derived from `import_id` and the chunk number. Posting the same file again under "
        "the same `import_id` resumes an interrupted import without applying any chunk twice. "
        "Header row: contact id, email, optional time zone (recognised spellings, or "
        "`map_contact_id` / `map_email` / `map_time_zone` name the columns); other columns "
        "become merge attributes. The answer is the summary (also `GET /v1/imports/{id}`).",
        # The file as it is: any bytes are a CSV to read (rows it cannot use are reported as
        # problems, a missing column is the import's error), so the body's schema states no
        # JSON type, which a raw text body cannot have or break anyway.
        openapi_extra={
            "requestBody": {
                "content": {
                    "text/csv": {
                        "schema": {
                            "description": "the CSV file: a header row, then one row per contact"
                        }
                    }
                }
            }
        },
    )
    async def start_import(
        request: Request,
        account_id: Account,
        message_id: UUID,
        import_id: UUID,
        mode: Literal["add", "remove"] = "add",
        # Text read from the query is one line (schemas/text.py): a NUL, which Postgres text
        # cannot hold, or a control character is a 422 naming the parameter, never a 500.
        map_contact_id: Annotated[QueryText, Query(max_length=200)] = None,
        map_email: Annotated[QueryText, Query(max_length=200)] = None,
        map_time_zone: Annotated[QueryText, Query(max_length=200)] = None,
        file_name: Annotated[QueryText, Query(max_length=300)] = None,
        # Stored as a Postgres bigint: a larger number is a 422 naming it, never a 500.
        total_bytes: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        user: ActorUser = None,
    ) -> JSONResponse:
        mapping = {
            k: v
            for k, v in (
                ("contact_id", map_contact_id),
                ("email", map_email),
                ("time_zone", map_time_zone),
            )
            if v
        }
        length = request.headers.get("content-length", "")
        summary = await audiences.run_import(
            account=account_id,
            actor=_actor(account_id, user),
            message_id=message_id,
            import_id=import_id,
            kind=mode,
            body=request.stream(),
            mapping=mapping,
            file_name=file_name,
            total_bytes=total_bytes
            if total_bytes is not None
            else (int(length) if length.isdigit() else None),
        )
        return JSONResponse(summary.as_json())

    @router.get("/messages/{message_id}/imports", summary="The message's recent imports")
    async def list_imports(account_id: Account, message_id: UUID) -> dict[str, Any]:
        found = await audiences.imports_of(account_id, message_id)
        return {"imports": [s.as_json() for s in found]}

    @router.get(
        "/imports/{import_id}",
        summary="An import's progress and summary",
        description="`state`: running, done, or partial (interrupted: post the same file "
        "under the same import id to resume). `counts` sums the chunks' answers (added, "
        "updated, already_present, duplicate_address, ... and invalid rows).",
    )
    async def import_status(account_id: Account, import_id: UUID) -> dict[str, Any]:
        summary = await audiences.import_status(account_id, import_id)
        if summary is None:
            raise _not_found(f"import {import_id}")
        return summary.as_json()

    @router.get(
        "/imports/{import_id}/problems.csv",
        summary="The rows an import did not apply, with line numbers and reasons (CSV)",
        response_class=CsvResponse,
        responses=_csv_ok("the problems as CSV: line, contact_id, email, reason"),
    )
    async def import_problems(account_id: Account, import_id: UUID) -> CsvResponse:
        if await audiences.import_status(account_id, import_id) is None:
            raise _not_found(f"import {import_id}")
        return CsvResponse(
            audiences.problems_csv(account_id, import_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="import-{import_id}.csv"'},
        )

    @router.get(
        "/messages/{message_id}/recipients.csv",
        summary="Export the message's recipients as CSV, filtered by state, streamed",
        description="`state` (repeatable) keeps only those states, e.g. every state but "
        'delivered for "who did not get it". Streamed from a server-side cursor; the file '
        "imports as it is into a copy (its `mailctl_*` columns are ignored, `attributes` is "
        "read back).",
        response_class=CsvResponse,
        responses=_csv_ok("the recipients as CSV, a header row first"),
    )
    async def export(
        account_id: Account,
        message_id: UUID,
        state: Annotated[list[Literal[STATES]] | None, Query()] = None,  # type: ignore[valid-type]
    ) -> CsvResponse:
        if await audiences.views.message(account_id, message_id) is None:
            raise _not_found(f"message {message_id}")
        return CsvResponse(
            audiences.export_csv(account_id, message_id, state),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="recipients-{message_id}.csv"'},
        )

    @router.get("/test-addresses", summary="The account's allowed test addresses")
    async def test_addresses(account_id: Account) -> dict[str, Any]:
        return {"addresses": await audiences.test_addresses(account_id)}

    @router.post("/test-addresses", status_code=201, summary="Allow a test address")
    async def add_test_address(
        account_id: Account, body: TestAddressBody, user: ActorUser = None
    ) -> dict[str, Any]:
        await audiences.add_test_address(account_id, _actor(account_id, user), body.address)
        return {"addresses": await audiences.test_addresses(account_id)}

    @router.delete("/test-addresses/{address}", summary="No longer allow a test address")
    async def remove_test_address(account_id: Account, address: str) -> dict[str, Any]:
        if not await audiences.remove_test_address(account_id, address):
            raise _not_found(f"test address {address}")
        return {"addresses": await audiences.test_addresses(account_id)}

    @router.post(
        "/messages/{message_id}/test-sends",
        summary="Send the message as it stands to a few allowed test addresses",
        description="Draft or scheduled only. At most 10 addresses, each on the account's "
        "allowed test addresses. Recorded in the history as `TestSendRequested` with the "
        "actor; marked `[TEST]` in the subject and `X-Mailctl-Test: true`; never counted among "
        "the recipients. The answer lists what SMTP said per address. An address the account "
        "does not allow is refused with 403 `forbidden` naming `addresses`.",
        responses={
            403: {
                "model": ErrorBody,
                "description": "`forbidden`: an address is not on the account's allowed test "
                "addresses (`field`: `addresses`)",
            }
        },
    )
    async def test_send(
        account_id: Account,
        message_id: UUID,
        body: TestSendBody,
        user: ActorUser = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        status, answer = await audiences.test_send(
            account=account_id,
            actor=_actor(account_id, user),
            message_id=message_id,
            addresses=body.addresses,
            contact_id=body.contact_id,
            key=key,
        )
        return JSONResponse(answer, status_code=status)

    return router
