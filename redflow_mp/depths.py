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
running before (:class:`~redflow_mp.admin.RunQueues`).

The running runs per queue (the ``processing`` depth) are read from
``runs:status:running`` a page of :data:`RUNNING_PAGE` ids a call, in index
order, where the call before stopped (:class:`RunningSweep`): the whole index
in one ``ZRANGE`` cost 12.7 ms of Redis at every scrape at 200,000 running
runs. With up to :data:`RUNNING_PAGE` runs running a call reads them all and
the counts are exact at every call; past that, a pass over the index takes
several calls, and ``processing`` is the counts of the last whole pass (of the
pass so far until the first one ends: a lower bound). Every other count is
exact at every call.

A key of another type (written by hand or by another program) leaves out its
own value only, as :func:`~redflow_mp.admin.queue_stats` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from .admin import QueueStats, RunQueues, read_unseen
from .codec import RunStatus, text
from .queries import shard_views
from .running_sweep import RUNNING_PAGE, RunningSweep

__all__ = ["CHUNK_KEYS", "RUNNING_PAGE", "Depths", "RunningSweep", "read_depths"]

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
        sweep = remembered.sweeps.setdefault(k.tag, RunningSweep())
        paging = sweep.read(pipe, k.runs_status(RunStatus.RUNNING))
        for args in calls:
            pipe.execute_command(*scripts.command("count_depths", (), args))
        replies: list[Any] = pipe.execute(raise_on_error=False)
    known, suspended, page, tail = replies[:4]
    top = replies[4] if paging == 3 else None
    replies = [*replies[:4], *replies[2 + paging :]]
    if not isinstance(known, Exception):
        out.queues_known = (out.queues_known or 0) + int(known)
    else:
        log.debug("redflow_queues_known unavailable: %s", known)
    if not isinstance(suspended, Exception):
        out.suspended = (out.suspended or 0) + int(suspended)
    else:
        log.debug("redflow_runs_suspended unavailable: %s", suspended)
    counts: list[int] = []
    for args, reply in zip(calls, replies[4:], strict=True):
        if isinstance(reply, ResponseError):
            # The script or function library lost (a restart, SCRIPT/FUNCTION FLUSH):
            # run() loads it again; any other refusal raises from there.
            reply = scripts.run("count_depths", (), args, retry=True)
        elif isinstance(reply, Exception):
            raise reply  # the connection's (keys of another type answer -1)
        counts.extend(int(x) for x in reply)
    ids = [] if isinstance(page, Exception) else [text(x) for x in page]
    in_flight = _in_flight(
        r,
        k,
        ids,
        None if isinstance(tail, Exception) else tail,
        None if isinstance(top, Exception) else top,
        remembered,
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


def _in_flight(
    r: Any, k: Any, ids: list[str], tail: Any, top: Any, remembered: RunQueues
) -> dict[str, int]:
    """Running runs per queue (:class:`RunningSweep`): the queue of each of ``ids``
    (a page of the index) is read (one HGET each, in one round trip) only for
    the ids ``remembered`` does not hold."""
    seen = remembered.of(k.tag)
    read_unseen(r, k, ids, seen, "queue")
    sweep: RunningSweep = remembered.sweeps[k.tag]
    return sweep.add(ids, tail, seen, top)
