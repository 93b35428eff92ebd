"""The lease backstop: the parent extends the leases of the runs every live child
holds (SPEC §4), and acts on cancellations a handler ignores.

A child's own heartbeat thread cannot run while its handler holds the GIL in C
code; without the backstop such a run would be taken for dead and executed
twice. A child being aborted (timeout, ignored cancellation) keeps its leases
until it is gone: it may be stuck far past the TERM that kill_grace follows,
and a lease that lapsed then would let another child start the same attempt
while this one still runs. The renewal itself is the library's
(:func:`redflow_mp.recovery.renew_leases`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from redflow_mp.client import Client
from redflow_mp.recovery import HeldRun, renew_leases

from ..board import AbortReason, Board, Held
from ..children import Child

__all__ = ["BackstopDuty"]

Abort = Callable[[Child, AbortReason, Held, tuple[Held, ...], float], None]


class BackstopDuty:
    name = "backstop"

    def __init__(
        self,
        client: Client,
        board: Board,
        children: Callable[[], Iterable[Child]],
        lease_ms: int,
        cancel_grace: float,
        abort: Abort,
    ) -> None:
        self.client = client
        self.board = board
        self.children = children
        self.lease_ms = lease_ms
        self.cancel_grace = cancel_grace
        self.abort = abort

    def tick(self, now: float) -> float:
        held: list[HeldRun] = []
        owners: list[tuple[Child, Held, tuple[Held, ...]]] = []
        for child in self.children():
            entry = self.board.read(child.index)
            for h in entry.held:
                held.append(HeldRun(h.run_id, h.token))
                owners.append((child, h, entry.held))
            if child.cancel_seen:  # forget runs it let go of (a resumed run starts afresh)
                ids = {h.run_id for h in entry.held}
                for run_id in [r for r in child.cancel_seen if r not in ids]:
                    del child.cancel_seen[run_id]
        states = renew_leases(self.client, self.lease_ms, held) if held else []
        for (child, h, stack), state in zip(owners, states, strict=True):
            if not state.kept or not state.cancel or child.abort is not None or h.finishing:
                continue
            seen = child.cancel_seen.setdefault(h.run_id, now)
            if now - seen >= self.cancel_grace:
                self.abort(child, AbortReason.CANCEL, h, stack, now)
        return now + self.lease_ms / 3000.0
