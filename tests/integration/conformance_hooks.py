"""schemathesis hooks for tests/integration/test_api_conformance.py (SCHEMATHESIS_HOOKS).

A deserializer for text/csv (the CSV exports): the document declares their 200 a string.

The fuzzer reuses a generated header value across different requests; with `Idempotency-Key`
that is a reuse of a key with another request, which the API rightly refuses (422
`idempotency_key_reused`, tested in tests/commands/test_idempotency.py). Each call gets its own
key: a valid generated key is made unique by a suffix that keeps it valid (the longest keys
are cut to make room), an invalid one (a control character, too long) stays invalid.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import schemathesis

from schemas.text import first_unsafe

#: The API's bounds of an Idempotency-Key (services/commands/api.py, audience_api.py).
KEY_MAX = 200
_SUFFIX = 17  # "~" and 16 hex digits


def _unique(key: str) -> str:
    """The key made unique, still valid: its start, then a random suffix, within KEY_MAX (a
    boundary value of the coverage phase is often the longest key, the same for every call)."""
    return f"{key[: KEY_MAX - _SUFFIX]}~{uuid4().hex[:16]}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    found = [h for h in (case.headers, kwargs.get("headers")) if h and "Idempotency-Key" in h]
    if not found:
        return
    key = found[0]["Idempotency-Key"]
    if (
        isinstance(key, str)
        and 1 <= len(key) <= KEY_MAX
        and first_unsafe(key, multiline=False) is None
    ):
        unique = _unique(key)
        for headers in found:
            headers["Idempotency-Key"] = unique


@schemathesis.deserializer("text/csv")
def csv_text(ctx: Any, response: Any) -> str:
    """The CSV routes' 200 is declared a string: read it as one, so its schema is checked too."""
    return str(response.content.decode("utf-8"))
