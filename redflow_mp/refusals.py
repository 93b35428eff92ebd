"""The library's errors for Redis trouble met by an operator's step (reading the
server's time, ``redflow migrate``, re-sharding), naming what was being done.

Such steps send many plain commands and pipelines (not scripts, not query
plans); a refusal reached the caller as redis-py's raw ``ResponseError``
("WRONGTYPE Operation against a key holding the wrong kind of value", with no
key and no step). :func:`doing` wraps a step: ``BUSY``, ``OOM`` and a server
that takes no writes become :class:`~.errors.RedisBusyError`,
:class:`~.errors.RedisOutOfMemoryError`, :class:`~.errors.RedisReadOnlyError`
(as for a script call: ``replies.refused``), ``WRONGTYPE`` a
:class:`~.errors.WrongTypeError`, each naming the step (and its keys, where the
step names them) and the server. Any other refusal (``NOPERM``: the supervisor's
start tells the user which ACL rule is missing by its class) and a network error
(the project's ``NETWORK_ERRORS``) keep their redis-py class, their message
prefixed with the step and the server. The library's own errors pass unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.exceptions import ResponseError

from .errors import RedflowError, WrongTypeError
from .replies import refused

__all__ = ["doing", "refusal"]


def refusal(exc: ResponseError, what: str, where: str) -> Exception | None:
    """The error naming ``what`` for ``exc``, which Redis at ``where`` answered it
    (None: ``exc`` as it is)."""
    mapped = refused(exc, what, where)
    if mapped is not None:
        return mapped
    if "WRONGTYPE" in str(exc):
        return WrongTypeError(
            f"{what} met a key of another type at {where} (written by hand or by another "
            f"program) ({exc})"
        )
    return _prefixed(exc, f"Redis at {where} refused {what}")


@contextlib.contextmanager
def doing(what: str, where: str) -> Iterator[None]:
    """Map what the block raises (see the module doc) to the error naming ``what``."""
    try:
        yield
    except RedflowError:
        raise
    except ResponseError as exc:
        named = refusal(exc, what, where)
        if named is None:
            raise
        raise named from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        named = _prefixed(exc, f"{what} at {where}")
        if named is None:
            raise
        raise named from exc


def _prefixed(exc: Exception, what: str) -> Exception | None:
    """``exc``'s class with ``what`` before its message (None: a class whose
    constructor takes other arguments)."""
    try:
        return type(exc)(f"{what}: {exc}")
    except Exception:
        return None
