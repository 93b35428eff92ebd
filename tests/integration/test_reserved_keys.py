"""Idempotency keys that redflow-mp makes itself (a step's child:
``stepwf:<len:parent>:<len:step>:<len:child>``, a cron fire: ``cron:<len:id>:<ms>``)
are reserved. Before, a caller who knew a parent's run id (its own run's, or a
neighbour's: ids are time-ordered) could enqueue the child workflow under the
child's key with an input of its choosing; the parent's step then took that run
as its child and awaited its output: the step ran the caller's input instead of
the one the handler computed."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.keys import cron_key, retry_key, step_workflow_key
from redflow_mp.options import is_reserved_key
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(60)


def test_a_caller_cannot_stand_in_for_a_steps_child(
    raw: redis.Redis, client: Client, registry: Registry, workers: WorkerPool
) -> None:
    @define_workflow("mail", registry=registry)
    def mail(ctx: Context[Any]) -> Any:
        return {"sent_to": ctx.input["to"]}

    @define_workflow("order", registry=registry)
    def order(ctx: Context[Any]) -> Any:
        one = ctx.step.run_workflow("notify", mail, {"to": "owner@example.com"})
        many = ctx.step.run_workflows("fan", mail, [{"to": "a@example.com"}])
        return [one, *many]

    parent = order.run()
    forged = step_workflow_key(parent.id, "notify", "mail")
    with pytest.raises(ValueError, match="reserved"):
        mail.run({"to": "attacker@example.com"}, idempotency_key=forged)
    with pytest.raises(ValueError, match=r"^idempotency_keys\[1\] has the form .* reserved"):
        mail.run_many([{}, {}], idempotency_keys=[None, forged + ":0"])
    with pytest.raises(ValueError, match="reserved"):
        client.run_by_name("mail", {}, idempotency_key=step_workflow_key(parent.id, "fan", "mail"))
    assert raw.zcard(client.keys.workflow_runs("mail")) == 0
    workers.start()
    assert parent.result(timeout=10) == [
        {"sent_to": "owner@example.com"},
        {"sent_to": "a@example.com"},
    ]


def test_reserved_forms_are_exact() -> None:
    for key in (
        step_workflow_key("01ABC", "notify", "mail"),
        step_workflow_key("01ABC", "fan", "mail") + ":3",
        step_workflow_key("ü:{x}", "step:name", "wf") + ":0",
        cron_key("nightly:0", 1_796_479_739_000),
        retry_key("01M94YF5V7YM27VR8XV94CBEHK"),
    ):
        assert is_reserved_key(key), key
    for key in (
        "cron:nightly",
        "cron:2026-12-05",
        "cron:9:short",
        "stepwf:order-42",
        "retry:order-42",
        "retry:99:short",
        "stepwf:5:abcde",
        "stepwf:5:abcde:1:x:99:y",
        "order-42",
        step_workflow_key("01ABC", "notify", "mail") + "x",
    ):
        assert not is_reserved_key(key), key
