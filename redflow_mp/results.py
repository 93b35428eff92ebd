"""Waiting for a run to end: subscribe to its ``run-done:<id>`` channel, then read it.

:class:`ResultWaiter` keeps one pub/sub connection per thread (per process
after a fork) and turns a finished run into its output or its error
(``RunFailedError``, ``RunCanceledError``). No polling loop: the waiter
subscribes first and reads the run second, so a run that finished before the
subscription is seen by the read and a later finish by the message; a
succeeded run's output usually rides on the message itself. Without a message
the run is read again every ``RESULT_RECHECK_S`` (a lost publish costs that long,
not for ever).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import msgspec

from . import codec
from .errors import (
    NETWORK_ERRORS,
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    run_failed,
)
from .keys import Keys
from .options import cannot_be_run_id, check_run_id, check_timeout, shown_run_id
from .transport import Transport

__all__ = [
    "RESULT_RECHECK_S",
    "STATE_FIELDS",
    "ResultWaiter",
    "message_output",
    "outcome",
    "result_timeout",
    "terminal_state",
]

_TERMINAL = (b"succeeded", b"failed", b"canceled")

#: A waiter with no message for this long reads the run again (one HMGET): a
#: publish it never got (a pub/sub connection the network dropped silently, which
#: TCP keepalive notices only after hours) must not leave it waiting for ever.
RESULT_RECHECK_S = 15.0

#: The run fields a waiter reads (``HMGET run:<id> ...``) to learn how a run ended.
STATE_FIELDS = ("status", "outputJson", "errorJson", "cancelReason")
_SUCCEEDED = b"succeeded\n"


class _PerThread(threading.local):
    """This thread's pub/sub connection (opened by the pid that uses it)."""

    conn: Any = None
    pid: int = -1


class ResultWaiter:
    """Waits for runs of one namespace to end; thread-safe."""

    def __init__(self, transport: Transport, keys: Keys) -> None:
        self._transport = transport
        self._keys = keys
        self._local = _PerThread()

    def wait(self, run_id: str, timeout: float | None = None) -> Any:
        """Block until the run ends; return its output or raise its error."""
        check_run_id(run_id)
        timeout = check_timeout(timeout, "timeout") if timeout != 0 else 0.0
        if cannot_be_run_id(run_id):
            raise RedflowError(
                f"run {shown_run_id(run_id)} does not exist (unknown id, or removed by retention)"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self._keys.run_done(run_id).encode()
        while True:
            pubsub = self._pubsub()
            try:
                # Subscribe first, then read: a finish between the two is seen by
                # the read, a later one by the message. No polling.
                _subscribe(pubsub, channel, deadline)
                state = self._terminal_state(run_id)
                if state is None:
                    message = _wait_message(pubsub, channel, deadline)
                    if message is not None:
                        done, output = message_output(run_id, message)
                        if done:
                            return output
                        state = self._terminal_state(run_id)
                if state is not None:
                    return outcome(run_id, state)
                if deadline is not None and time.monotonic() >= deadline:
                    raise result_timeout(run_id, timeout)
            except NETWORK_ERRORS:
                self.drop()
                if deadline is not None and time.monotonic() >= deadline:
                    raise result_timeout(run_id, timeout) from None
                time.sleep(0.05)
            finally:
                self._unsubscribe(channel)

    def _terminal_state(self, run_id: str) -> list[bytes | None] | None:
        return terminal_state(
            run_id, self._transport.call("HMGET", self._keys.run(run_id), *STATE_FIELDS)
        )

    def _pubsub(self) -> Any:
        local = self._local
        if local.conn is None or local.pid != os.getpid():
            local.conn = self._transport.redis.pubsub()
            local.pid = os.getpid()
        return local.conn

    def _unsubscribe(self, channel: bytes) -> None:
        pubsub = self._local.conn
        if pubsub is None:
            return
        try:
            pubsub.unsubscribe(channel)
        except NETWORK_ERRORS:
            self.drop()

    def drop(self) -> None:
        """Close this thread's pub/sub connection (best effort on a broken socket)."""
        pubsub = self._local.conn
        self._local.conn = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        """Close this process's connection of this thread; forget every thread's."""
        if self._local.pid == os.getpid():
            self.drop()
        self._local = _PerThread()


def _subscribe(pubsub: Any, channel: bytes, deadline: float | None) -> None:
    """Subscribe and wait for the server's confirmation (so no publish is missed),
    at most until ``deadline`` or RESULT_RECHECK_S (then the caller reads the run)."""
    pubsub.subscribe(channel)
    recheck = time.monotonic() + RESULT_RECHECK_S
    deadline = recheck if deadline is None else min(deadline, recheck)
    while True:
        msg = pubsub.get_message(timeout=max(0.05, deadline - time.monotonic()))
        if msg is None:
            if time.monotonic() >= deadline:
                return
            continue
        if msg["type"] == "subscribe" and msg["channel"] == channel:
            return


def _wait_message(pubsub: Any, channel: bytes, deadline: float | None) -> bytes | None:
    """Block until a message on ``channel`` arrives (its data); None at the deadline
    or after RESULT_RECHECK_S (the caller reads the run again)."""
    recheck = time.monotonic() + RESULT_RECHECK_S
    deadline = recheck if deadline is None else min(deadline, recheck)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        msg = pubsub.get_message(timeout=remaining)
        if msg is not None and msg["type"] == "message" and msg["channel"] == channel:
            data = msg["data"]
            return data if isinstance(data, bytes) else str(data).encode()


# Pure: how a waiter reads what it got (shared with the asyncio client).


def terminal_state(run_id: str, fields: list[bytes | None]) -> list[bytes | None] | None:
    """``fields`` (the reply to ``HMGET run:<id> *STATE_FIELDS``) when the run has
    ended, None while it runs; an unknown run is a :class:`RedflowError`."""
    status = fields[0]
    if status is None:
        raise RedflowError(f"run {run_id} does not exist (unknown id, or removed by retention)")
    if status in _TERMINAL:
        return list(fields)
    return None


def message_output(run_id: str, data: bytes) -> tuple[bool, Any]:
    """A ``run-done`` message: (True, the output) when it carries a succeeded run's
    output, else (False, None): the run ended; read it to learn how."""
    if data.startswith(_SUCCEEDED):
        return True, _decode_output(run_id, data[len(_SUCCEEDED) :])
    return False, None


def result_timeout(run_id: str, timeout: float | None) -> ResultTimeoutError:
    return ResultTimeoutError(f"run {run_id} did not finish within {timeout} s (it keeps running)")


def _decode_output(run_id: str, data: bytes) -> Any:
    try:
        return codec.decode_json(data)
    except msgspec.DecodeError as exc:
        raise RedflowError(
            f"run {run_id} succeeded but its stored output is not valid JSON: {exc}"
        ) from None


def outcome(run_id: str, fields: list[bytes | None]) -> Any:
    """The output of an ended run (from :func:`terminal_state`), or its error raised."""
    status = fields[0]
    if status == b"succeeded":
        return _decode_output(run_id, fields[1]) if fields[1] else None
    error = codec.decode_error(fields[2])
    if status == b"canceled":
        reason = fields[3].decode("utf-8", "replace") if fields[3] else None
        raise RunCanceledError(run_id, error, reason)
    raise run_failed(run_id, error)
