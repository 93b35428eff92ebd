"""What a Redis reply means, for both transports (sync and asyncio).

Owns the reading of the server's version (``INFO server``, and the 6.2 floor)
and the classification of error replies: ``NOSCRIPT``; ``BUSY``, ``OOM`` and a
server that accepts no writes now (``READONLY``, ``MISCONF``, ``NOREPLICAS``),
each mapped by :func:`refused` to the library error saying that nothing was
changed; and :class:`WaitedWrites`, what a durability ``WAIT`` / ``WAITAOF``
reply means for the writes before it (shared by both transports). No sockets.
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rexc
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

from .connection import check_replicated
from .errors import RedflowError, RedisBusyError, RedisOutOfMemoryError, RedisReadOnlyError

__all__ = [
    "WaitedWrites",
    "check_server_version",
    "is_busy",
    "is_noscript",
    "is_oom",
    "is_read_only",
    "parse_server_version",
    "refused",
    "version_refused",
]


def parse_server_version(info: Any) -> tuple[int, ...]:
    """The server version from ``INFO server`` (redis-py's dict, or the raw text)."""
    if isinstance(info, dict):
        raw = str(info.get("redis_version", "0.0.0"))
    else:
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
        raw = "0.0.0"
        for line in text.splitlines():
            if line.startswith("redis_version:"):
                raw = line.partition(":")[2].strip()
                break
    parts = []
    for piece in raw.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_server_version(version: tuple[int, ...], where: str) -> tuple[int, ...]:
    if version < (6, 2):
        shown = ".".join(str(p) for p in version)
        raise RedflowError(f"Redis {shown} at {where} is too old: redflow-mp needs >= 6.2")
    return version


def is_noscript(exc: ResponseError) -> bool:
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


def is_busy(exc: ResponseError) -> bool:
    """``BUSY``: a script or function runs past busy-reply-threshold; the command
    was refused (``BUSYKEY``, a RESTORE onto an existing key, is another error).
    A pipeline's reply says which of its commands got it ("... caused error: BUSY";
    redis.asyncio before 5.1 quotes the reply's args: "caused error: ('BUSY")."""
    text = str(exc)
    return (
        text.startswith("BUSY ") or "caused error: BUSY " in text or "caused error: ('BUSY " in text
    )


def is_oom(exc: ResponseError) -> bool:
    # Redis 6.2 reports a script whose first write was refused as a script error
    # wrapping "-OOM command not allowed ...".
    return (
        isinstance(exc, OutOfMemoryError)
        or "OOM command not allowed" in str(exc)
        or str(exc).startswith("OOM")
    )


# Replies of a server that accepts no writes now (a script is refused before it
# starts on Redis >= 7; on 6.2 its first write fails, before anything is applied).
_WRITES_REFUSED = ("READONLY", "MISCONF", "NOREPLICAS")


def is_read_only(exc: ResponseError) -> bool:
    """``READONLY`` (a replica), ``MISCONF`` (a failed save: writes stopped) or
    ``NOREPLICAS`` (min-replicas-to-write not met); 6.2 wraps them in a script error."""
    if isinstance(exc, rexc.ReadOnlyError):
        return True
    text = str(exc)
    return any(text.startswith(code) or f"-{code} " in text for code in _WRITES_REFUSED)


def version_refused(exc: ResponseError, where: str) -> Exception:
    """The error for the ``INFO server`` a client sends before its first script
    call, refused: ``BUSY`` (another program's script) is the
    :class:`RedisBusyError` the script call would have met, not a raw reply."""
    mapped = refused(exc, "the first call (reading the server's version)", where)
    return exc if mapped is None else mapped


def refused(exc: ResponseError, what: str, where: str) -> RedflowError | None:
    """The error for a command Redis refused without applying it and that passes by
    itself (``BUSY``, ``OOM``, a server that accepts no writes now: all in
    ``TRANSIENT_ERRORS``), or None for another error."""
    if is_busy(exc):
        return RedisBusyError(
            f"Redis at {where} is busy running a script past its busy-reply-threshold "
            f"(another program's?); {what} was refused and nothing was changed ({exc})"
        )
    if is_oom(exc):
        return RedisOutOfMemoryError(
            f"Redis at {where} is out of memory (maxmemory reached); "
            f"{what} was refused and nothing was changed"
        )
    if is_read_only(exc):
        return RedisReadOnlyError(
            f"Redis at {where} accepts no writes now (a read-only replica, a failed save "
            f"or too few replicas); {what} was refused and nothing was changed ({exc})"
        )
    return None


class WaitedWrites:
    """The durability wait of a transport (sync or asyncio): the command that ends
    a pipeline of run-state writes and the check of its reply. The transport sets
    ``durability``, ``wait_ms`` and ``_wait`` (``connection.wait_command``)."""

    durability: str
    wait_ms: int
    _wait: tuple[Any, ...] | None

    def describe(self) -> str:
        """The server address for messages (each transport's own)."""
        raise NotImplementedError

    @property
    def wait_args(self) -> tuple[Any, ...] | None:
        """The WAIT / WAITAOF that must end a pipeline of run-state writes sent on
        another connection than :meth:`call`'s (None for ``durability = "none"``)."""
        return self._wait

    def check_waited(self, reply: Any) -> None:
        """Raise :class:`~redflow_mp.NotReplicatedError` unless ``reply`` (that of
        :attr:`wait_args` at the end of a pipeline) confirms its writes."""
        if isinstance(reply, Exception):
            raise reply
        check_replicated(reply, self.durability, self.wait_ms, self.describe())
