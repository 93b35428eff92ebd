"""``list_supervisors`` (``redflow supervisors``, the dashboard's supervisors
page, the retention duty's served queues) as operators meet it: read by the
documented read-only viewer while a supervisor that died without removing its
record (SIGKILL, OOM, a lost host) is still indexed, and over a ``supervisors``
index holding many ids (dead ones, or a neighbour's flood)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from redflow_mp import Client, Registry, create_client
from redflow_supervisor.status import (
    LIST_CHUNK,
    SupervisorStatus,
    list_supervisors,
    write_supervisor_status,
)
from tests.redis_server import RedisServer

PASSWORD = "viewer-test-5b1d9e07"
DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _viewer_rules(prefix: str, server_major: int) -> list[str]:
    """The documented viewer's rules; on Redis 6.2 its ``%R~`` key patterns as the
    docs say there (``~``: the rules allow no write command anyway)."""
    found = re.search(r"^\s*ACL SETUSER etl-viewer on >PASSWORD (.+)$", DOC.read_text(), re.M)
    assert found, "docs/operations.md has no 'ACL SETUSER etl-viewer ...' line"
    rules = found.group(1).replace("{etl}", "{" + prefix + "}").split()
    return rules if server_major >= 7 else [r.replace("%R~", "~", 1) for r in rules]


def _status(sid: str, now_ms: int) -> SupervisorStatus:
    return SupervisorStatus(
        id=sid,
        app="a",
        host="h",
        pid=1,
        started_at=now_ms,
        updated_at=now_ms,
        mode="run",
        leader=False,
        queues=["q"],
        procs=1,
    )


@pytest.fixture()
def admin(server: RedisServer) -> Iterator[Client]:
    c = create_client(server.url, prefix="sups", default=False, registry=Registry())
    try:
        yield c
    finally:
        c.close()


def test_the_read_only_viewer_lists_supervisors_beside_a_dead_ones_id(
    server: RedisServer, admin: Client
) -> None:
    """Before: ``NoPermissionError: this user has no permissions to run the 'zrem'
    command`` (``redflow supervisors`` exit 1) for as long as a dead supervisor's
    id stayed indexed."""
    now = admin.server_time_ms()
    write_supervisor_status(admin, _status("live-1", now))
    admin.redis.zadd(admin.keys.supervisors, {"dead-1": now - 60_000})  # its record expired
    raw = server.client()
    major = int(str(raw.info("server")["redis_version"]).split(".")[0])
    rules = _viewer_rules("sups", major)
    raw.execute_command("ACL", "SETUSER", "viewer", "on", f">{PASSWORD}", *rules)  # type: ignore[no-untyped-call]
    raw.close()
    url = server.url.replace("redis://", f"redis://viewer:{PASSWORD}@")
    viewer = create_client(url, prefix="sups", default=False, registry=Registry())
    try:
        assert [s.id for s in list_supervisors(viewer)] == ["live-1"]
    finally:
        viewer.close()
    # a user who may write forgets the dead id
    assert [s.id for s in list_supervisors(admin)] == ["live-1"]
    assert admin.redis.zrange(admin.keys.supervisors, 0, -1) == [b"live-1"]


def test_a_large_supervisors_index_is_read_in_short_commands(
    server: RedisServer, admin: Client
) -> None:
    """Before: one ``ZRANGE 0 -1``, one ``MGET`` and one ``ZREM`` of all 20,000 ids
    (a million: seconds of Redis held by each): ``assert 20000 <= 1002``."""
    now = admin.server_time_ms()
    dead = 20_000
    with admin.redis.pipeline(transaction=False) as pipe:
        for start in range(0, dead, 5000):
            pipe.zadd(
                admin.keys.supervisors,
                {f"dead-{i}": now - 60_000 + i for i in range(start, start + 5000)},
            )
        pipe.execute()
    write_supervisor_status(admin, _status("live-1", now))
    raw: redis.Redis = server.client()
    try:
        raw.config_set("slowlog-log-slower-than", 0)
        raw.config_set("slowlog-max-len", 100_000)
        raw.slowlog_reset()
        assert [s.id for s in list_supervisors(admin)] == ["live-1"]
        entries = raw.slowlog_get(100_000)
        raw.config_set("slowlog-log-slower-than", 10_000)
    finally:
        raw.close()
    assert admin.redis.zcard(admin.keys.supervisors) == 1

    def size(entry: dict[str, object]) -> int:
        """The command's argument count (the slow log keeps 32 and counts the rest)."""
        words = bytes(entry["command"]).split()  # type: ignore[call-overload]
        more = re.search(rb"\.\.\. \((\d+) more arguments\)", bytes(entry["command"]))  # type: ignore[call-overload]
        return len(words) + (int(more.group(1)) - 4 if more else 0)

    ours = [e for e in entries if b"supervisor" in bytes(e["command"])]
    assert ours, entries[:5]
    assert max(size(e) for e in ours) <= LIST_CHUNK + 2
    assert not [
        e
        for e in ours
        if bytes(e["command"]).lower().startswith(b"zrange") and b" -1" in bytes(e["command"])
    ]
