"""Every error the API answers, in one shape and with one mapping to HTTP statuses (docs/api.md).

The body of every error is ``{"detail": Problem}``. The problem's ``code`` decides the HTTP
status through :func:`http_status`, the one place of that mapping: the processor's rejection
codes (``schemas.wire.Rejection``) and the codes the API itself raises at the edge.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.values import BETWEEN_MEMBERS
from schemas.wire import Rejection

__all__ = [
    "ERROR_RESPONSES",
    "FieldProblem",
    "Problem",
    "ProblemCode",
    "ProblemError",
    "http_status",
    "install_error_handlers",
    "problem_of",
]

ProblemCode = Literal[
    "unauthenticated",
    "forbidden",
    "not_found",
    "not_allowed",
    "already_exists",
    "invalid",
    "idempotency_key_reused",
    "too_large",
    "unavailable",
    "not_caught_up",
    "conflict",
]

_STATUS: dict[str, int] = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "not_allowed": 409,
    "already_exists": 409,
    "too_large": 413,
    "invalid": 422,
    "idempotency_key_reused": 422,
    "unavailable": 503,
    "not_caught_up": 409,
    "conflict": 409,
}

# The code an HTTP error raised by the framework or a dependency (a bare status) is reported with.
_CODE_OF_STATUS: dict[int, ProblemCode] = {
    401: "unauthenticated",
    404: "not_found",
    409: "not_allowed",
    413: "too_large",
    422: "invalid",
    503: "unavailable",
}


def http_status(code: str) -> int:
    """The HTTP status of a problem code: the one mapping from domain and edge errors to HTTP."""
    return _STATUS[code]


class FieldProblem(BaseModel):
    field: str | None = Field(
        default=None,
        description="dotted path of the input, e.g. `contacts.3.email` (absent: the whole body)",
    )
    message: str


class Problem(BaseModel):
    """What went wrong, for people and for programs."""

    code: ProblemCode = Field(description="stable machine-readable code; decides the HTTP status")
    message: str = Field(description="one human-readable sentence")
    field: str | None = Field(
        default=None, description="the input at fault (dotted path, or a header name)"
    )
    status: str | None = Field(
        default=None, description="not_allowed: the message's status when the command came"
    )
    allowed: list[str] | None = Field(
        default=None, description="not_allowed: the commands the message's status allows"
    )
    command_id: str | None = Field(
        default=None, description="a rejection decided by the processor: the command's id"
    )
    errors: list[FieldProblem] | None = Field(
        default=None, description="invalid input: every problem found, the first one above"
    )
    min_sequence: int | None = Field(
        default=None, description="not_caught_up: the sequence the read waited for"
    )
    sequence: int | None = Field(
        default=None, description="not_caught_up: the sequence the view is at"
    )


class ErrorBody(BaseModel):
    detail: Problem


class ProblemError(Exception):
    """Raised when a request is answered with a problem instead of a result."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def problem_of(rejection: Rejection, command_id: object) -> Problem:
    """A processor's rejection as the API reports it."""
    return Problem(
        code=rejection.code,
        message=rejection.message,
        field=rejection.field,
        status=rejection.status,
        allowed=list(rejection.allowed) if rejection.allowed is not None else None,
        command_id=str(command_id),
    )


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"detail": problem.model_dump(mode="json", exclude_none=True)},
        status_code=http_status(problem.code),
        headers=headers,
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or a malformed, unknown or revoked one."},
    404: {
        "model": ErrorBody,
        "description": "No such message in this account (another account's message answers "
        "the same).",
    },
    409: {
        "model": ErrorBody,
        "description": "`not_allowed`: not allowed in the message's status (`status` names it "
        "and `allowed` lists what is allowed); `conflict`: a well-formed request that the "
        "message's state or the clock refuses (`field` names the input: a send time now in "
        "the past, an end date not after the send time, a patched draft breaking a rule "
        "between its members); `not_caught_up`: a read-your-writes wait the view did not "
        "reach in time; `already_exists`.",
    },
    413: {
        "model": ErrorBody,
        "description": "The request body, or the command it makes, is larger than the "
        "largest record the command topic takes.",
    },
    422: {
        "model": ErrorBody,
        "description": "Invalid input (`field` names it: malformed JSON, an unknown field, a "
        "chunk over the limit, an unknown time zone...), or an "
        "Idempotency-Key reused with another request (`idempotency_key_reused`).",
    },
    503: {
        "model": ErrorBody,
        "description": "The command could not be published (Kafka unreachable); nothing was "
        "decided, retry with the same Idempotency-Key.",
    },
}


# The tags pydantic adds to a location for the member of a union or a validator wrapper
# (`str`, `function-after[...]`, `list[...]`, `constrained-str` ...): validator internals, not
# the API's fields.
_TAG = re.compile(r"^[a-z-]+\[.*\]$|^(constrained|lax|strict)-[a-z]+$")
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def _field(loc: tuple[int | str, ...]) -> str | None:
    """The input's path as the API names it: FastAPI's prefix of where the input came from
    (the client knows its own body) and pydantic's union and wrapper tags are left out, so an
    attribute's bad value is `contacts.0.attributes.a`, not `contacts.0.attributes.a.str`."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc)
    parts = [p for p in parts if not (isinstance(p, str) and _TAG.match(p))]
    if len(parts) > 1 and isinstance(parts[-1], str) and parts[-1] in _TYPE_TAGS:
        parts.pop()
    return ".".join(str(part) for part in parts) or None


def _message(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "invalid syntax")
        return f"the request body is not valid JSON: {reason}"
    if error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):
        return "a JSON request body is required"
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    message = str(error.get("msg", "invalid value"))
    # pydantic prefixes the messages of custom validators; the client needs only the reason.
    return message.removeprefix("Value error, ")


def invalid_input(errors: list[dict[str, Any]]) -> Problem:
    """A validation failure as one problem naming the first field, with every error listed."""
    found = [
        FieldProblem(
            field=None if e.get("type") == "json_invalid" else _field(tuple(e.get("loc", ()))),
            message=_message(e),
        )
        for e in errors
    ] or [FieldProblem(field=None, message="invalid request")]
    first = found[0]
    # Every member valid alone, a rule between them broken (schemas/values.py BETWEEN_MEMBERS):
    # the document allows the request, so not 422 but 409 `conflict`, naming the field.
    between = bool(errors) and all(e.get("type") == BETWEEN_MEMBERS for e in errors)
    return Problem(
        code="conflict" if between else "invalid",
        message=first.message if first.field is None else f"{first.field}: {first.message}",
        field=first.field,
        errors=found,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document declares for the request's path."""
    path = request.url.path
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of the app in the problem shape."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, error: ProblemError) -> JSONResponse:
        return problem_response(error.problem)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(invalid_input(list(error.errors())))

    @app.exception_handler(ValidationError)
    async def _invalid_command(_: Request, error: ValidationError) -> JSONResponse:
        # A request that parsed but does not make a valid command: the same 422 as bad input.
        return problem_response(invalid_input([dict(e) for e in error.errors(include_url=False)]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 405:
            # Starlette names the methods of the first route that matched the path only; a
            # path served by two routers (GET view, PATCH command) has them all.
            return JSONResponse(
                {"detail": error.detail},
                status_code=405,
                headers={"Allow": ", ".join(_allowed_methods(request))},
            )
        if error.status_code == 400:
            # The framework could not decode the body (not JSON, not UTF-8...): invalid input,
            # in the declared shape like every other.
            problem = Problem(
                code="invalid",
                message=f"the request body could not be read as JSON: {error.detail}",
                errors=[FieldProblem(message="the request body could not be read as JSON")],
            )
            return problem_response(problem)
        code = _CODE_OF_STATUS.get(error.status_code)
        if code is None or http_status(code) != error.status_code:
            # A status without a problem code of its own (405 ...): the framework's plain body.
            return JSONResponse(
                {"detail": error.detail}, status_code=error.status_code, headers=error.headers
            )
        problem = Problem(code=code, message=str(error.detail))
        return problem_response(problem, headers=dict(error.headers or {}))
