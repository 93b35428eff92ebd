"""Operator reads and steps meeting Redis trouble raise the library's errors,
naming what met it.

- ``admin``'s reads sent as one command (``queue_names``, ``queue_stats``,
  ``cron_entries``, ``workflow_stats``) raised a ``WrongTypeError`` that did not
  name the key ("WRONGTYPE Operation against a key holding the wrong kind of
  value (a key of another type under the prefix ...)"), unlike those sent in a
  pipeline or by a query plan.
- ``server_time_ms`` (every ``redflow`` command's clock), ``migrate_keyspace``
  and ``reshard`` let redis-py's raw ``ResponseError`` out: no key, no step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import (
    Client,
    Cron,
    RedisBusyError,
    Registry,
    WrongTypeError,
    admin,
    create_client,
    define_workflow,
)
from redflow_mp.migrate import migrate_keyspace
from redflow_mp.reshard import reshard
from redflow_mp.shardmeta import check_shards
from tests.integration.test_results_busy import _spin_in_background
from tests.redis_server import RedisServer, busy_threshold_server

pytestmark = pytest.mark.timeout(90)


def _spoil(raw: redis.Redis, key: str) -> None:
    raw.delete(key)
    raw.set(key, "a neighbour's value")


def test_admin_reads_of_one_command_name_the_key_of_another_type(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    define_workflow("adm", queue="adm-q", registry=registry, cron=[Cron("0 0 1 1 *")])(
        lambda ctx: None
    )
    client.sync_registry(registry, app="adm")
    client.run_by_name("adm", {})
    k = client.keys
    reads: dict[str, list[tuple[str, Callable[[], Any]]]] = {
        k.queues: [
            ("queue_names", lambda: admin.queue_names(client)),
            ("queue_stats", lambda: admin.queue_stats(client)),
            ("iter_queue_stats", lambda: list(admin.iter_queue_stats(client))),
        ],
        k.cron_def: [
            ("cron_entries", lambda: admin.cron_entries(client)),
            ("workflow_stats", lambda: admin.workflow_stats(client)),
        ],
        k.cron_next: [("cron_entries", lambda: admin.cron_entries(client))],
        k.runs_status("queued"): [("workflow_stats", lambda: admin.workflow_stats(client))],
    }
    unnamed: dict[str, str] = {}
    for key, fns in reads.items():
        kept = raw.dump(key)
        _spoil(raw, key)
        for name, read in fns:
            with pytest.raises(WrongTypeError) as caught:
                read()
            assert isinstance(caught.value, redis.ResponseError)  # redis-py's class still caught
            if key not in str(caught.value):
                unnamed[f"{name} / {key}"] = str(caught.value)
        raw.delete(key)
        if kept is not None:
            raw.restore(key, 0, kept)
    assert unnamed == {}


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with busy_threshold_server() as srv:
        yield srv


def test_server_time_during_a_neighbours_long_script_is_a_redis_busy_error(
    server: RedisServer,
) -> None:
    client = create_client(server.url, prefix="time-busy", default=False)
    try:
        assert client.server_time_ms() > 0
        spinner = _spin_in_background(server)
        with pytest.raises(RedisBusyError, match=r"reading the server's time \(TIME\)"):
            client.server_time_ms()
        spinner.join(30)
    finally:
        client.close()


def test_migrate_meeting_a_key_of_another_type_names_the_step_and_key(
    client: Client, raw: redis.Redis
) -> None:
    _spoil(raw, client.keys.queues)
    with pytest.raises(WrongTypeError) as caught:
        migrate_keyspace(client)
    assert "reading the queue and workflow names" in str(caught.value)
    assert client.keys.queues in str(caught.value)
    assert "WRONGTYPE" in str(caught.value)


def test_reshard_meeting_a_key_of_another_type_names_the_step_and_key(
    make_client: Callable[..., Client],
) -> None:
    one = make_client()
    check_shards(one)
    two = make_client(shards=2, verify_shards=False)
    _spoil(one.redis, one.keys.workflows)
    with pytest.raises(WrongTypeError) as caught:
        reshard(one, two)
    assert "reading the workflow names" in str(caught.value)
    assert one.keys.workflows in str(caught.value)
