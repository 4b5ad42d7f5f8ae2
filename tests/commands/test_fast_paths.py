"""The idempotency fingerprint's canonical JSON by orjson is the one stored rows hold
(services/commands/ids.py; docs/api.md "Latency")."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.commands.bodies import AddRecipientsBody
from services.commands.ids import fingerprint


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
