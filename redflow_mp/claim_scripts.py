"""The worker's claim (``claim_run``: the finish of its last run and the claim
of the next in one call), mixed into :class:`~redflow_mp.scripts.Scripts`.

A claim naming its queues (up to ``MANY_QUEUES``, or one run by id) on a
transport with no durability wait is sent packed ahead (``packed.py``): the
same bytes as ``hiredis.pack_command`` of the whole call, its constant part
packed once. Every other claim (a registered queue list, a finish only, a WAIT
to add) is packed whole by hiredis (``_claim_run``, as ``Scripts.run``). Both
take the same way after a refusal (``recover``: a script the server lost is sent
again) and neither resends by itself: a claim whose reply was lost is resent by
the worker with the resend flag (``lostclaim.py``). So neither checks its
connection first either (``fresh=False``: no ``Wire.freshen``, a ``poll``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from .claimed import Claimed, Finish
from .claimed import claimed_from_reply as _claimed
from .codec import text
from .keys import Keys
from .options import shown_run_id
from .packed import PackedClaims
from .queueset import MANY_QUEUES, SCAN_CHUNK, QueueLists, build_list, scan_list
from .transport import Transport

__all__ = ["ClaimCalls"]

T = TypeVar("T")

#: claim_run's ARGV[10] by woken + 2 * resend (the script's flags).
_FLAGS = ("", "1", "2", "3")

log = logging.getLogger("redflow_mp.scripts")


class ClaimCalls:
    """``claim``; needs the host's state and ``run``, ``drive``, ``recover`` (see Scripts)."""

    keys: Keys
    _tag: str
    _t: Transport
    _sources: dict[str, str] | None
    _shas: dict[str, str]
    _functions: dict[str, str] | None
    _lists: QueueLists
    _packed: PackedClaims

    def _load(self) -> None:
        raise NotImplementedError

    def run(
        self,
        name: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        *,
        retry: bool,
        fresh: bool = True,
    ) -> Any:
        raise NotImplementedError

    def drive(
        self, plan: Generator[tuple[Any, ...], Any, T], *, retry: bool, fresh: bool = True
    ) -> T:
        raise NotImplementedError

    def recover(
        self, name: str, keys: tuple[str, ...], args: tuple[Any, ...], exc: ResponseError
    ) -> Generator[tuple[Any, ...], Any, Any]:
        raise NotImplementedError

    def claim(
        self,
        queues: tuple[str, ...],
        lease_ms: int,
        token: str,
        finish: Finish | tuple[str, str, str, bytes | str, int] | None = None,
        only_id: str = "",
        woken: bool = False,
        turn: int = 0,
        scan: bool = False,
        resend: bool = False,
    ) -> tuple[str, Claimed | None]:
        """Apply ``finish`` (a :class:`Finish`, or the same five values) if given, then claim.

        ``token`` empty means finish only. Returns the finish result ('' when
        nothing was finished, 'lease-lost', or the new status) and the claimed run.
        Ties go to the queue at position ``turn``, then to the ones after it. Past
        MANY_QUEUES queues the list is registered in Redis (queueset.py); ``scan``
        reads every queue's head (the safety net of an idle worker). ``resend``:
        the last claim with this ``token`` got no reply (a network error after it
        was sent): the run it took, if it took one, is answered again (and leased
        again) instead of another; it would otherwise wait a lease for the reaper.
        """
        sent = time.monotonic()
        flags = woken + 2 * resend
        reply = None
        if token and self._t.plain and (only_id or len(queues) <= MANY_QUEUES):
            reply = self._claim_packed(queues, lease_ms, token, finish, only_id, turn, flags)
        if reply is None:
            reply = self._claim_call(queues, lease_ms, token, finish, only_id, turn, scan, flags)
        claimed = _claimed(reply[1], token)
        for dropped in reply[2] if len(reply) > 2 else ():
            queue, _, run_id = text(dropped).rpartition(" ")
            why = "has no run record (removed by hand or lost); dropped it"
            # cut: a neighbour's 3 MB member made a 3 MB log line
            log.warning(
                "run id %s in the ready list of queue %r %s", shown_run_id(run_id), queue, why
            )
        if claimed is not None:
            # The lease was granted after `sent`: it holds at least until sent + lease.
            claimed.lease_until = sent + lease_ms / 1000.0
        return text(reply[0]), claimed

    def _claim_packed(
        self,
        queues: tuple[str, ...],
        lease_ms: int,
        token: str,
        finish: tuple[Any, ...] | None,
        only_id: str,
        turn: int,
        flags: int,
    ) -> Any:
        """:meth:`_claim_call`'s reply for a claim naming its queues, packed ahead
        (``packed.py``: the same bytes) on a plain transport; None when a value
        must be packed by hiredis. A refusal goes to :meth:`recover` as in :meth:`run`."""
        if self._sources is None:
            self._load()
        f = self._functions
        head = ("EVALSHA", self._shas["claim_run"]) if f is None else ("FCALL", f["claim_run"])
        n = len(queues)
        i = turn % n if n and not only_id else 0  # the rotation of QueueLists.args
        packed = self._packed.pack(
            head, self.keys, self._tag, lease_ms, queues, i, token, finish, only_id, flags
        )
        if packed is None:
            return None
        try:
            return self._t.call_packed(packed, retry=False, fresh=False)
        except ResponseError as exc:
            keys = (self.keys.q_ready(queues[0]) if queues else self.keys.queues,)
            fargs = ("", "", "", "", 0) if finish is None else finish
            args = (self._tag, lease_ms, token, *fargs, only_id, _FLAGS[flags], n)
            args += (*queues[i:], *queues[:i])
            return self.drive(self.recover("claim_run", keys, args, exc), retry=False)

    def _claim_call(
        self,
        queues: tuple[str, ...],
        lease_ms: int,
        token: str,
        finish: tuple[Any, ...] | None,
        only_id: str,
        turn: int,
        scan: bool,
        flags: int,
    ) -> Any:
        """The reply of :meth:`claim`'s call(s) of ``claim_run``, packed by hiredis."""
        fargs: tuple[Any, ...] = ("", "", "", "", 0) if finish is None else finish
        keys = (self.keys.q_ready(queues[0]) if queues else self.keys.queues,)
        args = (self._tag, lease_ms, token, *fargs, only_id, _FLAGS[flags])
        if not token:  # a finish only: no queue is read
            return self._claim_run(keys, (*args, 0))
        if only_id or (not turn and len(queues) <= MANY_QUEUES):
            return self._claim_run(keys, (*args, len(queues), *queues))
        lists, long = self._lists, len(queues) > SCAN_CHUNK
        qset = self.keys.qset(lists.name_of(queues)) if long else ""
        if long and lists.scan_due(scan):  # in bounded calls, not by the claim
            if not scan_list(self.run, qset, self._tag):
                build_list(self.run, qset, self._tag, queues)
            scan = False
        qargs = lists.args(queues, turn, scan)
        reply = self._claim_run(keys, (*args, *qargs))
        if isinstance(reply[1], bytes | str):  # 'register': the list is gone: send it
            if long:
                build_list(self.run, qset, self._tag, queues)
            named = lists.args(queues, turn, False) if long else lists.register(queues, turn)
            args = (*args[:3], "", "", "", "", 0, *args[8:], *named)  # (finish applied)
            more = self._claim_run(keys, args)
            if isinstance(more[1], bytes | str):  # gone again at once: no claim this time
                more = [more[0], [], *more[2:]]
            # (dropped entries: a third element, left out when there are none)
            dropped = [*(reply[2] if len(reply) > 2 else ()), *(more[2] if len(more) > 2 else ())]
            reply = [reply[0], more[1], dropped]
        return reply

    def _claim_run(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """``claim_run`` sent once, without the readability check of a command sent
        once (``fresh=False``): a claim whose reply was lost is resent by the worker
        (``lostclaim.py``), so the check (a ``poll``, about 3.7 us) bought nothing on
        the hot path."""
        return self.run("claim_run", keys, args, retry=False, fresh=False)
