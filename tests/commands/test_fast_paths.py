"""The API's fast paths: the idempotency fingerprint's canonical JSON by orjson is the one stored
rows hold (services/commands/ids.py; docs/api.md "Latency"), also when a chunk's contacts are
written from their field dicts; a body's contacts checked by the fast path first validate as
plain pydantic's, errors included (schemas/fast.py)."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from schemas import MAX_CHUNK, AddRecipients, Contact, fast
from schemas.fast import fast_contacts, json_data
from schemas.text import STORED
from services.commands.bodies import AddRecipientsBody, Strict
from services.commands.errors import invalid_input
from services.commands.ids import fingerprint
from tests.core.test_fast_contacts import _PLAIN, _contact_dict, _shape, _valid


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


# The body's contacts: the fast path first (schemas/fast.py `fast_input_contacts`), pydantic the
# referee. A body model without it is what the API validated before.
class _PlainBody(Strict):
    contacts: list[Contact] = Field(min_length=1, max_length=MAX_CHUNK)


def _validated(model: type[BaseModel], raw: Any) -> Any:
    try:
        return _shape(model.model_validate(raw).contacts)
    except ValidationError as error:
        return invalid_input([dict(e) for e in error.errors(include_url=False)])


@given(st.lists(_contact_dict(), min_size=0, max_size=3))
@example([_PLAIN])
@example([{**_PLAIN, "email": "zoë@bücher.example"}, _PLAIN])
@example([_PLAIN, {**_PLAIN, "contact_id": "a\x00b"}])
@example([{**_PLAIN, "attributes": {"k": float("nan"), "h": 2**70}}])
def test_a_body_s_contacts_validate_as_plain_pydantic_s(raws: list[Any]) -> None:
    # The same contacts (types, fields set), or the same 422 naming the same field.
    raw = {"contacts": raws}
    assert _validated(AddRecipientsBody, raw) == _validated(_PlainBody, raw)


@pytest.mark.parametrize("size", [0, MAX_CHUNK + 1])
def test_a_chunk_out_of_bounds_is_refused_as_before(size: int) -> None:
    raw = {"contacts": [{**_PLAIN, "contact_id": f"c{i}"} for i in range(size)]}
    refused = _validated(AddRecipientsBody, raw)
    assert refused == _validated(_PlainBody, raw)
    assert refused.field == "contacts"


def test_a_plain_body_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[Any] = []

    def spy(raws: Any, *, stored: bool) -> Any:
        taken.append(result := fast_contacts(raws, stored=stored))
        return result

    monkeypatch.setattr(fast, "fast_contacts", spy)
    body = AddRecipientsBody.model_validate({"contacts": [_PLAIN]})
    assert taken and taken[0] is not None
    assert list(taken[0]) == body.contacts


@given(st.lists(_valid, min_size=1, max_size=4))
@example([Contact(contact_id="c", email="a@example.org", attributes={"big": 2**70})])
@example(
    [
        Contact.model_validate(
            {
                "contact_id": "c\x00\u2028",
                "email": "zoë@bücher.example",
                "attributes": {"f": 1e16, "g": math.nan, "h": -0.0, "i": math.inf},
            },
            context=STORED,
        )
    ]
)
def test_a_chunk_s_fingerprint_is_the_one_of_its_dump(contacts: list[Contact]) -> None:
    # From the contacts' field dicts (schemas/fast.py json_data): the bytes of the body's dump.
    body = AddRecipientsBody(contacts=contacts)
    assert fingerprint("POST", "/p", body) == fingerprint(
        "POST", "/p", body.model_dump(mode="json")
    )
    record = AddRecipients(
        command_id=uuid.UUID(int=1), message_id=uuid.UUID(int=2), contacts=tuple(contacts)
    )
    try:
        data = orjson.dumps(json_data(record), option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an int past 64 bits: fingerprint dumps the model itself
        assert any(
            type(v) is int and abs(v) >= 2**63 for c in contacts for v in c.attributes.values()
        )
        return
    assert data == orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
