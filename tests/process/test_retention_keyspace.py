"""The keyspace after months at the defaults, in seconds: a real supervisor runs a
mix of what operators do (successes, failures, retries with backoff, a run of
1,200 steps, sleeps, events sent before and after the wait and to finished
runs, cancels of waiting, sleeping, queued and scheduled runs and of a parent
with suspended children, idempotency keys, a cron firing every second,
``run_many`` batches, unknown workflows, a queue nobody serves, a workflow
removed from the code), retention sweeps (``--run-retention 1``: the one
setting shortened), and every key of the prefix must then belong to something
alive (a run not finished or finished within the retention, a workflow still
registered, a queue still listed) or expire on its own."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import text
from tests.process.conftest import Supervisor, wait_until

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

MODULES = ("tests.process.flows_retention",)
RETENTION_S = 1.0
TERMINAL = {b"succeeded", b"failed", b"canceled"}
#: Namespace-wide keys (keys.py), each one key whatever the number of runs.
SINGLETONS = {
    "workflows", "runs:created", "cron:def", "cron:next", "cron:last", "cron:skipped",
    "lock:cron",
    "queues", "parked", "supervisors", "leases", "result-confirm", "runs:unindexed",
    "due-queues", "ready-queues", "timers", "relist", "cascades", "meta",
}  # fmt: skip
#: Families that must expire on their own.
EXPIRING = ("supervisor:", "app-reg:", "qset:", "rate:", "rate-started:", "worker-wake:")
#: Families named by a workflow whose members are run ids.
RUN_SETS = {"workflow-runs:", "wf-running:", "wf-waiting:", "wf-suspended:"}


def _alive(raw: redis.Redis, tag: str, run_id: str, now_ms: int) -> bool:
    status, finished = raw.hmget(f"{tag}:run:{run_id}", "status", "finishedAt")
    if status is None:
        return False
    if status not in TERMINAL:
        return True
    return finished is not None and int(finished) > now_ms - RETENTION_S * 1000 - 3000


def _index_issue(raw: redis.Redis, tag: str, key: str, name: str, kind: str) -> str | None:
    """An index that lists runs whose record is gone."""
    if not (name in ("runs:created", "leases") or name.startswith("runs:status:")):
        return None
    members = raw.zrange(key, 0, -1) if kind == "zset" else []
    gone = [text(m) for m in members if not raw.exists(f"{tag}:run:{text(m)}")]
    return f"lists runs that are gone: {gone[:3]}" if gone else None


def _named_issue(
    raw: redis.Redis, tag: str, key: str, name: str, kind: str, live: tuple[int, set[str], set[str]]
) -> str | None:
    """A key named by a workflow, a run or a queue that is no longer alive."""
    now, workflows, queues = live
    head = name.split(":")[0] + ":"
    if head in ("workflow:", "wf-apps:"):
        return None if name[len(head) :] in workflows else "of a workflow no longer listed"
    if head in RUN_SETS:
        ids = raw.zrange(key, 0, -1) if kind == "zset" else raw.smembers(key)
        dead = [text(i) for i in ids if not _alive(raw, tag, text(i), now)]
        return f"holds runs past retention or gone: {dead[:3]}" if dead else None
    if head == "run:":
        return None if _alive(raw, tag, name.split(":")[1], now) else "of a run past retention"
    if head == "idempo:":
        target = raw.get(key)
        if target is not None and raw.exists(f"{tag}:run:{text(target)}"):
            return None
        return "names a run that is gone"
    if head == "q:":
        return None if name.split(":")[1] in queues else "of a queue no longer listed"
    if head == "app-wfs:":  # an app's registered workflows (the registry duty's index)
        gone = [text(m) for m in raw.smembers(key) if text(m) not in workflows]
        return f"lists workflows no longer listed: {gone[:3]}" if gone else None
    return "unknown family"


def _strays(raw: redis.Redis, tag: str) -> list[str]:
    """Every key of the prefix that belongs to nothing alive, with why."""
    sec, usec = raw.time()
    workflows = {text(m) for m in raw.smembers(f"{tag}:workflows")}
    queues = {text(m) for m in raw.smembers(f"{tag}:queues")}
    live = (sec * 1000 + usec // 1000, workflows, queues)
    out: list[str] = []
    for raw_key in raw.scan_iter(f"{tag}:*", count=1000):
        key = text(raw_key)
        name = key[len(tag) + 1 :]
        kind = text(raw.type(key))
        ttl = raw.pttl(key)
        if name in SINGLETONS or name.startswith("runs:status:"):
            why = _index_issue(raw, tag, key, name, kind)
        elif name.startswith("app-live:"):
            why = None  # one per app, pruned by the app's next sync
        elif name.startswith(EXPIRING):
            why = None if ttl >= 0 else "has no expiry"
        else:
            why = _named_issue(raw, tag, key, name, kind, live)
        if why:
            out.append(f"{key} ({kind}, ttl {ttl}, {raw.memory_usage(key)} B) {why}")
    return sorted(out)


def test_every_key_belongs_to_something_alive_after_retention(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    args = ("--run-retention", str(RETENTION_S))
    sup = supervisor(procs=2, modules=MODULES, args=args)
    sup.wait_workers(2)
    ended = []
    for i in range(20):
        ended.append(client.run_by_name("rk-ok", i))
        ended.append(client.run_by_name("rk-ok", i, idempotency_key=f"k{i}"))
        ended.append(client.run_by_name("rk-fail", i))
    ended += [client.run_by_name("rk-retry", i) for i in range(3)]
    ended.append(client.run_by_name("rk-steps", 1200))
    ended += [client.run_by_name("rk-sleep", 0.5) for _ in range(3)]
    ended += [client.run_by_name("rk-parent", i) for i in range(3)]
    ended += client.run_many_by_name(
        "rk-ok", range(100), idempotency_keys=[f"b{i}" for i in range(100)]
    )
    ended.append(client.run_by_name("rk-gone", 1))
    ended += [client.run_by_name("rk-gate", i) for i in range(10)]
    events = [client.run_by_name("rk-event", 30) for _ in range(4)]
    for h in events[:2]:  # before the wait
        assert client.send_event(h.id, "go", {"early": 1}, idempotency_key="x")
    live = [client.run_by_name("rk-waitparent", i) for i in range(2)]
    sleeper = client.run_by_name("rk-longchild", 9)
    wait_until(lambda: client.get_run(events[3].id).status == "suspended", timeout=30)  # type: ignore[union-attr]
    client.send_event(events[2].id, "go", {"late": 1}, idempotency_key="y")  # after
    events[3].cancel("waiting")
    for h in ended + events:
        with contextlib.suppress(Exception):  # failures and cancels are the point
            h.result(timeout=60)
    for h in events[:2]:  # to finished runs
        assert not client.send_event(h.id, "go", {"late": 1})
    client.run_by_name("rk-ok", 1, run_at=time.time() + 3600).cancel("scheduled")
    client.run_by_name("rk-ok", 1, queue_override="nobody").cancel("queued")
    wait_until(lambda: client.get_run(live[0].id).status == "suspended", timeout=30)  # type: ignore[union-attr]
    live[0].cancel("parent with suspended children")
    sleeper.cancel("sleeping")
    # a deploy without rk-gone (its queue no longer served), past the 30 s grace
    sup.send(signal.SIGTERM)
    assert sup.wait(60) == 0
    sup = supervisor(procs=2, modules=MODULES, args=args, env={"RK_GONE": "1"})
    sup.wait_workers(2)
    tag = client.keys.tag
    swept = [h.id for h in ended + events]
    wait_until(
        lambda: not any(raw.exists(f"{tag}:run:{run_id}") for run_id in swept),
        timeout=30,
        interval=0.2,
        message="the finished runs swept",
    )
    left: list[str] = []

    def clean() -> bool:
        left[:] = _strays(raw, tag)
        return not left

    try:
        wait_until(clean, timeout=30, interval=0.5, message="a keyspace of live things")
    except AssertionError:
        raise AssertionError("keys that belong to nothing alive:\n" + "\n".join(left)) from None
