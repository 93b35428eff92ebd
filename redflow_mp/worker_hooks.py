"""What a host process (the supervisor child) learns from its worker
(:class:`WorkerHooks`), and the hooks of a worker with no host (:class:`NoHooks`)."""

from __future__ import annotations

from typing import Protocol

from .claimed import Claimed

__all__ = ["NoHooks", "WorkerHooks"]


class WorkerHooks(Protocol):
    """What a host process (the supervisor child) learns from its worker."""

    def claiming(self, token: str) -> None:
        """A claim with lease ``token`` is about to be sent ("": none in flight)."""

    def started(self, run: Claimed, timeout: float | None) -> None:
        """``run`` is now executing (again after a wait that held at once: each
        execution gets its own ``timeout``). It is now on the host's books, so
        the claim token is no longer needed."""

    def finishing(self, run: Claimed) -> None:
        """``run``'s handler ended; its end is being written (riding on the next
        claim, or by a call of its own: a finish, put-back or suspension)."""

    def finished(self, run: Claimed) -> None:
        """``run`` is no longer held here: its outcome was written (or it was lost)."""

    def should_stop(self) -> bool:
        """True when the worker should stop claiming (recycling, shutdown)."""

    def failure_hook(self, running: bool) -> None:
        """``on_failure`` of a run written as failed (off the books) starts/ended:
        a host may bound the hook's time (a supervisor replaces a stuck child)."""


class NoHooks:
    """The hooks of a worker with no host: nothing to tell."""

    def claiming(self, token: str) -> None:
        pass

    def started(self, run: Claimed, timeout: float | None) -> None:
        pass

    def finishing(self, run: Claimed) -> None:
        pass

    def finished(self, run: Claimed) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def failure_hook(self, running: bool) -> None:
        pass
