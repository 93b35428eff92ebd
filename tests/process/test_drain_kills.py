"""Children SIGKILLed at random points of a fast drain (default settings): the
kill lands anywhere in the worker's cycle, in the one script call that carries
the finish of run N and the claim of run N+1 (``claim_run.lua``), between its
reply and the board, in the handler, or between the handler's return and that
call. No run may be lost, and a run is executed again only when a kill ended
an execution of it before its finish reached Redis (at-least-once: the run the
killed child held, put back charged a crash); a run whose finish is in Redis
is never executed again."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import psutil
import pytest
import redis

from redflow_mp import Client
from tests.helpers import text
from tests.process.conftest import Supervisor

pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]

RUNS = 6000
KILLS = 25


def test_children_sigkilled_at_random_points_of_a_drain_lose_no_run_and_rerun_only_held_ones(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    from tests.process import flows_drain

    tag = client.keys.tag
    handles = flows_drain.drain_ledger.run_many([None] * RUNS, client=client)
    ids = [h.id for h in handles]
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    sup = supervisor(procs=2, modules=("tests.process.flows_drain",))
    sup.wait_workers(2)
    done_key = client.keys.runs_status("succeeded")
    kills, done = 0, 0
    while kills < KILLS and done < RUNS:
        # After a kill, the run put back (at the head of the queue) is taken again
        # at once: kills spaced by 50 runs done do not hit one run max_run_crashes
        # times (then failed as a poison pill, as it should be).
        while (now := raw.zcard(done_key)) < min(RUNS, done + 50):
            time.sleep(0.002)
        done = now
        time.sleep(rng.uniform(0.0, 0.02))  # a random point of some run's cycle
        workers = sup.workers()
        if not workers:
            continue
        try:
            rng.choice(workers).send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue
        kills += 1
    why = f"seed {seed}, {kills} kills\n{sup.log()[-3000:]}"
    deadline = time.monotonic() + 120
    while raw.zcard(done_key) < RUNS and time.monotonic() < deadline:
        time.sleep(0.05)
    statuses = ("queued", "running", "succeeded", "failed")
    counts = {s: raw.zcard(client.keys.runs_status(s)) for s in statuses}
    assert counts["succeeded"] == RUNS, f"{counts} {why}"
    assert kills >= 10, f"the drain ended after {kills} kills: {why}"
    execs = {text(k): int(v) for k, v in raw.hgetall(f"{tag}:execs").items()}
    missing = [i for i in ids if i not in execs]
    assert not missing, f"{len(missing)} runs never executed ({missing[:3]}): {why}"
    pipe = raw.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(client.keys.run(i), "status", "crashCount")
    fields = dict(zip(ids, pipe.execute(), strict=True))
    not_done = {i: f[0] for i, f in fields.items() if f[0] != b"succeeded"}
    assert not not_done, f"runs not succeeded: {list(not_done.items())[:3]}: {why}"
    again = {i: n for i, n in execs.items() if n > 1}
    # Executed again only after a kill ended an execution of it (charged a crash),
    # at most once per kill: never a run whose finish was in Redis already.
    uncharged = {i: n for i, n in again.items() if int(fields[i][1] or 0) < n - 1}
    assert not uncharged, f"runs executed again without a crash: {uncharged}: {why}"
    assert sum(n - 1 for n in again.values()) <= kills, (again, why)
