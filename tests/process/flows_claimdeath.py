"""Workers that die in the narrowest windows there are.

* `claim-death`: after Redis handed the worker a run (the claim's reply) and
  before it published that run on the status board. The arbiter must still find
  the run, by the claim token the child published before claiming.
* `finish-death`: after the handler returned and before the script call that
  carries its finish reached Redis. The run must still be on the board.

The module patches the child's board hooks so that the first attempt of each
such run SIGKILLs its own worker exactly there; either way the run must go back
at once, without waiting for the 30 s lease to expire.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client
from redflow_mp.scripts import Claimed
from redflow_supervisor.child import _Hooks

_publish = _Hooks.started
_finishing = _Hooks.finishing


def _die_once(run: Claimed, workflow: str) -> None:
    if run.workflow == workflow:
        marker = os.path.join(os.environ["CLAIM_DEATH_DIR"], run.id)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def _die_before_publishing(self: _Hooks, run: Claimed, timeout: float | None) -> None:
    _die_once(run, "claim-death")
    _publish(self, run, timeout)


def _die_before_the_finish_is_sent(self: _Hooks, run: Claimed) -> None:
    _finishing(self, run)
    _die_once(run, "finish-death")


_Hooks.started = _die_before_publishing  # type: ignore[method-assign]
_Hooks.finishing = _die_before_the_finish_is_sent  # type: ignore[method-assign]


@define_workflow("claim-death", queue="cd", max_concurrency=10)
def claim_death(ctx: Context[Any]) -> int:
    client = get_default_client()
    assert client is not None
    return int(client.redis.incr(f"{client.keys.tag}:ledger:{ctx.run.id}"))


@define_workflow("finish-death", queue="cd", max_concurrency=10)
def finish_death(ctx: Context[Any]) -> int:
    client = get_default_client()
    assert client is not None
    return int(client.redis.incr(f"{client.keys.tag}:ledger:{ctx.run.id}"))
