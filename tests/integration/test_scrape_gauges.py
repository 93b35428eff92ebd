"""The ``/metrics`` gauges of a supervisor serving thousands of queues and
workflows: what a scrape costs the arbiter's loop (commands and round trips
the client sends, counted on its real connection) and that every value stays
exact, capped series included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, define_workflow
from redflow_mp.admin import RunQueues
from redflow_supervisor.duties.status import gauges
from redflow_supervisor.exposition import OTHER, MetricsStore
from tests.helpers import command, text

pytestmark = pytest.mark.timeout(120)

QUEUES = 5000
STATES = ("ready", "processing", "scheduled")
WORKFLOWS = 5000

Gauges = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _name(kind: str, i: int) -> str:
    """Workflow or queue ``i``'s name; one has quotes, a backslash, a comma and
    non-ASCII letters (the script reads the names as JSON)."""
    return f"{kind}-{i:04d}" + (' "ü☃\\,]' if i == 7 else "")


class Sent:
    """Commands and round trips the client sent (one round trip: one write of
    a command or a pipeline), counted by its connections."""

    commands = 0
    round_trips = 0


def _counting(base: type[Any]) -> type[Any]:
    class Counting(base):  # type: ignore[misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            Sent.round_trips += 1
            super().send_packed_command(command, check_health)

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            Sent.commands += 1
            super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Any) -> Any:
            commands = list(commands)
            Sent.commands += len(commands)
            return super().pack_commands(commands)

    return Counting


def sent_by(client: Client, action: Callable[[], object]) -> tuple[int, int]:
    """(commands, round trips) ``client``'s connections send while ``action`` runs;
    connected and the scripts loaded first, as the arbiter's client is when it
    serves a scrape (the connection's handshake is not counted)."""
    pool = client.redis.connection_pool
    base = pool.connection_class
    pool.disconnect()
    pool.reset()  # new connections from here on, of the counting class
    pool.connection_class = _counting(base)
    try:
        client.redis.ping()
        client.scripts.ensure_loaded()
        Sent.commands = Sent.round_trips = 0
        action()
        return Sent.commands, Sent.round_trips
    finally:
        pool.disconnect()
        pool.reset()
        pool.connection_class = base


def _noop(ctx: Context[Any]) -> None:
    return None


@pytest.fixture()
def big(client: Client, registry: Registry, raw: redis.Redis) -> Iterator[dict[str, Any]]:
    """5,000 workflows, each on a queue of its own, with ready, scheduled,
    running and suspended runs in varied numbers (written directly: the
    gauges only count)."""
    for i in range(WORKFLOWS):
        define_workflow(_name("wf", i), queue=_name("q", i), registry=registry)(_noop)
    k = client.keys
    running_ids: list[tuple[str, str]] = []
    with raw.pipeline(transaction=False) as pipe:
        for i in range(QUEUES):
            q = _name("q", i)
            pipe.sadd(k.queues, q)
            for j in range(i % 3):
                rid = f"r{i}-{j}"
                pipe.zadd(k.q_ready(q), {rid: j})
                pipe.hset(k.run(rid), mapping={"availableAt": "1", "queue": q})
            for j in range(i % 5):
                pipe.zadd(k.q_scheduled(q), {f"s{i}-{j}": j})
            for j in range(i % 4):
                rid = f"x{i}-{j}"
                pipe.sadd(k.wf_running(_name("wf", i)), rid)
                if i % 7 == 0:
                    running_ids.append((rid, q))
        for rid, q in running_ids:
            pipe.zadd(k.runs_status("running"), {rid: 1})
            pipe.hset(k.run(rid), mapping={"queue": q})
        pipe.zadd(k.runs_status("suspended"), {f"z{j}": j for j in range(7)})
        pipe.sadd(k.queues, *[f"tenant-{j}" for j in range(50)])  # known, not served
        pipe.execute()
    yield {"queues": tuple(_name("q", i) for i in range(QUEUES)), "running": running_ids}


def _reference(client: Client, raw: redis.Redis, queues: tuple[str, ...]) -> Gauges:
    """Each value read the plain way, one command per key."""
    k = client.keys
    out: Gauges = {("redflow_children_alive", ()): 3.0}
    out[("redflow_queues_known", ())] = float(raw.scard(k.queues))
    processing: dict[str, int] = {}
    for rid in raw.zrange(k.runs_status("running"), 0, -1):
        queue = text(raw.hget(k.run(text(rid)), "queue"))
        processing[queue] = processing.get(queue, 0) + 1
    for q in queues:
        labels = (("queue", q),)
        out[("redflow_queue_depth", (*labels, ("state", "ready")))] = float(raw.zcard(k.q_ready(q)))
        out[("redflow_queue_depth", (*labels, ("state", "processing")))] = float(
            processing.get(q, 0)
        )
        out[("redflow_queue_depth", (*labels, ("state", "scheduled")))] = float(
            raw.zcard(k.q_scheduled(q))
        )
    out[("redflow_runs_suspended", ())] = float(raw.zcard(k.runs_status("suspended")))
    for i in range(WORKFLOWS):
        name = _name("wf", i)
        out[("redflow_workflow_running", (("workflow", name),))] = float(
            raw.scard(k.wf_running(name))
        )
    return out


def _as_dict(got: list[tuple[str, tuple[tuple[str, str], ...], float]]) -> Gauges:
    out: Gauges = {}
    for name, labels, value in got:
        assert (name, labels) not in out, (name, labels)
        out[(name, labels)] = value
    return out


def test_a_scrape_of_5000_queues_and_workflows_sends_a_bounded_number_of_commands(
    client: Client, registry: Registry, big: dict[str, Any]
) -> None:
    """A scrape's gauges are read in the arbiter's loop. For a supervisor serving
    5,000 queues of 5,000 workflows they were 25,005 commands (three per queue
    and a HGET per queue's head run, a SCARD per workflow): about 1.1 s of the
    loop per scrape, nearly all of it the client encoding and decoding them,
    while the arbiter reaped no child and renewed no lock. Now one round trip of
    one script call per thousand keys (and one for the queues of runs first
    seen running)."""
    queues = big["queues"]
    seen = RunQueues()  # the arbiter's memory of running runs' queues
    got: list[Any] = []
    commands, trips = sent_by(client, lambda: got.extend(gauges(client, registry, 3, queues, seen)))
    assert len(got) > 3 * QUEUES
    # 5 reads (the running index: a page, its last id's score, and the highest
    # score, read as a pass begins: every scrape of a small index), 10 calls for
    # the queues, 5 for the workflows; then the queue of each run seen running
    # for the first time (bounded by the runs in flight).
    assert (commands, trips) == (20 + len(big["running"]), 2)
    # Later scrapes read no running run's queue again: one round trip.
    again: list[Any] = []
    commands, trips = sent_by(
        client, lambda: again.extend(gauges(client, registry, 3, queues, seen))
    )
    assert again == got
    assert (commands, trips) == (20, 1)


def test_the_gauges_of_5000_queues_and_workflows_are_exact(
    client: Client, registry: Registry, raw: redis.Redis, big: dict[str, Any]
) -> None:
    queues = big["queues"]
    want = _reference(client, raw, queues)
    got = _as_dict(gauges(client, registry, 3, queues))
    assert got == want
    odd = _name("q", 7)
    assert [got[("redflow_queue_depth", (("queue", odd), ("state", s)))] for s in STATES] == [
        1,
        3,
        2,
    ]
    assert got[("redflow_workflow_running", (("workflow", _name("wf", 7)),))] == 3
    # One served queue: every workflow's running runs all the same.
    one = _as_dict(gauges(client, registry, 3, queues[:1]))
    assert {key: v for key, v in want.items() if key in one} == one
    assert sum(1 for name, _ in one if name == "redflow_workflow_running") == WORKFLOWS
    # Capped as the hub serves them: the first 100 by name, the rest summed exactly.
    store = MetricsStore(max_workflows=100)
    store.workflows.update(sorted(wf.name for wf in registry)[:100])
    folded = _as_dict(store.fold(gauges(client, registry, 3, queues)))
    running = {
        dict(labels)["workflow"]: v
        for (name, labels), v in want.items()
        if name == "redflow_workflow_running"
    }
    capped = {
        dict(labels)["workflow"]: v
        for (name, labels), v in folded.items()
        if name == "redflow_workflow_running"
    }
    first = sorted(running)[:100]
    assert capped == {
        **{n: running[n] for n in first},
        OTHER: sum(v for n, v in running.items() if n not in first),
    }
    assert sum(capped.values()) == sum(running.values()) > 0


def test_the_gauges_survive_a_flushed_script_cache_and_keys_of_another_type(
    client: Client, registry: Registry, raw: redis.Redis, big: dict[str, Any]
) -> None:
    """A key of another type in the middle of a chunk hides its own value only;
    a script cache emptied since start-up (a restart, SCRIPT FLUSH) costs one
    EVAL, not the gauges."""
    queues = big["queues"]
    k = client.keys
    raw.delete(k.q_ready("q-2500"))
    raw.set(k.q_ready("q-2500"), "not a redflow key")
    raw.delete(k.q_scheduled("q-2501"))
    raw.set(k.q_scheduled("q-2501"), "not a redflow key")
    raw.delete(k.wf_running("wf-3001"))
    raw.set(k.wf_running("wf-3001"), "not a redflow key")
    want = _reference_without(client, raw, queues)
    raw.script_flush()
    assert _as_dict(gauges(client, registry, 3, queues)) == want
    assert _as_dict(gauges(client, registry, 3, queues)) == want


def _reference_without(client: Client, raw: redis.Redis, queues: tuple[str, ...]) -> Gauges:
    """The reference with the keys of another type set by the test left out."""
    k = client.keys
    saved = {key: raw.get(key) for key in (k.q_ready("q-2500"), k.q_scheduled("q-2501"))}
    saved[k.wf_running("wf-3001")] = raw.get(k.wf_running("wf-3001"))
    for key in saved:
        raw.delete(key)
    try:
        want = _reference(client, raw, queues)
    finally:
        for key, value in saved.items():
            assert value is not None
            raw.set(key, value)
    for state in ("ready", "processing", "scheduled"):
        del want[("redflow_queue_depth", (("queue", "q-2500"), ("state", state)))]
    del want[("redflow_workflow_running", (("workflow", "wf-3001"),))]
    return want


def test_the_gauges_survive_a_flushed_function_library(
    make_client: Callable[..., Client], registry: Registry, raw: redis.Redis, big: dict[str, Any]
) -> None:
    """With ``redis_functions`` the script is a function: a FUNCTION FLUSH answers
    "Function not found", not NOSCRIPT, and cost every gauge of every scrape
    (the library was never loaded again)."""
    client = make_client(redis_functions=True)
    queues = big["queues"]
    want = _reference(client, raw, queues)
    # Redis 6.2 has no functions: the client uses EVALSHA, the script cache is flushed.
    flush = ("FUNCTION", "FLUSH") if client.transport.server_version() >= (7, 0) else None
    try:
        assert _as_dict(gauges(client, registry, 3, queues)) == want
        command(raw, *(flush or ("SCRIPT", "FLUSH")))
        assert _as_dict(gauges(client, registry, 3, queues)) == want
        assert _as_dict(gauges(client, registry, 3, queues)) == want
    finally:
        if flush:
            command(raw, *flush)  # the library outlives FLUSHALL: not left to others
