"""NaN and infinite floats in an input or an event payload: JSON has no spelling
for them and msgspec writes ``null``, so the handler got ``None`` where the caller
passed ``nan`` (Python's ``json.loads`` reads ``NaN`` and ``Infinity`` from a
request body). SPEC §2: nothing is silently coerced; they are refused at the call,
naming where they sit, and nothing is written."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow

pytestmark = pytest.mark.timeout(60)


class Point(msgspec.Struct):
    x: float
    y: float


def _job(registry: Registry) -> Any:
    @define_workflow("job", registry=registry)
    def job(ctx: Context[Any]) -> Any:
        return ctx.input

    return job


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (math.nan, "input"),
        ({"a": [1.0, math.inf]}, "input['a'][1]"),
        ([Point(1.0, -math.inf)], "input[0]['y']"),
        ({"n": {"m": (0.5, math.nan)}}, "input['n']['m'][1]"),
    ],
)
def test_non_finite_floats_in_an_input_are_refused(
    raw: redis.Redis, client: Client, registry: Registry, value: Any, where: str
) -> None:
    job = _job(registry)
    with pytest.raises(ValueError) as refused:
        handle = job.run(value)
        pytest.fail(f"enqueued with input stored as {client.get_run(handle.id)}")
    assert str(refused.value).startswith(f"{where} is NaN or infinite"), refused.value
    with pytest.raises(ValueError, match=r"^inputs\[1\]: input.* is NaN or infinite"):
        job.run_many([1.0, value])
    assert raw.zcard(client.keys.runs_created) == 0


def test_non_finite_floats_in_an_event_payload_are_refused(
    client: Client, registry: Registry
) -> None:
    run_id = _job(registry).run(1).id
    with pytest.raises(ValueError, match=r"^payload of event 'go'\['v'\] is NaN or infinite"):
        client.send_event(run_id, "go", {"v": math.nan})


def test_finite_floats_and_nulls_pass_unchanged(client: Client, registry: Registry) -> None:
    job = _job(registry)
    value = {"a": None, "b": [1.5, -0.0, 1e308, None], "c": Point(2.0, 3.0)}
    state = client.get_run(job.run(value).id)
    assert state is not None
    assert state.input == {"a": None, "b": [1.5, -0.0, 1e308, None], "c": {"x": 2.0, "y": 3.0}}
