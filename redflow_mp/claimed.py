"""What a claim hands over and what a finish carries: :class:`Claimed` (a run
given to a worker by ``claim_run``, read from its reply) and :class:`Finish` (a
run's fenced finish, as ``claim_run``/``finalize_run`` take it).

Pure data and reply parsing; ``scripts.py`` re-exports both names.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

__all__ = ["Claimed", "Finish", "claimed_from_reply"]


class Finish(NamedTuple):
    """A run's fenced finish, in the order ``claim_run``/``finalize_run`` take it.

    ``mode`` is ``succeeded``, ``failed``, ``canceled`` or ``retry`` (a worker's
    outcome), ``defer`` (put back, no attempt spent: ``finalize_run`` only), or
    ``crash``/``requeue`` (a host putting a run back); ``payload`` is the output
    or the encoded error; ``delay_ms`` the retry's (or defer's) delay.
    """

    mode: str
    run_id: str
    token: str
    payload: bytes | str = b""
    delay_ms: int = 0


class Claimed(msgspec.Struct, gc=False):
    """A run handed to a worker by ``claim_run``.

    A msgspec Struct: its ``__init__`` is C code (a slots dataclass's is Python, 17
    assignments a claim); ``gc=False``, as it holds no reference back to itself
    (``steps`` holds names and bytes), so the collector never scans it."""

    id: str
    workflow: str
    queue: str
    input_json: bytes
    attempt: int
    max_attempts: int
    created_at: int
    parent_run_id: str | None
    timeout_ms: int | None
    cron_id: str | None
    started_at: int
    steps: dict[str, bytes]
    token: str
    lease_until: float = 0.0  # monotonic time before which the lease surely holds
    available_at: int | None = None
    # > 0: the run has that many step records, too many (or too big) for the
    # claim's reply (STEPS_INLINE, _lib_runs.lua); ``steps`` is empty and the
    # worker reads them. ``steps_unread_bytes``: their size (0: unknown).
    steps_unread: int = 0
    steps_unread_bytes: int = 0


def claimed_from_reply(reply: Any, token: str) -> Claimed | None:
    if not reply:
        return None
    # The reply's fields by index, not unpacked into names with a ``*rest`` list
    # (one list and twelve stores less a run): id, workflow, queue, input,
    # attempt, max_attempts, created, parent, timeout, cron, started, steps, then
    # available_at, steps_unread and steps_unread_bytes when the script sent them.
    # The steps are '' (not an empty list) for a run that never started.
    flat = reply[11]
    # (a run's first execution has no step: no comprehension, a call of its own)
    steps = (
        {flat[i].decode("utf-8", "replace"): flat[i + 1] for i in range(0, len(flat), 2)}
        if flat
        else {}
    )
    n = len(reply)
    available = reply[12] if n > 12 else b""
    unread = reply[13] if n > 13 else b""
    unread_bytes = reply[14] if n > 14 else b""
    parent, timeout, cron = reply[7], reply[8], reply[9]
    # Positional, in the field order (the Struct's keywords are matched by name).
    return Claimed(
        reply[0].decode("utf-8", "replace"),  # id
        reply[1].decode("utf-8", "replace"),  # workflow
        reply[2].decode("utf-8", "replace"),  # queue
        reply[3],  # input_json
        int(reply[4] or 1),  # attempt
        int(reply[5] or 1),  # max_attempts
        int(reply[6] or 0),  # created_at
        parent.decode("utf-8", "replace") if parent else None,  # parent_run_id
        int(timeout) if timeout else None,  # timeout_ms
        cron.decode("utf-8", "replace") if cron else None,  # cron_id
        int(reply[10] or 0),  # started_at
        steps,
        token,
        0.0,  # lease_until
        int(available) if available else None,  # available_at
        int(unread) if unread else 0,  # steps_unread
        int(unread_bytes) if unread_bytes else 0,  # steps_unread_bytes
    )
