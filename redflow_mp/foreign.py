"""Runs of a workflow a worker does not load while a running supervisor does.

Two code versions on one queue (a rolling deploy that adds a workflow on a
queue the old code serves too, two apps sharing a queue): the worker puts such
a run back for about :data:`DEFER_MS` (:func:`defer_ms`; ``finalize_run`` mode ``defer``: no attempt
spent) instead of failing it, so a worker that has the code gets it; with no
running supervisor that loads the workflow the run fails with
``UnknownWorkflowError`` as before. Each worker says so once a minute per
workflow (a supervisor that loads the workflow but does not serve the run's
queue would leave it bouncing).
"""

from __future__ import annotations

import logging
import random
import time

from .errors import TRANSIENT_ERRORS
from .runs import Runs
from .sync import loaded_live

__all__ = ["DEFER_MS", "defer_ms", "served_elsewhere"]

log = logging.getLogger(__name__)

#: How long, on average, a run put back this way waits before it is claimed again.
DEFER_MS = 1000


def defer_ms() -> int:
    """One put-back's delay: :data:`DEFER_MS`, drawn from half to one and a half
    of it. A fixed 1 s locked the worker that put the run back onto it: its own
    idle wait (``block_timeout``, 1 s) ended with the run coming due, so it sat
    ahead of the other workers in the bell's queue of blocked clients at every
    promotion and claimed the run again, second after second (seen: one old-code
    worker put one run back 60 times while a supervisor loading its workflow
    waited). Drawn, the delay gives every waiting worker its turn."""
    return random.randint(DEFER_MS // 2, DEFER_MS * 3 // 2)


#: Seconds between two log lines of one worker process about one workflow.
SAY_EVERY_S = 60.0


def served_elsewhere(runs: Runs, workflow: str, said: dict[str, float]) -> bool:
    """Whether a run of ``workflow`` (not loaded here) should be put back; ``said``:
    the caller's next time to log about each workflow (a worker's own)."""
    try:
        live = loaded_live(runs, workflow)
    except TRANSIENT_ERRORS:
        return True  # unknown: put it back rather than fail it
    now = time.monotonic()
    if live and now >= said.get(workflow, 0.0):
        if len(said) > 1000:
            said.clear()
        said[workflow] = now + SAY_EVERY_S
        log.info(
            "runs of workflow %r are put back for about %d ms each: this worker does not load "
            "it, a running supervisor does (a rolling deploy? if none of them serves the "
            "run's queue, the run keeps coming back)",
            workflow,
            DEFER_MS,
        )
    return live
