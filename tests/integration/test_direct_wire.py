"""``Transport.call_packed`` off a cluster and Sentinel sends and reads through
``directwire.py`` (the connection's socket and hiredis reader) where that is
equivalent to redis-py's public methods, and through the public methods where it
is not (redis-py's pure-Python parsers, hiredis absent). Both paths answer the
same replies and errors, close the connection on a failure mid-call (a late
reply is never taken as the next answer) and reconnect at the next call."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from types import FrameType
from typing import Any

import hiredis
import pytest
import redis
from redis._parsers import _RESP2Parser, _RESP3Parser
from redis.exceptions import NoScriptError, ResponseError
from redis.sentinel import SentinelManagedConnection

from redflow_mp import Context, Registry, create_client, define_workflow, directwire
from redflow_mp.transport import Transport
from redflow_mp.worker import Worker
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


def cmd(*args: Any) -> bytes:
    """The packed command (hiredis's stubs want one type of item per tuple)."""
    pack: Any = hiredis.pack_command
    packed: bytes = pack(args)
    return packed


PING = cmd("PING")


@pytest.fixture(params=["direct", "public"])
def transport(
    request: pytest.FixtureRequest, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Transport]:
    """A plain transport; "public": as with a pure-Python parser (no hiredis)."""
    if request.param == "public":
        monkeypatch.setattr(directwire, "_PARSER", None)
    t = Transport(redis_server.url)
    try:
        yield t
    finally:
        t.close()


def _direct(t: Transport) -> bool:
    return directwire.usable(t._wire().conn) is not None


def test_the_direct_path_serves_a_plain_connection_with_hiredis_only(
    redis_server: RedisServer,
) -> None:
    t = Transport(redis_server.url)
    try:
        assert t.call_packed(PING) == b"PONG"
        assert _direct(t)
    finally:
        t.close()
    connection_class: Any = redis.Connection  # untyped in redis-py
    for parser in (_RESP2Parser, _RESP3Parser):  # hiredis absent: redis-py's own path
        conn = connection_class(host="127.0.0.1", port=redis_server.port, parser_class=parser)
        try:
            conn.connect()
            assert directwire.usable(conn) is None
        finally:
            conn.disconnect()
    assert not directwire._class_ok(SentinelManagedConnection)  # its read_response differs


def test_replies_and_error_replies_are_those_of_the_public_path(transport: Transport) -> None:
    assert transport.call_packed(PING) == b"PONG"
    assert transport.call_packed(cmd("SET", "dw:k", "v")) == b"OK"
    assert transport.call_packed(cmd("GET", "dw:missing")) is None
    assert transport.call_packed(cmd("MGET", "dw:k", "dw:missing")) == [
        b"v",
        None,
    ]
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        transport.call_packed(cmd("LPUSH", "dw:k", "x"))
    with pytest.raises(NoScriptError):
        transport.call_packed(cmd("EVALSHA", "0" * 40, 0))
    big = "x" * 200_000  # a reply read in many pieces
    transport.call_packed(cmd("SET", "dw:big", big))
    assert transport.call_packed(cmd("GET", "dw:big")) == big.encode()
    assert transport.call_packed(PING) == b"PONG"  # the connection stayed in step


def test_a_killed_connection_raises_connection_error_and_the_next_call_reconnects(
    transport: Transport, redis_server: RedisServer
) -> None:
    my_id = transport.call_packed(cmd("CLIENT", "ID"))
    killer = redis_server.client()
    try:
        assert killer.client_kill_filter(_id=my_id) == 1
    finally:
        killer.close()
    with pytest.raises(redis.ConnectionError):
        transport.call_packed(PING, retry=False)
    assert transport.call_packed(PING) == b"PONG"
    assert transport.call_packed(cmd("CLIENT", "ID")) != my_id


class _Interrupted(Exception):
    pass


def test_a_read_interrupted_closes_the_connection_and_its_late_reply_is_never_an_answer(
    transport: Transport,
) -> None:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted()

    # Connected first: the alarm is to interrupt the read. Under load the first
    # call's connect can outlast it, and redis-py's connect closes its new socket
    # on an OSError only (the test then failed on that socket's ResourceWarning).
    assert transport.call_packed(PING) == b"PONG"
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(_Interrupted):
            transport.call_packed(cmd("BLPOP", "dw:none", 0.3), retry=False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # BLPOP's nil comes 0.3 s later, on the closed connection: not here
    assert transport.call_packed(PING) == b"PONG"
    assert transport.call_packed(cmd("ECHO", "after")) == b"after"


def test_a_worker_drains_through_either_path(
    transport: Transport, redis_server: RedisServer
) -> None:
    transport.call_packed(PING)  # connected: the path it takes is known
    direct = _direct(transport)
    registry = Registry()

    @define_workflow("dw-noop", queue="dw", registry=registry)
    def noop(ctx: Context[int]) -> int:
        return 1

    client = create_client(redis_server.url, prefix="dw", registry=registry, default=False)
    try:
        handles = noop.run_many(list(range(30)), client=client)
        worker = Worker(client, queues=["dw"], registry=registry, max_runs=30)
        worker.run()
        assert worker.runs_done == 30
        assert _direct(client.shards[0].transport) is direct
        assert [h.result(timeout=5) for h in handles] == [1] * 30
    finally:
        client.close()


def test_a_read_timeout_is_redis_pys_timeout_error_and_closes_the_connection(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for public in (False, True):
        if public:
            monkeypatch.setattr(directwire, "_PARSER", None)
        t = Transport(redis_server.url)
        try:
            assert t.call_packed(PING) == b"PONG"
            assert _direct(t) is not public
            t._wire().conn._sock.settimeout(0.2)  # (the transport's is 5 s)
            with pytest.raises(redis.TimeoutError):
                t.call_packed(cmd("BLPOP", "dw:none", 1), retry=False)
            assert t.call_packed(PING) == b"PONG"  # not BLPOP's late nil
        finally:
            t.close()


def test_a_connection_closed_after_the_check_raises_connection_error(
    redis_server: RedisServer,
) -> None:
    t = Transport(redis_server.url)
    try:
        assert t.call_packed(PING) == b"PONG"
        conn = t._wire().conn
        parser = directwire.usable(conn)
        assert parser is not None
        conn.disconnect()  # another thread's close(), say
        with pytest.raises(redis.ConnectionError):
            directwire.request(conn, parser, PING)
        assert t.call_packed(PING) == b"PONG"
    finally:
        t.close()


def test_a_command_larger_than_the_send_buffer_arrives_whole(redis_server: RedisServer) -> None:
    """A command far past the socket's send buffer arrives whole on the direct
    path and the connection stays in step."""
    t = Transport(redis_server.url)
    try:
        assert t.call_packed(PING) == b"PONG"
        conn = t._wire().conn
        assert directwire.usable(conn) is not None
        sock = conn._sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        value = bytes(range(256)) * 20_000  # 5 MB, far past the buffer
        assert t.call_packed(cmd("SET", "dw:huge", value)) == b"OK"
        assert conn._sock is sock  # sent on the same connection, not a new one
        assert t.call_packed(cmd("STRLEN", "dw:huge")) == len(value)
        assert t.call_packed(cmd("GET", "dw:huge")) == value
        assert t.call_packed(PING) == b"PONG"
    finally:
        t.close()


def test_the_public_path_serves_a_connection_closed_checked_or_without_the_attributes(
    redis_server: RedisServer,
) -> None:
    """:func:`directwire.usable` answers None, never raises, for a connection that
    is closed (no socket), not connected yet, has a health check interval, or lacks
    the private attributes it reads (a redis-py that renamed them)."""
    connection_class: Any = redis.Connection  # untyped in redis-py
    conn = connection_class(host="127.0.0.1", port=redis_server.port)
    assert directwire.usable(conn) is None  # not connected yet
    conn.connect()
    try:
        assert directwire.usable(conn) is not None  # the control: open, hiredis
        conn.disconnect()
        assert directwire.usable(conn) is None  # closed
        conn.connect()
        assert directwire.usable(conn) is not None
        conn.health_check_interval = 30
        assert directwire.usable(conn) is None  # redis-py's health check comes first
        conn.health_check_interval = 0
        parser = conn._parser
        del parser._reader  # a parser that names its reader otherwise
        assert directwire.usable(conn) is None
        parser._reader = None
        assert directwire.usable(conn) is None
    finally:
        conn.disconnect()
    bare = connection_class.__new__(connection_class)  # none of the attributes
    assert directwire.usable(bare) is None
