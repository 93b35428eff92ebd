"""A registry sync that replaces many cron entries while a busy leader fires them
(every-second crons, a chunk of hundreds): the sync's start-up must not fail.

The sync computed every replaced entry's first fire time (croniter, about 1-3
calls an entry) between its one read of the chunk's scores and its one
``swap_crons`` call: with hundreds of entries that window spans seconds, the
leader fires every-second entries within it, each pass was refused and carried
the same entries again, and after ``cronswap.ATTEMPTS`` passes the supervisor's
start failed with RuntimeError. The leader is modelled by counts, not by time:
every ``_PER_SECOND`` fire-time computations, one second passes and it fires
every entry (advances its next fire time by a second, as ``fire_cron`` does)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, cronswap, define_workflow
from redflow_mp.cron import cron_id_for

pytestmark = pytest.mark.timeout(120)

EVERY_SECOND = "* * * * * *"
_WORKFLOWS = 300
#: fire-time computations per second of the leader's clock (~1-3 ms each)
_PER_SECOND = 100


def _handler(ctx: Context[Any]) -> None:
    return None


def _registry(timezone: str) -> Registry:
    reg = Registry()
    for n in range(_WORKFLOWS):
        define_workflow(
            f"w{n}", cron=[Cron(EVERY_SECOND, timezone=timezone, id="tick")], registry=reg
        )(_handler)
    return reg


def test_a_busy_leader_firing_many_replaced_entries_does_not_fail_the_sync(
    raw: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.sync_registry(_registry("UTC"), app="a")
    ids = [cron_id_for(f"w{n}", Cron(EVERY_SECOND, id="tick")) for n in range(_WORKFLOWS)]
    assert raw.zcard(client.keys.cron_next) == _WORKFLOWS
    calls = [0]
    real = cronswap.first_fire

    def leader_fires_meanwhile(*args: Any) -> int:
        calls[0] += 1
        if calls[0] % _PER_SECOND == 0:  # a second passed: the leader fired each entry
            with raw.pipeline(transaction=False) as pipe:
                for cid in ids:
                    pipe.zincrby(client.keys.cron_next, 1000, cid)
                pipe.execute()
        return int(real(*args))

    monkeypatch.setattr(cronswap, "first_fire", leader_fires_meanwhile)
    # the schedule changed under the same ids (its timezone): each entry is replaced
    client.sync_registry(_registry("Etc/UTC"), app="a")
    monkeypatch.undo()
    assert raw.zcard(client.keys.cron_next) == _WORKFLOWS
    assert raw.hlen(client.keys.cron_def) == _WORKFLOWS
    assert all(b"Etc/UTC" in v for v in raw.hvals(client.keys.cron_def))


def test_a_sync_refused_on_every_try_replaces_the_entries_on_its_last(
    raw: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # One workflow whose entries fire between every read and its swap (a group is
    # never split, so smaller batches cannot help it): the start-up still succeeds.
    reg = Registry()
    crons = [Cron(EVERY_SECOND, id=f"t{k}") for k in range(3)]
    define_workflow("many", cron=crons, registry=reg)(_handler)
    client.sync_registry(reg, app="a")
    ids = [cron_id_for("many", c) for c in crons]
    real = cronswap.first_fire
    calls = [0]

    def leader_fires_every_time(*args: Any) -> int:
        calls[0] += 1
        for cid in ids:
            raw.zincrby(client.keys.cron_next, 1000, cid)
        return int(real(*args))

    monkeypatch.setattr(cronswap, "first_fire", leader_fires_every_time)
    edited = Registry()
    define_workflow(
        "many",
        cron=[Cron(EVERY_SECOND, timezone="Etc/UTC", id=f"t{k}") for k in range(3)],
        registry=edited,
    )(_handler)
    with caplog.at_level("WARNING", logger="redflow_mp.sync"):
        client.sync_registry(edited, app="a")  # before: RuntimeError after 20 tries
    monkeypatch.undo()
    assert calls[0] >= 3 * (cronswap.ATTEMPTS - 1)  # refused on every normal try
    assert "replacing them anyway" in caplog.text
    assert raw.zcard(client.keys.cron_next) == 3
    assert all(b"Etc/UTC" in v for v in raw.hvals(client.keys.cron_def))
