"""A run enqueued with no option goes through the packed call (``packed.py``):
it writes the record the general path writes, recovers the scripts a server
lost, refuses a key of the wrong type as the general path does, and runs."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Registry, WrongTypeError, define_workflow
from tests.helpers import command

pytestmark = pytest.mark.timeout(60)


def _fields(raw: redis.Redis, client: Client, run_id: str) -> dict[bytes, bytes]:
    got: dict[bytes, bytes] = raw.hgetall(client.keys.run(run_id))  # type: ignore[assignment]
    return got


def test_a_plain_run_writes_what_the_general_path_writes(
    client: Client, registry: Registry, raw: redis.Redis, packed_calls: list[bytes]
) -> None:
    @define_workflow("plain-wf", queue="plain-q", max_concurrency=5, registry=registry)
    def plain(ctx: Any) -> None:
        return None

    fast = plain.run({"a": 1}, client=client)
    assert len(packed_calls) == 1
    general = plain.run({"a": 1}, client=client, run_at=0.0)  # an option: the general path
    assert len(packed_calls) == 1
    a, b = _fields(raw, client, fast.id), _fields(raw, client, general.id)
    varying = {b"id", b"createdAt", b"availableAt", b"updatedAt"}
    assert {k: v for k, v in a.items() if k not in varying} == {
        k: v for k, v in b.items() if k not in varying
    }
    assert a[b"id"] == fast.id.encode() and a[b"status"] == b"queued"
    assert a[b"inputJson"] == b'{"a":1}' and a[b"maxConcurrency"] == b"5"
    for key in (client.keys.q_ready("plain-q"), client.keys.runs_created):
        assert raw.zscore(key, fast.id) is not None
    # by name, too (the registry's definition)
    named = client.run_by_name("plain-wf", {"b": 2})
    assert len(packed_calls) == 2
    assert _fields(raw, client, named.id)[b"queue"] == b"plain-q"


def test_runs_with_a_priority_or_timeout_take_the_general_path(
    client: Client, registry: Registry, raw: redis.Redis, packed_calls: list[bytes]
) -> None:
    @define_workflow("prio-wf", queue="pq", priority=3, registry=registry)
    def prio(ctx: Any) -> None:
        return None

    @define_workflow("slow-wf", queue="pq", timeout=5.0, registry=registry)
    def slow(ctx: Any) -> None:
        return None

    p, s = prio.run(client=client), slow.run(client=client)
    assert packed_calls == []
    assert _fields(raw, client, p.id)[b"priority"] == b"3"
    assert _fields(raw, client, s.id)[b"timeoutMs"] == b"5000"


def test_a_plain_run_survives_the_server_losing_its_scripts(
    any_client: Client, registry: Registry, raw: redis.Redis, packed_calls: list[bytes]
) -> None:
    @define_workflow("flush-wf", queue="fq", registry=registry)
    def flushed(ctx: Any) -> None:
        return None

    ids = [flushed.run(client=any_client).id]
    command(raw, "SCRIPT", "FLUSH")
    if any_client.transport.server_version() >= (7, 0):
        command(raw, "FUNCTION", "FLUSH")
    ids.append(flushed.run(client=any_client).id)
    ids.append(flushed.run(client=any_client).id)
    assert len(packed_calls) == 3
    assert [raw.hget(any_client.keys.run(i), "status") for i in ids] == [b"queued"] * 3
    assert raw.zcard(any_client.keys.q_ready("fq")) == 3


def test_a_ready_set_of_another_type_is_refused_and_nothing_is_written(
    client: Client, registry: Registry, raw: redis.Redis, packed_calls: list[bytes]
) -> None:
    @define_workflow("typo-wf", queue="typo-q", registry=registry)
    def typo(ctx: Any) -> None:
        return None

    raw.set(client.keys.q_ready("typo-q"), "not a redflow key")
    with pytest.raises(WrongTypeError, match="typo-q"):
        typo.run(client=client)
    assert len(packed_calls) == 1
    assert raw.zcard(client.keys.runs_created) == 0
    assert raw.keys(client.keys.run("*")) == []
