"""A real supervisor (``--procs 2``, every setting at its default) against a
Redis holding what users reach: a million runs, 5,000 queues, 10,000 runs due
at one instant, 100,000 runs parked behind ``max_concurrency=1``, 1,000 cron
entries.

``python -m benchmarks.scale_supervisor [--only finished,queued,drain,scheduled,parked,queues,crons]
[--runs 1000000] [--drain 200000] [--watch 40] [--monitor] [--scrape]``

What the other scale benchmarks lack: they tick one duty, or call one script, in
process; here the whole supervisor runs (its parent's loop with every duty, two
children claiming), and each run's execution is counted.

Each scenario starts a private ``redis-server`` (``tests.redis_server``, with
``slowlog-log-slower-than 10000``: every command or script over 10 ms is kept),
loads its data, spawns ``redflow-supervisor --app scale --procs 2 --module
benchmarks.tasks.scale_tasks`` and watches it for ``--watch`` seconds (or until
the work is done), sampling each second:

- the parent's CPU (``/proc/<pid>/stat``, user + system: only its own loop,
  not its children) and RSS; Redis's ``used_memory``;
- runs done (``sc:exec``: each handler counts its run id there; a count above
  1 is a run executed twice).

Reported: start-up (spawn to the first run done), the parent's CPU per second
of wall time once its work is done or over the whole watch, its RSS at the
start and the end, Redis bytes per run, and SLOWLOG: the longest entry and
every entry's command name. Scenarios:

- ``finished``: ``--runs`` finished runs (``benchmarks.list_scale``'s loader,
  created over the last 6 days: inside the default retention) and one queued
  run: start-up to that run done, then the parent idle.
- ``queued``: ``--runs`` queued runs of a workflow with no limit (``run_many``);
  the parent's cost while the children drain them, runs done in ``--watch`` s.
- ``scheduled``: 10,000 runs due at one instant 15 s after the start: all done
  exactly once, and the promoter's longest call.
- ``parked``: 100,000 runs of one workflow with the default
  ``max_concurrency=1``: runs done in ``--watch`` s (one at a time), the
  parent's CPU, SLOWLOG.
- ``queues``: 5,000 workflows, each on a queue of its own with 2 runs queued,
  the supervisor serving all 5,000 queues: all done exactly once, then idle.
- ``crons``: 1,000 cron entries firing every 15 s: each fire time one run.
- ``claims`` (not in the default set; in process, no supervisor): the Redis
  time of one claim's script calls over ``--queues`` queues holding runs (the
  first, a scan, a plain one), then with another list's older runs ahead.
- ``drain``: ``--drain`` queued runs drained to the end: Redis bytes per queued
  and per finished run, the keys a finished run keeps, the parent's RSS along.

``--monitor``: a MONITOR connection counts the commands each script call runs
(per script: calls, the most commands in one call): O(N) work in one call shows
as a count that grows with the data, whatever the machine's load (SLOWLOG times
on a loaded 2-core machine include the server being descheduled). MONITOR slows
Redis: the other figures of such a run are not comparable.
``--scrape``: the supervisor serves ``/metrics``, fetched once a second: the
scrape's wall time and size.

Timings on a shared 2-core machine are indications; SLOWLOG entries over 50 ms
and CPU that grows with the data are what this looks for.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.list_scale import load as load_finished
from redflow_mp.codec import text
from tests.redis_server import RedisServer

TAG = "{redflow}"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _spawn(url: str, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    exe = os.path.join(os.path.dirname(sys.executable), "redflow-supervisor")
    env = {**os.environ, "SCALE_URL": url, **env_extra}
    if SCRAPE_PORT:
        env["REDFLOW_METRICS_PORT"] = str(SCRAPE_PORT[0])
    argv = [
        exe,
        "--app",
        "scale",
        "--procs",
        "2",
        "--module",
        "benchmarks.tasks.scale_tasks",
        "--url",
        url,
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(argv, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _done(r: redis.Redis) -> int:
    return int(r.hlen("sc:exec"))


def _twice(r: redis.Redis) -> int:
    twice = 0
    for _, v in r.hscan_iter("sc:exec", count=500):
        twice += int(v) > 1
    return twice


def _slowlog(r: redis.Redis) -> str:
    entries = r.slowlog_get(10_000)
    if not entries:
        return "SLOWLOG: none over 10 ms"
    by: dict[str, list[int]] = {}
    for e in entries:
        cmd = e["command"]
        name = (cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd))[:60]
        by.setdefault(
            name.split(" ")[0] + " " + name.split(" ")[1][:12] if " " in name else name, []
        ).append(int(e["duration"]))
    parts = [f"{k}: {len(v)} x, max {max(v) / 1000:.1f} ms" for k, v in sorted(by.items())]
    for e in entries:
        if int(e["duration"]) > 50_000:  # over 50 ms: what was called, shortened
            cmd = e["command"]
            text = cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd)
            print(f"    {int(e['duration']) / 1000:.0f} ms: {text[:300]}", flush=True)
    return "SLOWLOG (> 10 ms): " + "; ".join(parts)


class Scraper:
    """GET /metrics once a second (``--scrape``) from a thread: the scrape's time
    and size, and the parent's CPU it costs (the gauges are read in its loop)."""

    def __init__(self, port: int) -> None:
        import threading

        self.port, self.times, self.size = port, [], 0  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import urllib.request

        while not self.stop.wait(1.0):
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/metrics", timeout=5
                ) as f:
                    self.size = len(f.read())
            except OSError:
                continue
            self.times.append(time.perf_counter() - t)

    def report(self) -> str:
        self.stop.set()
        self.thread.join(5)
        if not self.times:
            return "scrapes: none answered"
        ts = sorted(self.times)
        return (
            f"scrapes: {len(ts)}, median {ts[len(ts) // 2] * 1000:.0f} ms, "
            f"max {ts[-1] * 1000:.0f} ms, {self.size} bytes"
        )


SCRAPE_PORT: list[int] = []
MONITOR: list[bool] = []
MONITOR_URL: list[str] = []  # the server of the scenario running, with --monitor


class Commands:
    """``--monitor``: a MONITOR connection that counts the commands each script
    call ran (a script's commands come right after its EVALSHA/FCALL, nothing
    between): per script, the calls and the most commands one call ran, with
    the start of that call. Counts, not times: a loaded machine does not move
    them. (MONITOR slows Redis down: the other figures of such a run are not
    comparable.)"""

    def __init__(self, url: str) -> None:
        import hashlib
        import socket
        import threading
        from urllib.parse import urlsplit

        from redflow_mp.luafiles import load_sources

        parts = urlsplit(url)
        self.names = {
            hashlib.sha1(t.encode(), usedforsecurity=False).hexdigest(): n
            for v in ((7, 0, 0), (6, 2, 0))
            for n, t in load_sources(v).items()
        }
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.stats: dict[str, list[Any]] = {}  # name -> [calls, most commands, that call]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _close(self, call: str, count: int) -> None:
        if not call:
            return
        parts = call.split('"')
        cmd = parts[1] if len(parts) > 1 else "?"
        name = cmd
        if cmd in ("EVALSHA", "FCALL") and len(parts) > 3:
            name = self.names.get(parts[3], parts[3][:12])
        elif cmd != "EVAL":
            return
        st = self.stats.setdefault(name, [0, 0, ""])
        st[0] += 1
        if count > st[1]:
            st[1], st[2] = count, call[:200]

    def _run(self) -> None:
        buf, call, count = b"", "", 0
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if " lua] " in line:
                    count += 1
                    continue
                self._close(call, count)
                call, count = line, 0
        self._close(call, count)

    def report(self) -> str:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        rows = sorted(self.stats.items(), key=lambda kv: -kv[1][1])
        out = ["commands per script call (MONITOR): name calls most"]
        for name, (calls, most, call) in rows[:8]:
            out.append(f"    {name}: {calls} calls, most {most} commands in one")
            if most > 2000:
                out.append(f"      that call: {call}")
        return "\n".join(out)


def _watch(  # noqa: C901  (one sampling loop and its report)
    r: redis.Redis,
    proc: subprocess.Popen[bytes],
    seconds: float,
    target: int,
    runs_in_redis: int,
    label: str,
    after: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Sample every second until ``target`` runs are done (then 10 s more, idle)
    or ``seconds`` pass."""
    scraper = Scraper(SCRAPE_PORT[0]) if SCRAPE_PORT else None
    commands = Commands(MONITOR_URL[0]) if MONITOR_URL else None
    t0 = time.monotonic()
    first = float("nan")
    rss0 = None
    samples: list[tuple[float, float, int]] = []  # (t, parent cpu s, done)
    done_at = None
    while True:
        time.sleep(0.2 if first != first else 1.0)
        if proc.poll() is not None:
            raise RuntimeError(f"{label}: supervisor exited with {proc.returncode}")
        now = time.monotonic() - t0
        done = _done(r)
        if done and first != first:
            first = now
        cpu = _cpu_s(proc.pid)
        if rss0 is None:
            rss0 = _rss_mb(proc.pid)
        samples.append((now, cpu, done))
        if len(samples) % 15 == 0:
            print(
                f"    t={now:.0f}s done={done} parent cpu {cpu:.2f}s "
                f"rss {_rss_mb(proc.pid):.1f} MB",
                flush=True,
            )
        if done >= target and done_at is None:
            done_at = now
        if done_at is not None and now - done_at >= 10:
            break
        if now >= seconds and done_at is None:
            break
    rss1 = _rss_mb(proc.pid)
    mem = int(r.info("memory")["used_memory"])
    if done_at is not None:
        idle = [s for s in samples if s[0] >= done_at]
        busy = [s for s in samples if s[0] <= done_at]
    else:
        idle, busy = [], samples

    def rate(ss: list[tuple[float, float, int]]) -> float:
        if len(ss) < 2 or ss[-1][0] <= ss[0][0]:
            return float("nan")
        return (ss[-1][1] - ss[0][1]) / (ss[-1][0] - ss[0][0])

    out = {
        "label": label,
        "first_done_s": round(first, 2),
        "done": samples[-1][2],
        "all_done_s": None if done_at is None else round(done_at, 1),
        "parent_cpu_busy": round(rate(busy), 3),
        "parent_cpu_idle": round(rate(idle), 3),
        "parent_rss_mb": (round(rss0 or 0, 1), round(rss1, 1)),
        "redis_mb": round(mem / 2**20, 1),
        "redis_bytes_per_run": round(mem / max(runs_in_redis, 1)),
        "twice": _twice(r),
    }
    print(out, flush=True)
    if scraper is not None:
        print("  " + scraper.report(), flush=True)
    if commands is not None:
        print("  " + commands.report(), flush=True)
    print("  " + _slowlog(r), flush=True)
    return out


def _server() -> RedisServer:
    server = RedisServer(["--slowlog-log-slower-than", "10000", "--slowlog-max-len", "10000"])
    server.start()
    MONITOR_URL.clear()
    if MONITOR:
        MONITOR_URL.append(server.url)
    return server


def _client(url: str) -> Any:
    from benchmarks.tasks import scale_tasks  # noqa: F401  (fills the default registry)
    from redflow_mp import create_client, get_default_registry

    client = create_client(url)
    client.sync_registry(get_default_registry(), app="scale")
    return client


def finished(n: int, watch: float) -> None:
    from benchmarks.tasks import scale_tasks

    with _server() as server:
        r = server.client()
        t = time.monotonic()
        load_finished(r, TAG, n, 20, spacing_ms=max(1, 6 * 86_400_000 // n))
        print(
            f"finished: loaded {n} in {time.monotonic() - t:.0f} s, "
            f"{r.info('memory')['used_memory_human']}",
            flush=True,
        )
        client = _client(server.url)
        scale_tasks.noop.run({}, client=client)
        r.slowlog_reset()
        proc = _spawn(server.url, {})
        try:
            _watch(r, proc, watch, 1, n, "finished")
        finally:
            _stop(proc)
            client.close()


def queued(n: int, watch: float) -> None:
    from benchmarks.tasks import scale_tasks

    with _server() as server:
        r = server.client()
        client = _client(server.url)
        t = time.monotonic()
        for i in range(0, n, 10_000):
            scale_tasks.noop.run_many([{}] * min(10_000, n - i), client=client)
        print(
            f"queued: enqueued {n} in {time.monotonic() - t:.0f} s, "
            f"{r.info('memory')['used_memory_human']}",
            flush=True,
        )
        r.slowlog_reset()
        proc = _spawn(server.url, {})
        try:
            _watch(r, proc, watch, n, n, "queued")
        finally:
            _stop(proc)
            client.close()


def drain(n: int, watch: float) -> None:
    """``n`` queued runs drained to the end: Redis bytes per finished run (the keys
    a finished run keeps, by kind) and the parent's RSS along the way."""
    from benchmarks.tasks import scale_tasks

    with _server() as server:
        r = server.client()
        client = _client(server.url)
        base = int(r.info("memory")["used_memory"])
        for i in range(0, n, 10_000):
            scale_tasks.noop.run_many([{}] * min(10_000, n - i), client=client)
        queued_b = int(r.info("memory")["used_memory"]) - base
        r.slowlog_reset()
        proc = _spawn(server.url, {})
        try:
            _watch(r, proc, watch, n, n, "drain")
            r.delete("sc:exec")
            done_b = int(r.info("memory")["used_memory"]) - base
            kinds: dict[str, int] = {}
            for key in r.scan_iter(match=TAG + ":*", count=10_000):
                name = key.decode()[len(TAG) + 1 :]
                kind = "run:<id>" + (":" + name.split(":", 2)[2] if name.count(":") >= 2 else "")
                kind = kind if name.startswith("run:") else name.split(":")[0] + ":*"
                kinds[kind] = kinds.get(kind, 0) + 1
            print(
                f"  Redis bytes per run: queued {queued_b // n}, finished {done_b // n}; "
                f"keys by kind: {dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:8])}",
                flush=True,
            )
        finally:
            _stop(proc)
            client.close()


def scheduled(watch: float) -> None:
    from benchmarks.tasks import scale_tasks

    with _server() as server:
        r = server.client()
        client = _client(server.url)
        at = time.time() + 15
        scale_tasks.noop.run_many([{}] * 10_000, run_at=at, client=client)
        r.slowlog_reset()
        proc = _spawn(server.url, {})
        try:
            _watch(r, proc, watch, 10_000, 10_000, "scheduled")
        finally:
            _stop(proc)
            client.close()


def parked(n: int, watch: float) -> None:
    from benchmarks.tasks import scale_tasks

    with _server() as server:
        r = server.client()
        client = _client(server.url)
        for i in range(0, n, 10_000):
            scale_tasks.one.run_many([{}] * min(10_000, n - i), client=client)
        other = scale_tasks.noop.run({}, client=client)  # behind them, same queue
        r.slowlog_reset()
        t0 = time.monotonic()
        proc = _spawn(server.url, {})
        try:
            other.result(timeout=watch)
            print(
                f"  a run of another workflow behind them: done {time.monotonic() - t0:.1f} s "
                "after the spawn",
                flush=True,
            )
            out = _watch(r, proc, watch, n + 1, n + 1, "parked")
            print(
                f"  parked now: {r.zcard(TAG + ':wf-waiting:scale-one')}, "
                f"ready: {r.zcard(TAG + ':q:scale:ready')}",
                flush=True,
            )
            del out
        finally:
            _stop(proc)
            client.close()


def queues(count: int, per: int, watch: float) -> None:
    env = {"SCALE_QUEUES": str(count)}
    os.environ.update(env)
    with _server() as server:
        r = server.client()
        client = _client(server.url)
        for i in range(count):
            client.run_many_by_name(f"q-{i}", [{}] * per)
        r.slowlog_reset()
        proc = _spawn(server.url, env)
        try:
            _watch(r, proc, watch, count * per, count * per, "queues")
        finally:
            _stop(proc)
            client.close()
            os.environ.pop("SCALE_QUEUES")


def crons(count: int, watch: float) -> None:
    env = {"SCALE_CRONS": str(count)}
    os.environ.update(env)
    with _server() as server:
        r = server.client()
        r.slowlog_reset()
        proc = _spawn(server.url, env)
        try:
            _watch(r, proc, watch, 10**9, count, "crons")
            per: dict[str, int] = {}
            for rid in r.hkeys("sc:exec"):
                wf = r.hget(f"{TAG}:run:{text(rid)}", "cronId")
                key = text(wf or b"?")
                per[key] = per.get(key, 0) + 1
            counts = sorted(per.values())
            print(
                f"  cron runs: {sum(counts)} over {len(per)} entries, "
                f"min {counts[0] if counts else 0} max {counts[-1] if counts else 0} per entry; "
                f"cron:next {r.zcard(TAG + ':cron:next')}",
                flush=True,
            )
        finally:
            _stop(proc)


def claims(count: int) -> None:
    """In process, no supervisor: the Redis time of one claim's script calls
    (SLOWLOG at 0) over ``count`` queues holding 2 runs each: the first claim
    (registers the list, scans), a scan (``scan=True``: every 30 s and after an
    idle wait), a plain claim; then a second list of ``count`` queues whose runs
    are older: a claim of the first list (the walk of ready-queues gives up and
    intersects)."""
    from redflow_mp import create_client
    from redflow_mp.ids import new_run_id, new_token

    def enqueue(queues: tuple[str, ...]) -> None:
        for q in queues:
            for _ in range(2):
                client.scripts.enqueue(new_run_id(), "w", q, b"{}", 1, 0, "", 0, "", "", None, None)

    def claim(label: str, queues: tuple[str, ...], **kw: Any) -> None:
        r.slowlog_reset()
        client.scripts.claim(queues, 5000, new_token(), **kw)
        calls = [
            int(e["duration"])
            for e in r.slowlog_get(100_000)
            if text(e["command"]).startswith(("EVALSHA", "FCALL"))
        ]
        print(
            f"claims: {label}: {len(calls)} script calls, longest {max(calls) / 1000:.1f} ms, "
            f"{sum(calls) / 1000:.1f} ms in all",
            flush=True,
        )

    with _server() as server:
        r = server.client()
        client = create_client(server.url, default=False)
        mine = tuple(f"q{i}" for i in range(count))
        r.hset(client.keys.workflow("w"), "maxConcurrency", "1000000")
        enqueue(mine)
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 100_000)
        claim("first (registers, scans)", mine)
        claim("scan", mine, scan=True)
        claim("plain", mine)
        others = tuple(f"o{i}" for i in range(count))
        client.scripts.claim(others, 5000, new_token())  # (registered, nothing to claim)
        r.delete(*(client.keys.q_ready(q) for q in mine))
        enqueue(others)
        enqueue(mine)
        claim(f"plain, {count} other queues' older runs ahead", mine)
        claim(f"plain, {count} other queues' older runs ahead, again", mine)
        claim(f"plain, {count} other queues' older runs ahead, a third", mine)
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="finished,queued,scheduled,parked,queues,crons")
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--parked", type=int, default=100_000)
    ap.add_argument("--drain", type=int, default=200_000)
    ap.add_argument("--queues", type=int, default=5000)
    ap.add_argument("--crons", type=int, default=1000)
    ap.add_argument("--watch", type=float, default=40)
    ap.add_argument("--scrape", action="store_true", help="serve /metrics, GET it every second")
    ap.add_argument("--monitor", action="store_true", help="count commands per script call")
    a = ap.parse_args(argv)
    if a.monitor:
        MONITOR.append(True)
    if a.scrape:
        from tests.redis_server import free_port

        SCRAPE_PORT.append(free_port())
    only = a.only.split(",")
    if "finished" in only:
        finished(a.runs, a.watch)
    if "queued" in only:
        queued(a.runs, a.watch)
    if "drain" in only:
        drain(a.drain, a.watch)
    if "scheduled" in only:
        scheduled(a.watch)
    if "parked" in only:
        parked(a.parked, a.watch)
    if "queues" in only:
        queues(a.queues, 2, a.watch)
    if "crons" in only:
        crons(a.crons, a.watch)
    if "claims" in only:
        claims(a.queues)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
