"""The durable-wait scripts' arguments and replies (``suspend_run``, ``wake_timers``,
``send_event``, ``consume_event``), mixed into :class:`~redflow_mp.scripts.Scripts`.

``send_event`` is also sent by the asyncio client: its call and reply are pure
functions here (:func:`send_event_call`, :func:`send_event_reply`), shared by
both transports.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .codec import RunWait, decode_step, encode_wait, text
from .errors import LeaseLostError, RedflowError
from .keys import Keys

__all__ = [
    "SUSPEND_PAGE",
    "EventLimitError",
    "WaitCalls",
    "corrupted",
    "send_event_call",
    "send_event_reply",
]


#: Children registered per call by a paged suspend (await_children.lua): a wait
#: on more is registered a page a call before suspend_run decides, so no call
#: reads or writes more than this many children (one call for 200,000 held Redis
#: for 1.26 s of CPU).
SUSPEND_PAGE = 1_000


class EventLimitError(RedflowError, ValueError):
    """A run already has ``max_events_per_run`` events waiting unconsumed, or their
    payloads would pass ``max_event_bytes_per_run`` with this one; the event was
    not stored."""


def corrupted(run_id: str, why: Any) -> LeaseLostError:
    """A fenced write of ``run_id`` (a step's record, a consumed event) found its
    record damaged (``why``: which field) and failed the run as ``CorruptRecord``:
    the execution stops as if its lease were lost (the run is no longer its)."""
    return LeaseLostError(
        f"run {run_id}: its record is corrupted ({text(why)}); the run was failed "
        "as CorruptRecord and this execution stops"
    )


def send_event_call(
    keys: Keys,
    run_id: str,
    event: str,
    payload: bytes,
    max_events: int,
    key: str = "",
    max_bytes: int | None = None,
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Keys and arguments of ``send_event`` (``key``: the idempotency key, '' = none;
    ``max_bytes``: the run's byte budget, None = none)."""
    budget = "" if max_bytes is None else max_bytes
    return (keys.run(run_id),), (keys.tag, run_id, event, payload, max_events, key, budget)


def send_event_reply(
    reply: Any, run_id: str, max_events: int, max_bytes: int | None = None
) -> bool:
    """True when the event was stored (now, or by an earlier call with the same
    idempotency key); False for an unknown or finished run.
    Raises :class:`EventLimitError` when the run's unconsumed events are at the limit."""
    code = int(reply[0])
    if code == -2:
        raise EventLimitError(
            f"run {run_id}'s events waiting unconsumed already hold {int(reply[1])} bytes "
            f"and this one would take them past max_event_bytes_per_run={max_bytes}; "
            f"the event was not stored"
        )
    if code == -1:
        raise EventLimitError(
            f"run {run_id} already has {int(reply[1])} events waiting unconsumed "
            f"(max_events_per_run={max_events}); the event was not stored"
        )
    return code in (1, 2)


class WaitCalls:
    """Typed calls of the wait scripts; needs the host's ``run`` (see Scripts)."""

    keys: Keys

    def run(self, name: str, keys: tuple[str, ...], args: tuple[Any, ...], *, retry: bool) -> Any:
        raise NotImplementedError

    def suspend(self, run_id: str, token: str, wait: RunWait, lease_ms: int | None = None) -> str:
        """Suspend the lease holder's run on ``wait`` unless it holds now; returns
        ``resume``, ``suspended``, ``canceled``, ``lease-lost``, or the run's status
        when this token's suspend was already applied. Resend-safe.

        A wait on more than :data:`SUSPEND_PAGE` children is paged: its children's
        wake-ups are registered :data:`SUSPEND_PAGE` a call (``await_children``),
        then ``suspend_run`` decides on what the pages left (the children still
        unfinished), in a call that does not read each child, and stores the wait
        without its children (``children_awaited``: their number). Sent again from the
        first page when a call fails (each page is resend-safe). Each page makes
        the lease run ``lease_ms`` (None: as it is) from then on: the handler's
        heartbeat ended with it."""
        key = (self.keys.run(run_id),)
        head: list[Any] = [self.keys.tag, run_id, token, encode_wait(wait)]
        head.append("" if wait.wake_at is None else wait.wake_at)
        children = wait.children
        if len(children) <= SUSPEND_PAGE:
            args = [*head, len(children), *children, *wait.events]
            return text(self.run("suspend_run", key, tuple(args), retry=True)[0])
        recheck = own = 0
        lease = "" if lease_ms is None else lease_ms
        for start in range(0, len(children), SUSPEND_PAGE):
            page = children[start : start + SUSPEND_PAGE]
            first = "1" if start == 0 else "0"
            page_args = (self.keys.tag, run_id, token, first, lease, *page)
            reply = self.run("await_children", key, page_args, retry=True)
            if text(reply[0]) != "ok":  # resume, lease-lost, or the status applied
                return text(reply[0])
            own = own or int(reply[2])
            recheck = recheck or int(reply[3])
        # the stored wait names no child (run:<id>:awaits holds the unfinished ones):
        # listing 200,000 ids wrote 6 MB into the run hash in one call (20 ms)
        head[3] = encode_wait(
            msgspec.structs.replace(wait, children=[], children_awaited=len(children))
        )
        args = [*head, "paged", f"{1 if recheck else 0}{1 if own else 0}", *wait.events]
        return text(self.run("suspend_run", key, tuple(args), retry=True)[0])

    def wake_timers(self, batch: int) -> tuple[int, int | None, list[int]]:
        """Wake up to ``batch`` runs whose wake-up time came; returns (entries read,
        earliest remaining wake-up ms, lateness ms of each run woken)."""
        reply = self.run("wake_timers", (self.keys.timers,), (self.keys.tag, batch), retry=True)
        earliest = int(reply[1])
        return int(reply[0]), (earliest if earliest >= 0 else None), [int(x) for x in reply[2:]]

    def recheck_waits(self, run_ids: list[str]) -> tuple[list[str], list[str]]:
        """Of the suspended ``run_ids``: wake those whose awaited children (in this
        shard) are lost, failed or all finished, and put back into ``timers`` the
        wake-up time of the others that have one and no entry (a key Redis lost);
        returns (ids re-armed, ids woken). All of them, in as many calls as the
        size of their waits takes (:meth:`recheck_waits_part`)."""
        rearmed: list[str] = []
        woken: list[str] = []
        while run_ids:
            more, more_woken, looked = self.recheck_waits_part(run_ids)
            rearmed += more
            woken += more_woken
            run_ids = run_ids[max(1, looked) :]
        return rearmed, woken

    def recheck_waits_part(self, run_ids: list[str]) -> tuple[list[str], list[str], int]:
        """:meth:`recheck_waits` in one call, which looks at the first of ``run_ids``
        only, up to 1 MiB of their waits' JSON (a wait names each awaited child):
        returns (ids re-armed, ids woken, how many of ``run_ids`` it looked at)."""
        if not run_ids:
            return [], [], 0
        args = (self.keys.tag, *run_ids)
        reply = self.run("recheck_waits", (self.keys.timers,), args, retry=True)
        looked = int(reply[2]) if len(reply) > 2 else len(run_ids)
        return [text(x) for x in reply[0]], [text(x) for x in reply[1]], looked

    def send_event(
        self,
        run_id: str,
        event: str,
        payload: bytes,
        max_events: int,
        key: str = "",
        max_bytes: int | None = None,
    ) -> bool:
        """Without an idempotency ``key``, not resent after a network error: a resend
        after a lost reply would store the event twice, so the error is raised. With
        one, resent (the script stores an event of a key it has seen only once)."""
        keys, args = send_event_call(self.keys, run_id, event, payload, max_events, key, max_bytes)
        reply = self.run("send_event", keys, args, retry=bool(key))
        return send_event_reply(reply, run_id, max_events, max_bytes)

    def consume_event(
        self,
        run_id: str,
        token: str,
        step: str,
        event: str,
        record: tuple[bytes, bytes],
        lease_ms: int,
        *,
        progress: bool = False,
    ) -> tuple[int, bytes | None, bytes | None]:
        """Take the first pending ``event`` and record it as ``step``'s output
        (``record``: the step record's JSON before and after the output string).
        Returns (1, payload, record) | (0, None, None) none pending | (-1, None,
        None) lease lost; raises :func:`corrupted` for a damaged record. Resend-safe:
        a resend after a lost reply finds the step recorded and returns that
        record's output (nothing more is consumed). ``progress``: the consumed
        event clears the run's crash count (``Execution.made_progress``)."""
        reply = self.run(
            "consume_event",
            (self.keys.run_steps(run_id),),
            (
                self.keys.tag,
                run_id,
                token,
                step,
                event,
                record[0],
                record[1],
                lease_ms,
                "1" if progress else "",
            ),
            retry=True,
        )
        code = int(reply[0])
        if code == -2:
            raise corrupted(run_id, reply[1])
        if code == 2:
            try:
                stored = decode_step(reply[2])
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise RedflowError(
                    f"run {run_id}: the record of step {step!r} says it succeeded but is "
                    f"unreadable ({exc}); it was not written by redflow-mp"
                ) from None
            payload = (stored.output_json or "null").encode("utf-8")
            return 1, payload, reply[2]
        if code != 1:
            return code, None, None
        return 1, reply[1], reply[2]
