"""runs.encode_input's quick path (the encoder's bytes taken as they are) and its
checked path give the same bytes and the same errors: around the nesting limit,
with a ``null`` (None, or a NaN msgspec writes as null), and at the size limit."""

from __future__ import annotations

from typing import Any

import pytest

from redflow_mp import codec
from redflow_mp.errors import InputValidationError, PayloadTooLargeError
from redflow_mp.runs import EnqueueTarget, encode_input

TARGET = EnqueueTarget("wf", "q", 1, None, None, 0, None)
LIMIT = 1 << 20


def nested(depth: int, open_: str = "[") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if open_ == "[" else {"k": value}
    return value


@pytest.mark.parametrize("open_", ["[", "{"])
def test_nesting_at_and_past_the_limit(open_: str) -> None:
    ok = nested(codec.MAX_NESTING, open_)
    assert encode_input(TARGET, ok, LIMIT) == codec.encode_json(ok)
    with pytest.raises(InputValidationError):
        encode_input(TARGET, nested(codec.MAX_NESTING + 1, open_), LIMIT)


def test_short_and_long_flat_inputs_pass_as_encoded() -> None:
    for value in ({}, [], {"a": 1}, list(range(300)), [[1]] * 300, "x" * 1000):
        assert encode_input(TARGET, value, LIMIT) == codec.encode_json(value)


def test_null_and_non_finite_numbers() -> None:
    assert encode_input(TARGET, {"a": None}, LIMIT) == b'{"a":null}'
    assert encode_input(TARGET, None, LIMIT) == b"null"
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_input(TARGET, {"a": [1, float("nan")]}, LIMIT)
    with pytest.raises(ValueError, match="NaN or infinite"):
        encode_input(TARGET, float("inf"), LIMIT)


def test_size_limit() -> None:
    assert encode_input(TARGET, "x" * 98, 100) == b'"' + b"x" * 98 + b'"'
    with pytest.raises(PayloadTooLargeError):
        encode_input(TARGET, "x" * 99, 100)
