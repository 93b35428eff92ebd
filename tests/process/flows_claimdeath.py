"""A worker that dies in the narrowest window there is: after Redis handed it a
run (the claim's reply) and before it published that run on the status board.

The module patches the child's board hook, so the first attempt of every
`claim-death` run SIGKILLs its own worker exactly there; the arbiter must still
find the run (by the claim token the child published before claiming) and put it
back at once, without waiting for the 30 s lease to expire.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client
from redflow_mp.child import _Hooks
from redflow_mp.scripts import Claimed

_publish = _Hooks.started


def _die_before_publishing(self: _Hooks, run: Claimed, timeout: float | None) -> None:
    if run.workflow == "claim-death":
        marker = os.path.join(os.environ["CLAIM_DEATH_DIR"], run.id)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    _publish(self, run, timeout)


_Hooks.started = _die_before_publishing  # type: ignore[method-assign]


@define_workflow("claim-death", queue="cd", max_concurrency=10)
def claim_death(ctx: Context[Any]) -> int:
    client = get_default_client()
    assert client is not None
    return int(client.redis.incr(f"{client.keys.tag}:ledger:{ctx.run.id}"))
