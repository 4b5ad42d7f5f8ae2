"""The API's fast wire paths read and fingerprint bodies exactly as the slower ones did
(services/commands/fastjson.py, services/commands/ids.py; docs/api.md "Latency")."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.commands.bodies import AddRecipientsBody
from services.commands.fastjson import FastJsonRequest
from services.commands.ids import fingerprint


def _request(body: bytes) -> FastJsonRequest:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return FastJsonRequest(scope, receive)


@pytest.mark.parametrize(
    "body",
    [
        b'{"contacts": [{"contact_id": "c1", "email": "a@example.org"}]}',
        b'{"n": 123456789012345678901234567890}',  # past 64 bits: only json reads it
        b'{"x": NaN, "y": Infinity}',  # not JSON, but json.loads reads it
        b'{"s": "\\ud800"}',  # an escaped lone surrogate
        b'{"a": 1, "a": 2}',  # the last one wins, as before
    ],
)
async def test_a_body_reads_as_the_standard_library_reads_it(body: bytes) -> None:
    read = await _request(body).json()
    expected = json.loads(body)
    assert json.dumps(read, sort_keys=True) == json.dumps(expected, sort_keys=True)


@pytest.mark.parametrize("body", [b'{"contacts": [', b"{'single': 1}", b'{"a": 1,}', b"\xff"])
async def test_a_malformed_body_fails_with_the_standard_librarys_error(body: bytes) -> None:
    with pytest.raises(ValueError) as fast:
        await _request(body).json()
    with pytest.raises(ValueError) as slow:
        json.loads(body)
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value)


def _old_fingerprint(method: str, path: str, body: Any) -> str:
    """The fingerprint before orjson: the standard library's canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_the_fingerprint_is_the_one_stored_rows_hold(body: Any) -> None:
    # Rows written before the change still match a retry of the same request.
    assert fingerprint("POST", "/v1/x", body) == _old_fingerprint("POST", "/v1/x", body)


def test_a_body_model_has_the_fingerprint_of_its_json_dump() -> None:
    body = AddRecipientsBody.model_validate(
        {
            "contacts": [
                {"contact_id": "c1", "email": "zoë@example.org", "attributes": {"b": 1, "a": "x"}},
                {"contact_id": "c2", "email": "b@example.org", "time_zone": "Europe/London"},
            ]
        }
    )
    dumped = body.model_dump(mode="json")
    assert fingerprint("POST", "/p", body) == fingerprint("POST", "/p", dumped)
    assert fingerprint("POST", "/p", body) == _old_fingerprint("POST", "/p", dumped)
