"""The ``attributes`` column's text (services/projections/views.py ``attributes_json``): the
fast path (orjson) must write exactly what ``json.dumps(..., separators=(",", ":"))`` writes, for
every value an attribute can hold (the export and the preview read this text back as it is)."""

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.projections.views import attributes_json

_ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()))
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F)),
    _ANY_TEXT,
)


def _standard(attributes: dict[str, Any]) -> str:
    return json.dumps(attributes, separators=(",", ":"))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8) | _ANY_TEXT, _VALUES, min_size=1, max_size=6))
def test_the_text_is_the_standard_librarys(attributes: dict[str, Any]) -> None:
    assert attributes_json(attributes) == _standard(attributes)


def test_the_values_where_orjson_differs_are_written_by_the_standard_library() -> None:
    for value in (
        "\x7f",  # DEL: escaped by json only
        "é",  # not ASCII: escaped by json only
        "\ud800",  # a lone surrogate: refused by orjson
        1 << 64,  # past 64 bits: refused by orjson
        1e16,  # json writes 1e+16
        1e-05,
        math.nan,  # json writes NaN, orjson null
        math.inf,
        -0.0,
    ):
        assert attributes_json({"a": value}) == _standard({"a": value}), value
    assert attributes_json({"first_name": "Ada", "n": 3, "vip": True, "x": None}) == (
        '{"first_name":"Ada","n":3,"vip":true,"x":null}'
    )
