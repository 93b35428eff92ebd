"""A step record of an event wait that a neighbour overwrote with garbage holding
the words ``"status":"succeeded"`` (no ``seq``): consume_event took it for a
record of its own (a resend after a lost reply) and every execution failed on
decoding it (``ValidationError: Object missing required field `seq```), while a
``step.run`` treats an unreadable record as absent and runs again. Now the
event is consumed and the record overwritten; a record that has our prefix and
still does not decode is a clear error naming the step."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, RunFailedError, define_workflow
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def waiter(registry: Registry) -> Any:
    @define_workflow("waiter", registry=registry, max_concurrency=10)
    def waiter(ctx: Context[Any]) -> Any:
        return ctx.step.wait_for_event("ev", "go")

    return waiter


@pytest.mark.parametrize(
    "garbage",
    [
        '{"status":"succeeded","startedAt":1,"finishedAt":2,"attempt":1}',
        '{"status":"succeeded","outputJson":5,"startedAt":1,"finishedAt":2,"attempt":1}',
        'junk "status":"succeeded" junk',
    ],
)
def test_garbage_holding_succeeded_under_an_event_wait_is_overwritten(
    raw: redis.Redis, client: Client, workers: WorkerPool, waiter: Any, garbage: str
) -> None:
    handle = waiter.run(None)
    raw.hset(client.keys.run_steps(handle.id), "ev", garbage)
    assert client.send_event(handle.id, "go", {"n": 1})
    good = waiter.run(None)
    assert client.send_event(good.id, "go", {"n": 2})
    workers.start()
    assert good.result(timeout=20) == {"n": 2}
    assert handle.result(timeout=20) == {"n": 1}
    steps = {s.name: s for s in client.get_run_steps(handle.id) or []}
    assert steps["ev"].status.value == "succeeded" and steps["ev"].output == {"n": 1}
    assert workers.errors == []


def test_an_unreadable_record_with_our_prefix_is_a_clear_error(
    raw: redis.Redis, client: Client, workers: WorkerPool, waiter: Any
) -> None:
    handle = waiter.run(None)
    raw.hset(client.keys.run_steps(handle.id), "ev", '{"seq":3,"status":"succeeded","x":1}')
    assert client.send_event(handle.id, "go", 1)
    workers.start()
    with pytest.raises(RunFailedError, match="record of step 'ev' says it succeeded but is"):
        handle.result(timeout=20)
    assert raw.llen(client.keys.run_events(handle.id, "go")) == 1  # the event is kept
    assert workers.errors == []
