"""The arbiter's periodic duties. Each exposes ``tick(now) -> next_due`` (monotonic
seconds) and calls :mod:`redflow_mp.maintenance`, so all Redis semantics stay in
the library. The arbiter catches their errors (a Redis outage must never stop
the arbiter) and retries them a second later.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Duty"]


class Duty(Protocol):
    name: str

    def tick(self, now: float) -> float:
        """Do the work that is due; return when to be called next (monotonic)."""
