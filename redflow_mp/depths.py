"""The counts behind a supervisor's ``/metrics`` gauges, read in a bounded
number of commands whatever the number of queues and workflows.

A scrape runs inside the arbiter's single-threaded loop, so its cost is time
the loop does not reap children, renew leases or run its duties. Reading each
queue's ready and scheduled sets and each workflow's running set one command
at a time cost 25,005 commands for 5,000 queues and 5,000 workflows (about
1.1 s of the loop, nearly all of it the client encoding and decoding the
commands). :func:`read_depths` sends, per shard, one pipeline (one round trip)
of a handful of commands and one ``count_depths`` script call per chunk of
names (:data:`CHUNK_KEYS` keys a call: Redis is held well under a millisecond
by each), then one more round trip for the queues of runs it had not seen
running before (:class:`~redflow_mp.admin.RunQueues`). Every count is exact:
nothing is cached between calls but those queues, which never change.

A key of another type (written by hand or by another program) leaves out its
own value only, as :func:`~redflow_mp.admin.queue_stats` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from .admin import QueueStats, RunQueues
from .codec import RunStatus, text
from .queries import shard_views

__all__ = ["CHUNK_KEYS", "Depths", "read_depths"]

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder().encode

#: Keys one ``count_depths`` call reads at most (a queue is two, a workflow one).
CHUNK_KEYS = 1000


class Depths(msgspec.Struct, kw_only=True):
    """What the gauges show; None where a key of another type hid the value."""

    queues_known: int | None = None
    suspended: int | None = None
    #: The depths of the queues asked for, by name (a queue whose ready set is of
    #: another type is left out).
    queues: dict[str, QueueStats] = msgspec.field(default_factory=dict)
    #: Running runs per workflow asked for (left out: a running set of another type).
    running: dict[str, int] = msgspec.field(default_factory=dict)


def _calls(tag: str, queues: list[str], workflows: list[str]) -> list[tuple[Any, ...]]:
    """The ``count_depths`` arguments of each chunk: queues first, then workflows,
    each chunk's names as one JSON array (one argument to pack, not one a name)."""
    per_queue = CHUNK_KEYS // 2
    out: list[tuple[Any, ...]] = [
        (tag, _json(queues[i : i + per_queue]), b"[]") for i in range(0, len(queues), per_queue)
    ]
    out += [
        (tag, b"[]", _json(workflows[i : i + CHUNK_KEYS]))
        for i in range(0, len(workflows), CHUNK_KEYS)
    ]
    return out


def read_depths(
    client: Any,
    queues: Sequence[str],
    workflows: Sequence[str],
    remembered: RunQueues | None = None,
) -> Depths:
    """The known queues' count, the suspended runs, the depths of ``queues``
    and the running runs of each of ``workflows``, added up over the shards.

    Raises what the connection raises (a transient error: the caller leaves the
    gauges out of that scrape); a reply of another type costs its value only.
    """
    out = Depths(running=dict.fromkeys(workflows, 0))
    hidden: set[str] = set()  # workflows whose running set is of another type in a shard
    queue_names = sorted(set(queues))
    for view in shard_views(client):
        _read_shard(view, queue_names, list(out.running), remembered or RunQueues(), out, hidden)
    for name in hidden:
        out.running.pop(name, None)
    return out


def _read_shard(
    view: Any,
    queues: list[str],
    workflows: list[str],
    remembered: RunQueues,
    out: Depths,
    hidden: set[str],
) -> None:
    r, k, scripts = view.redis, view.keys, view.scripts
    scripts.ensure_loaded()
    calls = _calls(k.tag, queues, workflows)
    with r.pipeline(transaction=False) as pipe:
        pipe.scard(k.queues)
        pipe.zcard(k.runs_status(RunStatus.SUSPENDED))
        pipe.zrange(k.runs_status(RunStatus.RUNNING), 0, -1)
        for args in calls:
            pipe.execute_command(*scripts.command("count_depths", (), args))
        replies: list[Any] = pipe.execute(raise_on_error=False)
    known, suspended, running_ids = replies[:3]
    if not isinstance(known, Exception):
        out.queues_known = (out.queues_known or 0) + int(known)
    else:
        log.debug("redflow_queues_known unavailable: %s", known)
    if not isinstance(suspended, Exception):
        out.suspended = (out.suspended or 0) + int(suspended)
    else:
        log.debug("redflow_runs_suspended unavailable: %s", suspended)
    counts: list[int] = []
    for args, reply in zip(calls, replies[3:], strict=True):
        if isinstance(reply, ResponseError):
            # The script or function library lost (a restart, SCRIPT/FUNCTION FLUSH):
            # run() loads it again; any other refusal raises from there.
            reply = scripts.run("count_depths", (), args, retry=True)
        elif isinstance(reply, Exception):
            raise reply  # the connection's (keys of another type answer -1)
        counts.extend(int(x) for x in reply)
    in_flight = _in_flight(
        r, k, [] if isinstance(running_ids, Exception) else running_ids, remembered
    )
    for i, name in enumerate(queues):
        ready, scheduled = counts[2 * i], counts[2 * i + 1]
        if ready < 0:
            continue  # a ready set of another type: this shard's part is not shown
        have = out.queues.get(name)
        if have is None:
            have = out.queues[name] = QueueStats(name=name, ready=0, processing=0, scheduled=0)
        have.ready += ready
        have.scheduled += max(scheduled, 0)
        have.processing += in_flight.get(name, 0)
    for name, n in zip(workflows, counts[2 * len(queues) :], strict=True):
        if n < 0:
            hidden.add(name)
        else:
            out.running[name] += n


def _in_flight(r: Any, k: Any, running_ids: list[Any], remembered: RunQueues) -> dict[str, int]:
    """Running runs per queue: the queue of each id in ``running_ids``, read (one
    HGET each, in one round trip) only for the ids ``remembered`` does not hold."""
    seen = remembered.of(k.tag)
    running = [text(x) for x in running_ids]
    unseen = [run_id for run_id in running if run_id not in seen]
    if unseen:
        with r.pipeline(transaction=False) as pipe:
            for run_id in unseen:
                pipe.hget(k.run(run_id), "queue")
            got: list[Any] = pipe.execute(raise_on_error=False)
        for run_id, queue in zip(unseen, got, strict=True):
            if queue is not None and not isinstance(queue, Exception):
                seen[run_id] = text(queue)
    return RunQueues.per_queue(seen, running)
