"""schemathesis hooks for tests/integration/test_api_conformance.py (SCHEMATHESIS_HOOKS).

A deserializer for text/csv (the CSV exports): the document declares their 200 a string.

The fuzzer reuses a generated header value across different requests; with `Idempotency-Key`
that is a reuse of a key with another request, which the API rightly refuses (422
`idempotency_key_reused`, tested in tests/commands/test_idempotency.py). Each call gets its own
key: a valid generated key is made unique by a suffix that keeps it valid, an invalid one (a
control character, too long) stays invalid.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    for headers in (case.headers, kwargs.get("headers")):
        if not headers:
            continue
        key = headers.get("Idempotency-Key")
        if isinstance(key, str) and 1 <= len(key) <= 180 and "~" not in key:
            headers["Idempotency-Key"] = f"{key}~{uuid4().hex[:16]}"


@schemathesis.deserializer("text/csv")
def csv_text(ctx: Any, response: Any) -> str:
    """The CSV routes' 200 is declared a string: read it as one, so its schema is checked too."""
    return str(response.content.decode("utf-8"))
