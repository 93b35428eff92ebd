"""A cancel cascade cut by its bound goes on where it stopped (the parent's
``cascadeAt``), and a pass of the supervisor's cascade duty sends a bounded
number of cancels, all entries together."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, cascade, define_workflow
from supervisor.duties.cascades import CascadeDuty
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(60)


def _family(raw: redis.Redis, client: Client, fan: Any, n: int) -> tuple[str, list[str]]:
    """A queued parent with ``n`` queued run_workflow children (what run_workflow
    writes: the children set, each child's parentRunId)."""
    parent = fan.run(client=client).id
    children = [h.id for h in fan.run_many([None] * n, client=client)]
    raw.sadd(client.keys.run_children(parent), *children)
    with raw.pipeline(transaction=False) as pipe:
        for run_id in children:
            pipe.hset(client.keys.run(run_id), "parentRunId", parent)
        pipe.execute()
    return parent, children


def _fan(registry: Registry) -> Any:
    @define_workflow("fan", registry=registry)
    def fan(ctx: Context[Any]) -> None:
        return None

    return fan


def _counted(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every child the cascade sends a cancel (``Runs._cancel_many``), in order."""
    sent: list[str] = []
    real = client._cancel_many

    def counted(ids: list[str], why: str, parent: str = "") -> list[tuple[str | None, bool]]:
        sent.extend(ids)
        return real(ids, why, parent)

    monkeypatch.setattr(client, "_cancel_many", counted)
    return sent


def _passes(duty: CascadeDuty, sent: list[str], n: int) -> list[int]:
    """The cancels each of ``n`` duty passes sent."""
    per_pass: list[int] = []
    for _ in range(n):
        before = len(sent)
        duty.tick(0.0)
        per_pass.append(len(sent) - before)
    return per_pass


def test_a_cut_cascade_goes_on_where_it_stopped_at_each_duty_pass(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scale review: a walk cut at MAX_CASCADE left its ``cascades`` entry, and the
    duty walked it from the first child again every 5 s: it resent the same
    100,000 cancels (no-ops, about 40 s of the arbiter's loop) each pass and
    never reached the children beyond the cut (300 of 700 canceled with a cut
    of 300, still 300 after 3 passes)."""
    monkeypatch.setattr(cascade, "MAX_CASCADE", 300)
    parent, children = _family(raw, client, _fan(registry), 700)
    sent = _counted(client, monkeypatch)
    client.cancel_run(parent)  # its canceller's walk: cut at 300
    assert len(sent) == 300
    assert sum(status_of(raw, client, c) == "canceled" for c in children) == 300
    raw.zadd(client.keys.cascades, {parent: 0}, xx=True)  # older than PENDING_AGE_MS
    per_pass = _passes(CascadeDuty(client), sent, 4)
    canceled = sum(status_of(raw, client, c) == "canceled" for c in children)
    assert canceled == 700, f"{canceled} of 700 canceled after 4 passes ({per_pass} cancels)"
    assert per_pass == [300, 100, 0, 0]  # each bounded by the cut, none sent twice
    assert len(set(sent)) == len(sent) == 700
    assert raw.zscore(client.keys.cascades, parent) is None
    assert raw.hget(client.keys.run(parent), "cascadeAt") is None


def test_a_duty_pass_sends_at_most_its_budget_over_all_entries(
    raw: redis.Redis, client: Client, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of a pass's 20 entries a shard had its own walk of up to MAX_CASCADE
    cancels: one pass could send 20 x 100,000. Now PASS_BUDGET over them all."""
    monkeypatch.setattr(cascade, "PASS_BUDGET", 150)
    fan = _fan(registry)
    families = [_family(raw, client, fan, 200) for _ in range(2)]
    for parent, _ in families:  # their canceller died before its walk
        assert client.scripts.cancel(parent, "") == "canceled"
        raw.zadd(client.keys.cascades, {parent: 0}, xx=True)
    sent = _counted(client, monkeypatch)
    per_pass = _passes(CascadeDuty(client), sent, 4)
    assert per_pass == [150, 150, 100, 0], per_pass
    assert len(set(sent)) == len(sent) == 400  # none sent twice
    for _, children in families:
        assert all(status_of(raw, client, c) == "canceled" for c in children)
    assert raw.zcard(client.keys.cascades) == 0
