"""One pass of every periodic read at production sizes, with the default
settings: a million finished runs, thousands of workflows and queues, hundreds
of cron schedules.

``python -m benchmarks.ops_scale [--runs 1000000] [--workflows 5000] [--crons 300]
[--queued-per-queue 10]``

Against a private redis-server: ``--runs`` finished runs (the Lua loader of
``benchmarks.list_scale``, spread over the workflows and over a week: the
default retention), ``--workflows``
workflows each on a queue of its own, synced with ``sync_registry``, the first
``--crons`` with a cron schedule, and ``--queued-per-queue`` queued runs in
every queue. Then, once each, what runs periodically or at an operator's
request: each supervisor duty's tick (as the arbiter builds them, the leader's
lock held), a ``/metrics`` scrape's gauges, the ``redflow`` CLI's
``workflows``, ``queues``, ``supervisors`` and ``runs list``, the dashboard's
pages. For each: wall time, Redis commands and Redis time
(``INFO commandstats``). Timings on a shared machine are indications; the
command counts and Redis time show what grows with the data.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.list_scale import load
from benchmarks.redis_server import RedisServer
from redflow_mp import Client, Cron, Registry, create_client, define_workflow

PREFIX = "scale"


def _registry(workflows: int, crons: int) -> Registry:
    registry = Registry()
    for i in range(workflows):
        cron = [Cron("0 0 1 1 *")] if i < crons else []  # once a year: never due here
        define_workflow(f"wf-{i}", queue=f"q-{i}", registry=registry, cron=cron)(_noop)
    return registry


def _noop(ctx: Any) -> None:  # never executed
    return None


class Meter:
    def __init__(self, server: RedisServer) -> None:
        self.r = server.client()

    def __call__(self, label: str, fn: Callable[[], object]) -> None:
        self.r.config_resetstat()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fn()
        wall = time.perf_counter() - t0
        st = self.r.info("commandstats")
        cmds = sum(v["calls"] for k, v in st.items() if k != "cmdstat_config")
        usec = sum(v["usec"] for k, v in st.items() if k != "cmdstat_config")
        top = sorted(
            ((v["usec"], k[8:], v["calls"]) for k, v in st.items() if k != "cmdstat_config"),
            reverse=True,
        )[:2]
        worst = ", ".join(f"{name} {calls}x {us / 1000:.1f} ms" for us, name, calls in top)
        print(
            f"{label:34s} {wall * 1000:9.1f} ms wall {cmds:8d} cmds {usec / 1000:8.1f} ms Redis"
            f"   ({worst})",
            flush=True,
        )


def _duties(client: Client, registry: Registry, queues: tuple[str, ...]) -> list[Any]:
    from redflow_supervisor.duties.cascades import CascadeDuty
    from redflow_supervisor.duties.cron import CronDuty
    from redflow_supervisor.duties.keycheck import KeyCheckDuty
    from redflow_supervisor.duties.leader import LeaderDuty
    from redflow_supervisor.duties.promoter import PromoterDuty
    from redflow_supervisor.duties.reaper import ReaperDuty
    from redflow_supervisor.duties.registration import RegistrationDuty
    from redflow_supervisor.duties.registry import RegistryDuty
    from redflow_supervisor.duties.relist import RelistDuty
    from redflow_supervisor.duties.retention import RetentionDuty

    leader = LeaderDuty(client, 10_000)
    return [
        leader,
        CronDuty(client, leader),
        PromoterDuty(client, 200),
        ReaperDuty(client, 500, queues=lambda: queues, lease_ms=5000),
        RetentionDuty(client, 7 * 86400.0, leader, queues=lambda: queues),
        RelistDuty(client, leader),
        CascadeDuty(client, leader),
        KeyCheckDuty(client, lambda: [w.name for w in registry], lambda: queues),
        RegistrationDuty(client, lambda: registry, lambda: "scale"),
        RegistryDuty(client, lambda: registry, "scale"),
    ]


def _get(app: Any, path: str, query: str = "") -> str:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1",
    }
    return b"".join(app(environ, lambda status, headers: None)).decode()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ops_scale", description=__doc__)
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--workflows", type=int, default=5000)
    ap.add_argument("--crons", type=int, default=300)
    ap.add_argument("--queued-per-queue", type=int, default=10)
    ns = ap.parse_args(argv)
    from redflow_supervisor.duties.status import gauges
    from redflow_supervisor.ops.cli import main as redflow
    from redflow_supervisor.ops.dashboard import make_app

    server = RedisServer()
    server.start()
    try:
        r = server.client()
        t0 = time.monotonic()
        # a week of runs (the default retention): a million 0.6 s apart
        load(r, "{" + PREFIX + "}", ns.runs, ns.workflows, spacing_ms=7 * 86_400_000 // ns.runs)
        registry = _registry(ns.workflows, ns.crons)
        client = create_client(server.url, prefix=PREFIX, registry=registry, default=False)
        meter = Meter(server)
        meter("sync_registry (start-up)", lambda: client.sync_registry(registry, app="scale"))
        for i in range(ns.workflows):
            client.run_many_by_name(f"wf-{i}", [None] * ns.queued_per_queue)
        print(
            f"loaded {ns.runs:,} finished runs, {ns.workflows:,} workflows and queues, "
            f"{ns.crons} crons, {ns.workflows * ns.queued_per_queue:,} queued runs in "
            f"{time.monotonic() - t0:.0f} s ({r.info('memory')['used_memory_human']})",
            flush=True,
        )
        queues = tuple(f"q-{i}" for i in range(ns.workflows))
        for duty in _duties(client, registry, queues):
            meter(f"duty {duty.name} tick", lambda d=duty: d.tick(time.monotonic()))
        meter("/metrics gauges (all queues)", lambda: gauges(client, registry, 8, queues))
        meter("/metrics gauges (one queue)", lambda: gauges(client, registry, 8, queues[:1]))
        base = ["--url", server.url, "--prefix", PREFIX]
        for args in (
            ["workflows"],
            ["queues"],
            ["supervisors"],
            ["runs", "list"],
            ["runs", "list", "--status", "failed"],
            ["runs", "list", "--workflow", "wf-7", "--offset", "100"],
        ):
            meter("redflow " + " ".join(args), lambda a=args: redflow([*base, *a]))
        app = make_app(client, read_only=True)
        for path, query in (
            ("/runs", ""),
            ("/runs", "status=failed"),
            ("/workflows", ""),
            ("/queues", ""),
            ("/supervisors", ""),
        ):
            meter(f"dashboard {path}?{query}", lambda p=path, q=query: _get(app, p, q))
        client.close()
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
