"""``foreign.held_after_loss``: a worker that claimed a run of a workflow it does
not load, put on ``default`` for want of metadata (``queueFallback``), puts it back
rather than fails it only while the loss is fresh: the shard's ``registry-lost``
marker lives, or the worker's own workflow metadata is gone; and never once the
run is :data:`~redflow_mp.foreign.HOLD_WINDOW_MS` old (a marker written for ever
by a hostile neighbour holds no run for ever). A run not so marked (a mistyped
name while nothing was lost is marked too, but there is no marker then) fails as
before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.claimed import Claimed
from redflow_mp.foreign import HOLD_WINDOW_MS, LOST_MARKER_MS, held_after_loss

pytestmark = pytest.mark.timeout(60)


def _claimed(client: Client, run_id: str, created_at: int | None = None) -> Claimed:
    state = client.get_run(run_id)
    assert state is not None
    return Claimed(
        id=run_id,
        workflow=state.workflow,
        queue=state.queue,
        input_json=b"null",
        attempt=1,
        max_attempts=1,
        created_at=state.created_at if created_at is None else created_at,
        parent_run_id=None,
        timeout_ms=None,
        cron_id=None,
        started_at=state.created_at,
        steps={},
        token="t",
    )


def _mine(client: Client) -> None:
    reg = Registry()

    @define_workflow("mine", queue="default", registry=reg)
    def handler(ctx: Context[Any]) -> None:
        return None

    client.sync_registry(reg, app="hold-test")


def test_held_only_while_the_loss_is_fresh(
    client: Client, make_client: Callable[..., Client], raw: redis.Redis
) -> None:
    bare = make_client(registry=Registry())
    _mine(client)
    said: dict[str, float] = {}
    run = bare.run_by_name("ghost", None).id
    key = client.shard_of_run(run).keys
    assert raw.hget(key.run(run), "queueFallback") == b"1"
    claimed = _claimed(client, run)

    # Nothing lost: the own metadata is there, no marker: it fails at once.
    assert not held_after_loss(client, claimed, {0: "mine"}, said)
    # The worker's own metadata gone (its supervisor has not written it again).
    assert held_after_loss(client, claimed, {0: "not-synced"}, said)
    # A supervisor found the loss and wrote the marker.
    raw.set(key.registry_lost, "other-app", px=LOST_MARKER_MS)
    assert held_after_loss(client, claimed, {0: "mine"}, said)
    assert held_after_loss(client, claimed, {}, said)
    # Held for the window at most, marker or not (a hostile neighbour's for ever).
    raw.persist(key.registry_lost)
    old = msgspec.structs.replace(claimed, created_at=claimed.created_at - HOLD_WINDOW_MS - 1)
    assert not held_after_loss(client, old, {0: "mine"}, said)
    assert not held_after_loss(client, old, {0: "not-synced"}, said)


def test_a_run_not_marked_fallback_is_never_held(
    client: Client, make_client: Callable[..., Client], raw: redis.Redis
) -> None:
    bare = make_client(registry=Registry())
    run = bare.run_by_name("ghost", None, queue_override="default").id
    key = client.shard_of_run(run).keys
    assert raw.hget(key.run(run), "queueFallback") is None
    raw.set(key.registry_lost, "x", px=LOST_MARKER_MS)
    assert not held_after_loss(client, _claimed(client, run), {0: "not-synced"}, {})


def test_shards_the_marker_of_the_runs_shard_counts(
    make_client: Callable[..., Client], raw: redis.Redis
) -> None:
    """``shards > 1``: a supervisor writes the marker in the shards that lost
    registrations; a run is held by the marker of its own shard only."""
    client = make_client(shards=2)
    bare = make_client(shards=2, registry=Registry())
    _mine(client)
    names = [f"ghost-{i}" for i in range(64)]
    by_shard = {client.shard_of_workflow(n).index: n for n in names}
    assert set(by_shard) == {0, 1}
    runs = {k: bare.run_by_name(n, None).id for k, n in by_shard.items()}
    for k, run in runs.items():
        assert client.shard_of_run(run).index == k
    raw.set(client.shards[1].keys.registry_lost, "other-app", px=LOST_MARKER_MS)
    mine = {client.shard_of_workflow("mine").index: "mine"}
    assert not held_after_loss(client, _claimed(client, runs[0]), mine, {})
    assert held_after_loss(client, _claimed(client, runs[1]), mine, {})


def test_shards_own_metadata_gone_from_the_runs_shard_holds(
    make_client: Callable[..., Client], raw: redis.Redis
) -> None:
    """``shards > 1``: only the shard that restarted empty lost the metadata.
    Before any supervisor wrote the marker, the worker's own-metadata check must
    look at the run's shard, not at the shard of its first workflow (which did
    not restart): else the other app's run there fails with
    ``UnknownWorkflowError``."""
    from redflow_mp.worker import Worker

    client = make_client(shards=2)
    reg = Registry()
    homes: dict[int, str] = {}
    for i in range(64):
        name = f"mine-{i}"
        homes.setdefault(client.shard_of_workflow(name).index, name)
    assert set(homes) == {0, 1}
    first = next(iter(homes.values()))  # registry order: its home is "the" own shard
    lost = 1 - client.shard_of_workflow(first).index
    for name in [first, homes[lost]]:

        @define_workflow(name, queue="q", registry=reg)
        def handler(ctx: Context[Any]) -> None:
            return None

    client.sync_registry(reg, app="hold-test")
    worker = Worker(make_client(shards=2, registry=reg), queues=["default"], registry=reg)
    own = worker._synced()
    # The shard ``lost`` restarted empty: the own metadata homed there is gone.
    raw.delete(client.shards[lost].keys.workflow(homes[lost]))
    bare = make_client(shards=2, registry=Registry())
    ghost = next(
        f"ghost-{i}" for i in range(64) if client.shard_of_workflow(f"ghost-{i}").index == lost
    )
    run = bare.run_by_name(ghost, None).id
    assert client.shard_of_run(run).index == lost
    assert raw.hget(client.shards[lost].keys.run(run), "queueFallback") == b"1"
    assert held_after_loss(client, _claimed(client, run), own, {})
