"""Argument checks shared by every public entry point, and a run's start options.

Names (workflows, queues, steps, apps), timeouts and run ids are checked here
once, with the same messages everywhere. :class:`RunOptions` is the checked,
normalised form of the options a run is started with (``run_at``,
``queue_override``, ``idempotency_key``, ``idempotency_ttl``, ``timeout``,
``priority``, ``parent_run_id``): public methods take them as keywords, build one
``RunOptions`` and hand it down, so the option list is spelled out once.

Pure: no I/O, no state.
"""

from __future__ import annotations

import math
from datetime import datetime

import msgspec

__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_MS",
    "MAX_NAME_LENGTH",
    "MAX_PRIORITY",
    "MAX_REASON_LENGTH",
    "MAX_RUN_AT",
    "MAX_RUN_ID_LENGTH",
    "NO_OPTIONS",
    "RunOptions",
    "cannot_be_run_id",
    "check_idempotency_key",
    "check_name",
    "check_priority",
    "check_reason",
    "check_run_id",
    "check_text",
    "check_timeout",
    "check_user_key",
    "is_reserved_key",
    "is_text",
    "seconds_to_ms",
    "shown_run_id",
    "spec_run_id",
    "timeout_to_ms",
]

MAX_NAME_LENGTH = 512
MAX_IDEMPOTENCY_KEY_LENGTH = 4096
DEFAULT_IDEMPOTENCY_TTL = 7 * 24 * 3600.0
MAX_PRIORITY = 9
MAX_REASON_LENGTH = 4000
#: The latest ``run_at`` (epoch seconds, 3000-01-01 UTC): later times would reach
#: the scripts as numbers they print in exponent notation.
MAX_RUN_AT = 32_503_680_000


def is_text(value: str) -> bool:
    """True when ``value`` encodes as UTF-8 (what Redis stores); False for a str holding
    a lone surrogate, which is what Python makes of bytes that are not UTF-8
    (``surrogateescape``: file names, command-line arguments, some HTTP headers)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, what: str) -> str:
    """``value`` if it is valid Unicode text, else a ``ValueError`` naming ``what``.

    Without this check redis-py raises ``UnicodeEncodeError`` when it encodes the
    command, which in a batch comes after the chunks before it were written."""
    if not is_text(value):
        raise ValueError(
            f"{what} is not valid Unicode text: it holds a lone surrogate (bytes that were "
            "not UTF-8, decoded with surrogateescape); decode the bytes as UTF-8 first"
        )
    return value


def check_name(value: object, what: str) -> str:
    """Validate a workflow, queue or step name: a non-blank str of bounded length."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}")
    return check_text(value, what)


def check_timeout(value: object, what: str) -> float | None:
    """Validate an optional positive number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds or None")
    seconds = _as_float(value, what)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be a positive number of seconds")
    return seconds


def _as_float(value: float, what: str) -> float:
    """``value`` as a float; an int past a double's range (``10**400``) is a
    ``ValueError`` naming ``what``, not ``OverflowError`` from ``math.isfinite``."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{what} is too large: an int of {int(value).bit_length()} bits, past a float's range"
        ) from None


#: The longest time a record holds, in milliseconds (2**53: about 285,000 years,
#: exact in a double, hence in Lua): a longer ``timeout`` or ``idempotency_ttl``
#: (any finite number of seconds is accepted) is stored as this, which means the
#: same (never). 1e308 s is an infinite number of milliseconds: ``round`` raised
#: ``OverflowError`` in ``run()``, and in ``sync_registry`` for a workflow's.
MAX_MS = 2**53


def seconds_to_ms(seconds: float) -> int:
    """``seconds`` (finite, >= 0) in whole milliseconds, at most :data:`MAX_MS`."""
    return MAX_MS if seconds * 1000 >= MAX_MS else round(seconds * 1000)


def timeout_to_ms(seconds: float) -> int:
    """A timeout in whole milliseconds, at least 1: ``int(0.0004 * 1000)`` is 0, which
    the run record reads as "no timeout", so a tiny timeout silently became none."""
    return max(1, seconds_to_ms(seconds))


def spec_run_id(run_id: str | None, spec_id: str | None, method: str) -> str:
    """The run id given to ``method`` positionally, as ``run_id=``, or as ``id=``
    (SPEC §2's spelling: ``get_run(id)``, ``get_run_steps(id)``, ``cancel_run(id,
    reason=None)``), checked; giving it twice is a TypeError."""
    if spec_id is not None:
        if run_id is not None:
            raise TypeError(f"{method}() takes the run id once: positionally, as run_id= or as id=")
        run_id = spec_id
    return check_run_id(run_id)


def check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str):
        raise TypeError(f"run id must be a str, not {type(run_id).__name__}")
    if not run_id:
        raise ValueError("run id must be a non-empty string")
    return run_id


#: Run ids are 26 characters (31 with a shard suffix); a longer "id" (a 10 MB
#: string from a request) is an unknown run without a round trip, and never a
#: pub/sub channel the result waiter subscribes to.
MAX_RUN_ID_LENGTH = 128


def cannot_be_run_id(run_id: str) -> bool:
    """True for an id no run has: run ids never contain ':', and ``<id>:steps``
    (or ``:attempts``, ...) would name one of a run's other keys; nor are they
    anything but ASCII (an id holding a lone surrogate cannot even be sent), nor
    longer than :data:`MAX_RUN_ID_LENGTH`. Such ids are unknown runs (None,
    False), never read as one."""
    return len(run_id) > MAX_RUN_ID_LENGTH or ":" in run_id or not run_id.isascii()


def shown_run_id(run_id: str) -> str:
    """``run_id`` for a message: cut when it is far longer than a run id."""
    return run_id if len(run_id) <= 80 else f"{run_id[:60]}... ({len(run_id)} characters)"


def check_priority(priority: object) -> int:
    """``priority`` if it is an int from 0 to 9, else a clear TypeError/ValueError."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int from 0 to {MAX_PRIORITY}, not {priority!r}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"priority must be from 0 (default) to {MAX_PRIORITY} (claimed first), not {priority}"
        )
    return priority


def check_reason(reason: object) -> str:
    """A cancel reason: a str or None (stored as ""), at most MAX_REASON_LENGTH
    characters (it is copied into the run's error and every child a cancel reaches)."""
    if reason is not None and not isinstance(reason, str):
        raise TypeError("reason must be a str or None")
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise ValueError(
            f"reason is {len(reason)} characters long; the limit is {MAX_REASON_LENGTH}"
        )
    return check_text(reason, "reason") if reason else ""


def _run_at_ms(run_at: datetime | float | None) -> int:
    if run_at is None:
        return 0
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None or run_at.tzinfo.utcoffset(run_at) is None:
            raise ValueError(
                "run_at is a naive datetime; pass an aware one (e.g. datetime.now(timezone.utc))"
            )
        run_at = run_at.timestamp()
    elif isinstance(run_at, bool) or not isinstance(run_at, int | float):
        raise TypeError("run_at must be an aware datetime or epoch seconds")
    else:
        run_at = _as_float(run_at, "run_at")
    if not math.isfinite(run_at) or run_at < 0:
        raise ValueError("run_at must be a finite, non-negative epoch time in seconds")
    if run_at > MAX_RUN_AT:
        raise ValueError(
            f"run_at must be before the year 3000 (epoch {MAX_RUN_AT} s), not {run_at!r}"
        )
    return int(run_at * 1000)


def _length_prefixed(data: bytes, parts: int) -> bytes | None:
    """What follows ``parts`` length-prefixed components (``<n>:<n bytes>``, joined
    by ``:``) at the start of ``data``, or None when ``data`` does not start so."""
    for i in range(parts):
        if i:
            if not data.startswith(b":"):
                return None
            data = data[1:]
        size, sep, rest = data.partition(b":")
        if not sep or not size.isdigit() or len(rest) < int(size):
            return None
        data = rest[int(size) :]
    return data


def is_reserved_key(key: str) -> bool:
    """True for an idempotency key of the form redflow-mp makes itself: a step's
    child (``keys.step_workflow_key``, with ``:<i>`` for ``run_workflows``), a
    cron fire (``keys.cron_key``) or an operator's retry (``keys.retry_key``).

    A caller must never pass one: a run enqueued under the key of another run's
    step would be taken as that step's child (the parent awaits its output, the
    caller's input instead of its own), one under a cron key would stand in
    for that fire, and one under a retry key for the retry an operator asks
    for. Only keys that parse exactly as those length-prefixed forms (followed
    by nothing or ``:``) are reserved; ``cron:nightly`` is not.
    """
    for head, parts in (("stepwf:", 3), ("cron:", 1), ("retry:", 1)):
        if key.startswith(head):
            rest = _length_prefixed(key[len(head) :].encode("utf-8", "surrogatepass"), parts)
            return rest is not None and (rest == b"" or rest.startswith(b":"))
    return False


def check_user_key(key: str, what: str) -> str:
    """``key`` unless it is reserved (:func:`is_reserved_key`): a ``ValueError``."""
    if is_reserved_key(key):
        raise ValueError(
            f"{what} has the form of a key redflow-mp makes for a step's child run, a "
            "cron fire or a retry (stepwf:<n>:... / cron:<n>:... / retry:<n>:...); such "
            "keys are reserved, so that no caller can stand in for another run's child, "
            "a scheduled fire or an operator's retry"
        )
    return key


def check_idempotency_key(key: object) -> str:
    """An ``idempotency_key`` of a run or an event ('' for None): a non-empty str of
    at most :data:`MAX_IDEMPOTENCY_KEY_LENGTH` characters of valid Unicode."""
    if key is None:
        return ""
    if not isinstance(key, str):
        raise TypeError("idempotency_key must be a str or None")
    if not key:
        raise ValueError("idempotency_key must be non-empty when given")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(
            f"idempotency_key is {len(key)} characters; the limit is {MAX_IDEMPOTENCY_KEY_LENGTH}"
        )
    return check_text(key, "idempotency_key")


def _idempotency(key: str | None, ttl: float | None, system: bool = False) -> tuple[str, int]:
    checked = check_idempotency_key(key)
    if checked and not system:
        check_user_key(checked, "idempotency_key")
    ttl_s = check_timeout(ttl, "idempotency_ttl")
    if ttl_s is None:
        return checked, int(DEFAULT_IDEMPOTENCY_TTL * 1000)
    return checked, MAX_MS if ttl_s * 1000 >= MAX_MS else int(ttl_s * 1000)


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a run is started, checked and normalised (build with :meth:`of`).

    ``run_at_ms`` 0 means now; ``idempotency_key`` "" means none; ``timeout``
    and ``priority`` None mean the workflow's own.
    """

    run_at_ms: int = 0
    queue_override: str | None = None
    idempotency_key: str = ""
    idempotency_ttl_ms: int = int(DEFAULT_IDEMPOTENCY_TTL * 1000)
    timeout: float | None = None
    priority: int | None = None
    parent_run_id: str | None = None
    linked: bool = False  # the parent awaits the child (run_workflow): cancel cascades

    @classmethod
    def of(
        cls,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        parent_run_id: str | None = None,
        linked: bool = False,
        system_key: bool = False,
    ) -> RunOptions:
        """Check every option (clear ``TypeError``/``ValueError``) and normalise it.

        ``system_key``: ``idempotency_key`` was made by redflow-mp (a step's child),
        so it may have a reserved form (:func:`is_reserved_key`); a caller's may not.
        """
        if (
            run_at is None
            and queue_override is None
            and idempotency_key is None
            and idempotency_ttl is None
            and timeout is None
            and priority is None
            and not parent_run_id
        ):
            # A run with no option (the common call): nothing to check. The
            # instance is shared (frozen); about 7,000 CPU instructions a call saved.
            return NO_OPTIONS if cls is RunOptions else cls()
        queue = None if queue_override is None else check_name(queue_override, "queue")
        at_ms = _run_at_ms(run_at)
        key, ttl_ms = _idempotency(idempotency_key, idempotency_ttl, system_key)
        return cls(
            run_at_ms=at_ms,
            queue_override=queue,
            idempotency_key=key,
            idempotency_ttl_ms=ttl_ms,
            timeout=check_timeout(timeout, "timeout"),
            priority=None if priority is None else check_priority(priority),
            parent_run_id=_parent(parent_run_id),
            linked=bool(linked and parent_run_id),
        )


def _parent(parent_run_id: object) -> str | None:
    """``parent_run_id`` (None for none) if some run can have it as its id."""
    if parent_run_id is None or parent_run_id == "":
        return None
    if not isinstance(parent_run_id, str):
        raise TypeError(f"parent_run_id must be a str, not {type(parent_run_id).__name__}")
    if cannot_be_run_id(parent_run_id):
        raise ValueError(
            f"parent_run_id {shown_run_id(parent_run_id)!r} is no run id: run ids are "
            f"ASCII, hold no ':' and are at most {MAX_RUN_ID_LENGTH} characters"
        )
    return parent_run_id


#: What :meth:`RunOptions.of` returns for a run with no option (shared: frozen).
NO_OPTIONS = RunOptions()
