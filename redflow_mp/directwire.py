"""One packed request on a redis-py connection, sent and read without redis-py's
per-call wrappers: the hot path's debt to redis-py's private attributes, kept here.

``Transport.call_packed`` (a worker's claim carrying its finish, a plain
enqueue) sends a command packed already and reads one reply. Through redis-py's
public ``send_packed_command`` / ``read_response`` a PING cost about 24,600 CPU
instructions a call (callgrind), most of them redis-py's layers around the
socket and the reader (the host's name formatted for an error message at every
read, keyword arguments, the reader's loop in Python); a supervisor child's run
costs 9,400 fewer this way (``python -m benchmarks.child_instr``). :func:`request`
sends and reads on the connection's own socket and hiredis reader (``_sock``,
``_parser._reader``, ``_parser._buffer``), the bytes and the reply's parsing
unchanged, and mirrors what redis-py does around them:

- any failure between sending and reading the whole reply (network error,
  timeout, a signal handler raising) closes the connection, so a late reply is
  never taken as the answer of the next command (the next call reconnects);
  a timeout is redis-py's ``TimeoutError``, a socket error its ``ConnectionError``;
- an error reply is raised as the class redis-py's parser maps it to (the same
  reader does the mapping), a ``ConnectionError`` one closing the connection;
- a RESP3 push notification read first goes to the parser's push handler and the
  reply is read by redis-py (``read_response``).

It is used only where it is known to be equivalent, else the call goes through
the public methods (:func:`usable`): a connection whose class does not override
``read_response`` or ``send_packed_command`` (Sentinel's does; the cluster
router's wrapper is a no-op off a cluster, the only place this is called), with
redis-py's hiredis parser (the pure-Python parsers, hiredis absent, take the
public path), open, with no health check interval and no reply peeked ahead
(redis-py 5's ``can_read``). Checked on redis-py 5.0.8 with hiredis 2.2.1 and on
the newest (tests/integration/test_direct_wire.py).
"""

from __future__ import annotations

import errno
from typing import Any

import hiredis
from redis import exceptions as rexc
from redis._parsers import hiredis as _redis_hiredis  # redis-py 5.0 to 8
from redis.connection import AbstractConnection

#: redis-py's hiredis parser and its "not enough data" marker (None if gone: the
#: public path only).
_NO_DATA: Any = getattr(_redis_hiredis, "NOT_ENOUGH_DATA", None)
_PARSER: Any = getattr(_redis_hiredis, "_HiredisParser", None) if _NO_DATA is not None else None

__all__ = ["request", "usable"]

#: hiredis's type of a RESP3 push notification (hiredis >= 3.2), else None.
_PUSH: Any = getattr(hiredis, "PushNotification", None)

_CLOSED = "Connection closed by server."

#: Per connection class: whether :func:`request` may serve it.
_CLASSES: dict[type[Any], bool] = {}


def _class_ok(cls: type[Any]) -> bool:
    """Whether ``cls`` sends and reads as redis-py's own connections do: no override
    of ``read_response``, and of ``send_packed_command`` only the cluster router's
    (``connection.routed_connection_class``, a no-op off a cluster)."""
    ok = cls.read_response is AbstractConnection.read_response
    for k in cls.__mro__ if ok else ():
        if "send_packed_command" not in k.__dict__ or "_route_generation" in k.__dict__:
            continue
        ok = k is AbstractConnection
        break
    _CLASSES[cls] = ok
    return ok


def usable(conn: Any) -> Any:
    """The parser of ``conn`` when :func:`request` may be used on it now, else None
    (also when a redis-py version keeps none of these attributes)."""
    ok = _CLASSES.get(type(conn))
    if ok is None:
        ok = _class_ok(type(conn))
    # Attributes read directly, not by getattr with a default (a builtin's call
    # each, about 250 CPU instructions: this runs once a worker's run).
    try:
        if not ok or conn._sock is None or conn.health_check_interval:
            return None
        parser = conn._parser
        if type(parser) is not _PARSER or parser._reader is None:
            return None
    except AttributeError:  # a redis-py without them, or a parser not connected yet
        return None
    if getattr(parser, "_next_response", _NO_DATA) is not _NO_DATA:
        return None  # a reply peeked ahead (redis-py 5's can_read): it goes first
    return parser


def request(conn: Any, parser: Any, packed: bytes) -> Any:
    """Send ``packed`` on ``conn`` and return its reply (``parser``: ``usable(conn)``)."""
    sock = conn._sock
    reader = parser._reader
    if sock is None or reader is None:  # closed by another thread since usable()
        raise rexc.ConnectionError(_CLOSED)
    try:
        # sendall, not os.write on the descriptor (one poll fewer): a handler that
        # closed every descriptor (os.closerange, as daemonizing code does) gives
        # this socket's number to the next file it opens, and os.write put the
        # command into that file; send() on a file fails (ENOTSOCK), so the
        # connection is dropped and opened again (test_stuck_children).
        sock.sendall(packed)
        reply = reader.gets()
        if reply is _NO_DATA:
            buf = parser._buffer
            while reply is _NO_DATA:
                n = sock.recv_into(buf)
                if not n:
                    raise rexc.ConnectionError(_CLOSED)
                reader.feed(buf, 0, n)
                reply = reader.gets()
    except BaseException as exc:
        conn.disconnect()
        _raise_mapped(conn, exc)
        raise  # not a network error (a signal handler's exception): as it is
    if type(reply) is list:  # the common reply: a ConnectionError first is raised
        if reply and isinstance(reply[0], rexc.ConnectionError):
            conn.disconnect()
            raise reply[0]
        return reply
    if type(reply) is bytes:  # a bulk string (a created run's enqueue): no error, no push
        return reply
    return _other(conn, parser, reply)


def _raise_mapped(conn: Any, exc: BaseException) -> None:
    """Raise :func:`request`'s failure ``exc`` (the connection closed already) as
    redis-py does when it is a network error: a timeout as its ``TimeoutError``
    (``ETIMEDOUT`` from the OS, a dead connection, as its ``ConnectionError``),
    another ``OSError`` as its ``ConnectionError``; return for anything else. The
    message names the server as redis-py's does: host:port, or the path of a unix
    socket, whose connection has no host and port (as ``Wire.where``)."""
    if not isinstance(exc, OSError):  # TimeoutError (socket.timeout) is one
        return
    where = str(getattr(conn, "path", "") or f"{conn.host}:{conn.port}")
    if isinstance(exc, TimeoutError) and exc.errno != errno.ETIMEDOUT:
        raise rexc.TimeoutError(f"Timeout reading from {where}") from exc
    raise rexc.ConnectionError(f"Error while reading from {where} : {exc.args}") from exc


def _other(conn: Any, parser: Any, reply: Any) -> Any:
    """:func:`request`'s reply that is not a list, as redis-py returns or raises it."""
    if isinstance(reply, rexc.ConnectionError):
        conn.disconnect()
        raise reply
    if isinstance(reply, rexc.ResponseError):
        raise reply
    if _PUSH is not None and isinstance(reply, _PUSH):
        handle = getattr(parser, "handle_push_response", None)
        if handle is not None:  # as redis-py's reader loop does, then its read
            handle(reply)
            return conn.read_response()
    return reply
