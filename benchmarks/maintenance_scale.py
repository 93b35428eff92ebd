"""The maintenance duties at scale: how long one script call blocks Redis, and
whether retention keeps up, with the supervisor's default settings.

``python -m benchmarks.maintenance_scale [--runs 1000000] [--scheduled 1000000]
[--leases 100000] [--steady 60] [--rate 5000] [--sweepers N]
[--only sweep,steady,promote,reap,lists]``

Against a private redis-server (``benchmarks.redis_server``):

- ``sweep``: ``--runs`` finished runs, all past the retention at once (the
  operator shortened ``run_retention``), swept by the :class:`RetentionDuty` as
  the arbiter ticks it. Reports the longest single call (``SLOWLOG``, every call
  over 1 ms kept), the mean (``INFO commandstats``), the time to clear the
  backlog, and the keys left over (``SCAN``): nothing of a swept run may stay.
- ``steady``: runs become eligible at ``--rate`` a second for ``--steady``
  seconds while the duty ticks on the clock: the backlog must stay bounded.
- ``--sweepers N``: N retention duties sweeping ``--runs`` at once (every
  supervisor sweeping, as before only the leader did): Redis's busy share.
- ``lists``: only the ``list_runs`` filters of ``sweep`` (also printed there).
- ``promote``: ``--scheduled`` due scheduled runs promoted by the promoter duty.
- ``reap``: ``--leases`` expired leases reaped by the reaper duty.
- ``relist``: the relist sweep (``relist_runs.lua``) over ``--runs`` finished
  runs and 10,000 queued ones whose ready set was deleted: one whole pass
  called back to back, then a pass with nothing to put back; the cost of one
  page (SLOWLOG, commandstats) and the time a pass takes at the duty's pace.

The finished runs are clones of one run that really ran (enqueued with an
idempotency key, one step, executed by a worker): a Lua loop copies its hash
(with its own id and idempotency key), steps and attempts, and adds it to the
same indexes as ``finalize`` (runs:created, workflow-runs, runs:status,
the idempotency key with its expiry). Scheduled runs are enqueued by
``run_many`` (``enqueue_runs.lua``) with a due time a moment ahead; leases are
taken by ``claim_run.lua`` with a 1 ms lease.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.redis_server import RedisServer
from redflow_mp import Client, Context, Registry, create_client, define_workflow
from redflow_mp.ids import new_token
from redflow_mp.worker import Worker

PREFIX = "scale"
DAY_MS = 86_400_000

# Copy run `ARGV[1]` (a finished run) `ARGV[3]` times under ids ARGV[2]..i,
# finished ARGV[4] ms ago: hash, steps, attempts, every index finalize writes.
_CLONE = """
local tag, src, base, n, ago = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fin = now - ago
local h = redis.call('HGETALL', tag .. ':run:' .. src)
local steps = redis.call('HGETALL', tag .. ':run:' .. src .. ':steps')
local att = redis.call('LRANGE', tag .. ':run:' .. src .. ':attempts', 0, -1)
local wf, key, status
for i = 1, #h, 2 do
  if h[i] == 'workflow' then wf = h[i + 1] end
  if h[i] == 'idempotencyKey' then key = h[i + 1] end
  if h[i] == 'status' then status = h[i + 1] end
end
for j = 1, n do
  local id = base .. j
  local ikey = key .. '-' .. id
  local f = {}
  for i = 1, #h, 2 do
    local v = h[i + 1]
    if h[i] == 'id' then v = id
    elseif h[i] == 'idempotencyKey' then v = ikey
    elseif h[i] == 'createdAt' or h[i] == 'availableAt' or h[i] == 'startedAt'
      or h[i] == 'attemptStartedAt' then v = fin - 5
    elseif h[i] == 'finishedAt' or h[i] == 'updatedAt' then v = fin end
    f[#f + 1] = h[i]
    f[#f + 1] = v
  end
  local run = tag .. ':run:' .. id
  redis.call('HSET', run, unpack(f))
  if #steps > 0 then redis.call('HSET', run .. ':steps', unpack(steps)) end
  if #att > 0 then redis.call('RPUSH', run .. ':attempts', unpack(att)) end
  redis.call('ZADD', tag .. ':runs:created', fin - 5, id)
  redis.call('ZADD', tag .. ':workflow-runs:' .. wf, fin - 5, id)
  redis.call('ZADD', tag .. ':runs:status:' .. status, fin, id)
  local idem = tag .. ':idempo:' .. string.len(wf) .. ':' .. wf .. ':' .. string.len(ikey)
    .. ':' .. ikey
  redis.call('SET', idem, id, 'PXAT', now + 7 * 86400000)
end
return n
"""


def _app(url: str) -> tuple[Client, Any]:
    registry = Registry()

    @define_workflow("scale-wf", registry=registry, max_concurrency=10_000_000)
    def scale_wf(ctx: Context[Any]) -> str:
        return str(ctx.step.run("one", lambda: "x"))

    client = create_client(url, prefix=PREFIX, registry=registry, default=False)
    client.sync_registry(registry, app="scale")
    return client, scale_wf


def _template(client: Client, wf: Any) -> str:
    handle = wf.run(None, idempotency_key="template", client=client)
    worker = Worker(client, queues=("default",), maintenance=False)
    worker.run_until_idle(30)
    worker.close()
    assert handle.result(timeout=10) == "x"
    return str(handle.id)


def _load_finished(r: redis.Redis, tag: str, src: str, n: int, ago_ms: int, base: str) -> None:
    clone = r.register_script(_CLONE)
    chunk = 5000
    for start in range(0, n, chunk):
        clone(args=[tag, src, f"{base}{start}-", min(chunk, n - start), ago_ms])


def _reset_stats(r: redis.Redis) -> None:
    r.config_set("slowlog-log-slower-than", 1000)
    r.config_set("slowlog-max-len", 100_000)
    r.slowlog_reset()
    r.config_resetstat()


_LOADER_SHA = hashlib.sha1(_CLONE.encode(), usedforsecurity=False).hexdigest()


def _calls(r: redis.Redis) -> str:
    """Script calls (the loader's left out) over 1 ms (SLOWLOG): the longest, how
    many took over 5 and 10 ms, and the mean per call (commandstats; with a
    loader running beside, its calls are counted). On a shared machine the
    longest is mostly the server being descheduled: single commands inside a
    script show the same stalls in SLOWLOG."""
    entries = r.slowlog_get(100_000)
    script = [
        int(e["duration"])
        for e in entries
        if _LOADER_SHA not in str(e["command"])
        and str(e["command"]).lstrip("b'\"").startswith(("EVALSHA", "FCALL"))
    ]
    over5, over10 = sum(d > 5000 for d in script), sum(d > 10_000 for d in script)
    parts = [
        f"script calls over 1 ms: {len(script)}, over 5 ms: {over5}, over 10 ms: {over10}, "
        f"longest {max(script, default=0) / 1000:.1f} ms"
    ]
    stats = r.info("commandstats")
    for name in ("cmdstat_evalsha", "cmdstat_fcall"):
        st = stats.get(name)
        if st:
            parts.append(f"{st['calls']} calls, mean {st['usec_per_call'] / 1000:.2f} ms")
    return ", ".join(parts)


def _keys(r: redis.Redis, tag: str) -> dict[str, int]:
    """Keys of the prefix by kind (per-run keys by suffix), walked with SCAN."""
    out: dict[str, int] = {}
    for key in r.scan_iter(match=f"{tag}:*", count=10_000):
        name = key.decode()[len(tag) + 1 :]
        if name.startswith("run:"):
            kind = "run:<id>" + (":" + name.split(":", 2)[2] if name.count(":") >= 2 else "")
        elif name.startswith("idempo:"):
            kind = "idempo:*"
        else:
            kind = name
        out[kind] = out.get(kind, 0) + 1
    return out


def _index_sizes(r: redis.Redis, tag: str) -> dict[str, int]:
    return {
        "runs:created": int(r.zcard(f"{tag}:runs:created")),
        "workflow-runs:scale-wf": int(r.zcard(f"{tag}:workflow-runs:scale-wf")),
        "runs:status:succeeded": int(r.zcard(f"{tag}:runs:status:succeeded")),
    }


def _drive(duty: Any, until: Callable[[], bool], limit_s: float) -> float:
    """Tick ``duty`` on the clock, as the arbiter's loop does, until ``until()``."""
    t0 = time.monotonic()
    due = t0
    while not until() and time.monotonic() - t0 < limit_s:
        now = time.monotonic()
        if now >= due:
            due = duty.tick(now)
        else:
            time.sleep(min(due - now, 0.05))
    return time.monotonic() - t0


def bench_sweep(server: RedisServer, n: int, retention_s: float) -> None:
    from redflow_supervisor.duties.retention import RetentionDuty

    client, wf = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    src = _template(client, wf)
    t0 = time.monotonic()
    _load_finished(r, tag, src, n, int(retention_s * 1000) + 60_000, "f")
    print(f"sweep: loaded {n} finished runs in {time.monotonic() - t0:.1f} s")
    before = _keys(r, tag)
    print(f"  keys before: {before}")
    print(f"  indexes before: {_index_sizes(r, tag)}")
    print(f"  used_memory: {r.info('memory')['used_memory_human']}")
    _bench_lists(client, r, tag)
    _reset_stats(r)
    duty = RetentionDuty(client, retention_s)
    took = _drive(duty, lambda: r.zcard(f"{tag}:runs:status:succeeded") <= 1, 1800)
    print(f"  swept {duty.removed} in {took:.1f} s ({duty.removed / took:.0f} runs/s); {_calls(r)}")
    print(f"  keys after: {_keys(r, tag)}")
    print(f"  indexes after: {_index_sizes(r, tag)}")
    client.close()
    r.flushall()


# The oldest 2,000 runs of the index (half of them every other one) become failed.
_FAIL_SOME = """
local ids = redis.call('ZRANGE', KEYS[1], 0, 2999)
for i, id in ipairs(ids) do
  if i <= 1000 or i % 2 == 0 then
    redis.call('HSET', ARGV[1] .. ':run:' .. id, 'status', 'failed')
    local at = redis.call('ZSCORE', KEYS[1], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], at, id)
  end
end
return #ids
"""


def _bench_lists(client: Client, r: redis.Redis, tag: str) -> None:
    """``redflow runs list`` with filters over the loaded runs: wall time and the
    longest single command."""
    r.eval(_FAIL_SOME, 2, f"{tag}:runs:status:succeeded", f"{tag}:runs:status:failed", tag)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("newest 50", {}),
        ("status=failed", {"status": "failed"}),
        ("workflow+status=failed", {"workflow": "scale-wf", "status": "failed"}),
        ("status=failed offset 1900", {"status": "failed", "offset": 1900}),
        ("status=succeeded", {"status": "succeeded"}),
        ("status=queued (none)", {"status": "queued"}),
        ("workflow=scale-wf offset 500000", {"workflow": "scale-wf", "offset": 500_000}),
    ]
    for label, kw in cases:
        _reset_stats(r)
        r.config_set("slowlog-log-slower-than", 0)
        t0 = time.monotonic()
        runs = client.list_runs(limit=50, **kw)
        took = time.monotonic() - t0
        entries = r.slowlog_get(100_000)
        worst = max(entries, key=lambda e: int(e["duration"]), default=None)
        what = f"{worst['duration'] / 1000:.1f} ms {str(worst['command'])[:50]}" if worst else "-"
        print(
            f"  list_runs {label}: {len(runs)} runs in {took * 1000:.0f} ms, "
            f"{len(entries)} commands, longest {what}"
        )
    r.config_set("slowlog-log-slower-than", 1000)
    r.eval(  # failed back to succeeded: the sweep below counts them there
        "local ids = redis.call('ZRANGE', KEYS[1], 0, -1) "
        "for _, id in ipairs(ids) do local at = redis.call('ZSCORE', KEYS[1], id) "
        "redis.call('ZADD', KEYS[2], at, id) "
        "redis.call('HSET', ARGV[1] .. ':run:' .. id, 'status', 'succeeded') end "
        "redis.call('DEL', KEYS[1]) return #ids",
        2,
        f"{tag}:runs:status:failed",
        f"{tag}:runs:status:succeeded",
        tag,
    )


def bench_lists(server: RedisServer, n: int) -> None:
    """Only the listings of :func:`bench_sweep`, over ``n`` finished runs."""
    client, wf = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    _load_finished(r, tag, _template(client, wf), n, 86_400_000, "f")
    print(f"lists over {n} finished runs:")
    _bench_lists(client, r, tag)
    client.close()
    r.flushall()


def bench_sweepers(server: RedisServer, n: int, sweepers: int, retention_s: float) -> None:
    """``sweepers`` retention duties at once, as when every supervisor swept:
    the share of Redis's time the sweeps take until the backlog is gone."""
    from redflow_supervisor.duties.retention import RetentionDuty

    client, wf = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    src = _template(client, wf)
    _load_finished(r, tag, src, n, int(retention_s * 1000) + 60_000, "f")
    _reset_stats(r)
    clients = [_app(server.url)[0] for _ in range(sweepers)]
    duties = [RetentionDuty(c, retention_s) for c in clients]
    done = threading.Event()

    def sweep(duty: Any) -> None:
        _drive(duty, lambda: done.is_set() or r.zcard(f"{tag}:runs:status:succeeded") <= 1, 1800)
        done.set()

    t0 = time.monotonic()
    threads = [threading.Thread(target=sweep, args=(d,)) for d in duties]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    st = r.info("commandstats").get("cmdstat_evalsha", {"usec": 0})
    print(
        f"sweepers={sweepers}: {n} runs in {took:.1f} s, sweep calls {st['usec'] / 1e6:.1f} s "
        f"of Redis time ({100 * st['usec'] / 1e6 / took:.0f}% busy); {_calls(r)}"
    )
    for c in [client, *clients]:
        c.close()
    r.flushall()


def bench_steady(server: RedisServer, seconds: float, rate: int, retention_s: float) -> None:
    from redflow_supervisor.duties.retention import RetentionDuty

    client, wf = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    src = _template(client, wf)
    stop = threading.Event()
    loaded = [0]

    def arrive() -> None:  # runs finishing at `rate`/s, each eligible on arrival
        lr = server.client()
        clone = lr.register_script(_CLONE)
        step = 0.1
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            want = int((time.monotonic() - t0) * rate)
            if want > loaded[0]:
                clone(args=[tag, src, f"s{i}-", want - loaded[0], int(retention_s * 1000) + 1])
                loaded[0] = want
                i += 1
            time.sleep(step)

    thread = threading.Thread(target=arrive, daemon=True)
    _reset_stats(r)
    duty = RetentionDuty(client, retention_s)
    thread.start()
    backlog: list[int] = []
    t0 = time.monotonic()
    due = t0
    mark = t0
    while time.monotonic() - t0 < seconds:
        now = time.monotonic()
        if now >= due:
            due = duty.tick(now)
        if now >= mark:
            backlog.append(int(r.zcard(f"{tag}:runs:status:succeeded")))
            mark = now + 5
        time.sleep(max(0.0, min(due - time.monotonic(), 0.05)))
    stop.set()
    thread.join()
    took = time.monotonic() - t0
    print(
        f"steady: {loaded[0]} arrived in {took:.0f} s ({loaded[0] / took:.0f}/s), "
        f"{duty.removed} swept; backlog every 5 s: {backlog}; {_calls(r)}"
    )
    client.close()
    r.flushall()


def bench_promote(server: RedisServer, n: int) -> None:
    from redflow_supervisor.duties.promoter import PromoterDuty

    client, _ = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    t0 = time.monotonic()
    lead = 30.0 + n / 20_000  # due once the load is done
    at = time.time() + lead
    for start in range(0, n, 10_000):
        client.run_many_by_name("scale-wf", [None] * min(10_000, n - start), run_at=at)
    print(f"promote: enqueued {n} scheduled runs in {time.monotonic() - t0:.1f} s")
    while time.time() < at + 0.5:
        time.sleep(0.2)
    _reset_stats(r)
    duty = PromoterDuty(client, 200)
    took = _drive(duty, lambda: r.zcard(f"{tag}:runs:status:scheduled") == 0, 1800)
    print(f"  promoted {r.zcard(f'{tag}:runs:status:queued')} in {took:.1f} s; {_calls(r)}")
    client.close()
    r.flushall()


def bench_reap(server: RedisServer, n: int) -> None:
    from redflow_supervisor.duties.reaper import ReaperDuty

    client, _ = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    t0 = time.monotonic()
    for start in range(0, n, 10_000):
        client.run_many_by_name("scale-wf", [None] * min(10_000, n - start))
    claimed = 0
    token = new_token()
    while claimed < n:
        _, run = client.scripts.claim(("default",), 1, token)
        if run is None:
            break
        claimed += 1
    print(f"reap: {claimed} runs claimed with 1 ms leases in {time.monotonic() - t0:.1f} s")
    _reset_stats(r)
    duty = ReaperDuty(client, 500)
    took = _drive(duty, lambda: r.zcard(f"{tag}:leases") == 0, 1800)
    print(f"  requeued {duty.requeued} in {took:.1f} s; {_calls(r)}")
    client.close()
    r.flushall()


def _server_cpu(r: redis.Redis) -> float:
    """CPU seconds (user + system) redis-server has used: unlike SLOWLOG's wall
    time, not inflated when a loaded machine deschedules the server."""
    pid = int(r.info("server")["process_id"])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _relist_pass(client: Client, r: redis.Redis) -> tuple[int, int, float, float]:
    """One whole relist pass, pages back to back: (pages, runs put back, wall s,
    redis-server CPU s)."""
    from redflow_mp.lostkeys import relist_runs

    pages = put = 0
    cpu = _server_cpu(r)
    t0 = time.monotonic()
    while True:
        got = relist_runs(client)
        pages += 1
        put += len(got.put)
        if got.done:
            return pages, put, time.monotonic() - t0, _server_cpu(r) - cpu


def bench_relist(server: RedisServer, n: int) -> None:
    from redflow_mp.lostkeys import RELIST_PAGE
    from redflow_supervisor.duties.relist import BETWEEN_PAGES

    client, wf = _app(server.url)
    r = server.client()
    tag = client.keys.tag
    src = _template(client, wf)
    t0 = time.monotonic()
    _load_finished(r, tag, src, n, 3_600_000, "old-")
    queued = 10_000
    client.run_many_by_name("scale-wf", [None] * queued)
    print(f"relist: {n} finished runs and {queued} queued in {time.monotonic() - t0:.1f} s")
    r.delete(f"{tag}:q:default:ready")
    _reset_stats(r)
    pages, put, took, cpu = _relist_pass(client, r)
    back = r.zcard(f"{tag}:q:default:ready")
    print(
        f"  pass with the ready set lost: {pages} pages of {RELIST_PAGE}, {put} put back "
        f"({back} in the ready set), {took:.1f} s back to back, redis-server CPU "
        f"{cpu / pages * 1000:.2f} ms per page; {_calls(r)}"
    )
    for _ in range(3):
        _reset_stats(r)
        pages, put, took, cpu = _relist_pass(client, r)
        print(
            f"  pass with nothing lost: {pages} pages, {put} put back, {took:.1f} s back "
            f"to back, redis-server CPU {cpu / pages * 1000:.2f} ms per page; {_calls(r)}; "
            f"at the duty's pace ({BETWEEN_PAGES} s between pages) "
            f"{pages * BETWEEN_PAGES + took:.0f} s"
        )
    client.close()
    r.flushall()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.maintenance_scale")
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--scheduled", type=int, default=1_000_000)
    ap.add_argument("--leases", type=int, default=100_000)
    ap.add_argument("--steady", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--retention", type=float, default=7 * 86400.0)
    ap.add_argument("--sweepers", type=int, default=0, help="also N duties sweeping at once")
    ap.add_argument("--only", default="sweep,steady,promote,reap")
    ns = ap.parse_args(argv)
    server = RedisServer()
    server.start()
    print(f"redis-server {server.version} at {server.url}")
    try:
        todo = ns.only.split(",")
        if "sweep" in todo:
            bench_sweep(server, ns.runs, ns.retention)
        if "lists" in todo:
            bench_lists(server, ns.runs)
        if ns.sweepers:
            bench_sweepers(server, ns.runs, ns.sweepers, ns.retention)
        if "steady" in todo:
            bench_steady(server, ns.steady, ns.rate, ns.retention)
        if "promote" in todo:
            bench_promote(server, ns.scheduled)
        if "reap" in todo:
            bench_reap(server, ns.leases)
        if "relist" in todo:
            bench_relist(server, ns.runs)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
