"""The supervisor's first connection builds the scripts before any child is forked.

``redflow_supervisor.startup.connect`` configures its client's scripts: the
sources are built in the parent (every child inherits them instead of reading
and cutting ``lua/*.lua`` itself) and the server's script cache is filled (a
child's first claim finds every script loaded).
"""

from __future__ import annotations

from typing import Any

from redflow_mp import define_workflow, luafiles
from redflow_mp.registry import Registry
from redflow_supervisor.settings import load
from redflow_supervisor.startup import connect


def test_connect_builds_and_loads_the_scripts(
    redis_url: str, prefix: str, registry: Registry, raw: Any
) -> None:
    settings = load(
        {"app": "startup", "url": redis_url, "prefix": prefix, "modules": ("unused",)},
        environ={},
    )
    luafiles._sources.cache_clear()
    client = connect(settings, registry, ("q",))
    try:
        assert luafiles._sources.cache_info().currsize == 1  # built here, before any fork
        shas = list(client.scripts._shas.values())
        assert len(shas) == len(luafiles.SCRIPT_NAMES)
        assert all(raw.script_exists(*shas))
    finally:
        client.close()


def _handler(ctx: Any) -> None:
    pass


def test_sync_writes_every_workflow_in_one_round_trip_of_writes(
    client: Any, registry: Registry, raw: Any
) -> None:
    """Registering many workflows costs a fixed number of round trips (the supervisor
    syncs before it forks), not two per workflow."""
    for i in range(8):
        define_workflow(f"startup-{i}", queue=f"q{i % 3}", registry=registry)(_handler)

    def multis() -> int:
        return int(raw.info("commandstats").get("cmdstat_multi", {}).get("calls", 0))

    before = multis()
    client.sync_registry(registry, app="startup")
    assert multis() - before == 1
    names = {m.decode() for m in raw.smembers(client.keys.workflows)}
    assert names >= {f"startup-{i}" for i in range(8)}
    assert {m.decode() for m in raw.smembers(client.keys.queues)} >= {"q0", "q1", "q2"}


def test_connect_writes_the_live_registration_before_any_child_is_forked(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    """A rolling deploy: the new code's supervisor has synced its workflows and
    forked its children, whose runs the old code's workers may claim at once. Those
    put a run back only when a live registration lists its workflow, which the
    registration duty wrote at its first tick, after the fork: in between they
    failed such runs (tests/process/test_mixed_code failed so under load). Before:
    ``assert loaded_live(...)`` was False after connect()."""
    from redflow_mp.sync import loaded_live

    define_workflow("added-at-deploy", queue="q", registry=registry)(_handler)
    settings = load(
        {"app": "deploy", "url": redis_url, "prefix": prefix, "modules": ("unused",)},
        environ={},
    )
    client = connect(settings, registry, ("q",))
    try:
        assert loaded_live(client, "added-at-deploy")
    finally:
        client.close()
