"""Runs of a workflow a worker does not load while a running supervisor does.

Two code versions on one queue (a rolling deploy that adds a workflow on a
queue the old code serves too, two apps sharing a queue): the worker puts such
a run back for about :data:`DEFER_MS` (:func:`defer_ms`; ``finalize_run`` mode ``defer``: no attempt
spent) instead of failing it, so a worker that has the code gets it; with no
running supervisor that loads the workflow the run fails with
``UnknownWorkflowError`` as before. Each worker says so once a minute per
workflow (a supervisor that loads the workflow but does not serve the run's
queue would leave it bouncing).

After Redis came back empty, a client's ``run_by_name`` that found no metadata
put the run on ``default`` (``queueFallback``); the supervisor of its app moves
it to its queue once it has written its registration again (adopt_runs.lua).
Until then no live registration names the workflow, and a worker of another app
that serves ``default`` failed the run first. :func:`held_after_loss` puts such a
run back too, but only while the loss is fresh: the run's shard holds the
``registry-lost`` marker (written for :data:`LOST_MARKER_MS` by a supervisor that
found registrations gone, supervisor/duties/registry.py) or the metadata of a
workflow of this worker homed on the run's shard, which Redis held when the
worker started, is gone (its
supervisor has not written it again yet; a worker whose workflows were never
synced has no such workflow: only the marker counts), and the
run is younger than :data:`HOLD_WINDOW_MS` (Redis time): a marker written by
a hostile neighbour for ever holds a run that long at most, then it fails with
``UnknownWorkflowError`` as before. Outside that window a mistyped name fails at
once (SPEC §4). A hold is a ``defer`` like the one above: no attempt spent, about
:data:`DEFER_MS` before the run is claimed again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping

import redis

from .claimed import Claimed
from .errors import TRANSIENT_ERRORS
from .runs import Runs
from .sync import loaded_live

__all__ = [
    "DEFER_MS",
    "HOLD_WINDOW_MS",
    "LOST_MARKER_MS",
    "defer_ms",
    "held_after_loss",
    "served_elsewhere",
]

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


#: How long the ``registry-lost`` marker lives after a supervisor found the loss.
LOST_MARKER_MS = 120_000
#: The oldest a ``queueFallback`` run of an unknown workflow is put back (Redis time).
HOLD_WINDOW_MS = 120_000

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


def held_after_loss(
    runs: Runs, claimed: Claimed, own: Mapping[int, str], said: dict[str, float]
) -> bool:
    """Whether ``claimed`` (a run of a workflow not loaded here, which no live
    registration names) should be put back rather than failed: it went to
    ``default`` for want of metadata (``queueFallback``), it is younger than
    :data:`HOLD_WINDOW_MS`, and its shard says registrations were lost (the
    ``registry-lost`` marker) or the workflow ``own`` names for that shard (by
    shard index: a workflow this worker loads, homed there, whose metadata Redis
    held when it started; none: only the marker counts) has none now: with
    ``shards > 1`` only the shard that restarted empty lost it. ``said``: the
    caller's log times, as :func:`served_elsewhere`. A few reads on the run's
    shard, only on this rare path."""
    shard = runs.shard_of_run(claimed.id)
    try:
        with shard.redis.pipeline(transaction=False) as pipe:
            pipe.hget(shard.keys.run(claimed.id), "queueFallback")
            pipe.exists(shard.keys.registry_lost)
            pipe.time()
            fallback, marked, (sec, usec) = pipe.execute()
        if fallback != b"1":
            return False  # not enqueued in a gap: an unknown workflow fails at once
        age = int(sec) * 1000 + int(usec) // 1000 - claimed.created_at
        if age > HOLD_WINDOW_MS:
            return False  # held long enough (a marker for ever holds no run for ever)
        why = "Redis lost the registrations (a supervisor said so)" if marked else ""
        mine = own.get(shard.index)
        if not why and mine is not None and not shard.redis.exists(shard.keys.workflow(mine)):
            why = "this worker's own workflow metadata is gone from Redis too"
    except redis.ResponseError:  # a key of another type: nothing known, the usual failure
        return False
    except TRANSIENT_ERRORS:
        return True  # unknown: put it back rather than fail it (as served_elsewhere)
    now = time.monotonic()
    if why and now >= said.get(":lost:" + claimed.workflow, 0.0):
        if len(said) > 1000:
            said.clear()
        said[":lost:" + claimed.workflow] = now + SAY_EVERY_S
        log.warning(
            "runs of workflow %r (not loaded here) enqueued on 'default' while Redis had "
            "no metadata for it are put back, not failed, for up to %d s after they were "
            "enqueued: %s; its app's supervisor moves them to their queue once it has "
            "written its registration again",
            claimed.workflow,
            HOLD_WINDOW_MS // 1000,
            why,
        )
    return bool(why)
