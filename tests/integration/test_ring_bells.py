"""``ring_bells``: a drain (or a child's retirement) wakes the supervisor's idle
children, each blocked on the bells of every queue it serves, without leaving
tokens behind for the next start's children to wake on for nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from redflow_mp import Client
from redflow_mp.maintenance import ring_bells

pytestmark = pytest.mark.timeout(60)


def test_ringing_wakes_every_idle_child_and_leaves_few_tokens(
    raw: redis.Redis, client: Client, redis_url: str
) -> None:
    """Each idle child waits on the bells of all its queues at once (one BLPOP), so
    one token in any of them wakes it. A drain pushed ``count`` tokens into the
    bell of every queue: with 5,000 queues and 2 children it left 9,998 tokens,
    and the next start's children woke 660 times in 12 s for nothing (a BLPOP of
    5,000 keys and a futile claim each), for minutes. Now ``count`` tokens in all,
    and both waiting children still wake."""
    queues = [f"q{i}" for i in range(200)]
    bells = [client.keys.q_bell(q) for q in queues]
    woken: list[Any] = []
    conns = [redis.Redis.from_url(redis_url) for _ in range(2)]
    started = threading.Barrier(3)

    def idle(conn: redis.Redis) -> None:
        started.wait()
        woken.append(conn.blpop(bells, timeout=30))

    threads = [threading.Thread(target=idle, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    started.wait()
    # both BLPOPs blocked before the ring (CLIENT LIST: cmd=blpop)
    for _ in range(3000):
        listing = raw.client_list()
        if sum(1 for c in listing if c.get("cmd") == "blpop") >= 2:
            break
        threading.Event().wait(0.01)
    ring_bells(client, queues, 2)
    for t in threads:
        t.join(30)
    for c in conns:
        c.close()
    assert len(woken) == 2 and all(w is not None for w in woken), woken
    assert sum(int(raw.llen(b)) for b in bells) == 0


def test_a_bell_of_another_type_is_passed_over(raw: redis.Redis, client: Client) -> None:
    """The first queue's bell overwritten with a string (a neighbour's key): the
    tokens go into the next queue's bell, which the idle children wait on too."""
    raw.set(client.keys.q_bell("a"), "neighbour")
    ring_bells(client, ["a", "b", "c"], 3)
    assert raw.get(client.keys.q_bell("a")) == b"neighbour"
    assert raw.llen(client.keys.q_bell("b")) == 3 and not raw.exists(client.keys.q_bell("c"))
    ring_bells(client, [], 3)
    ring_bells(client, ["b"], 0)
    assert raw.llen(client.keys.q_bell("b")) == 3


def _blocked(raw: redis.Redis, name: str) -> int:
    """Connections named ``name`` blocked in a command (CLIENT LIST flag ``b``)."""
    return sum(1 for c in raw.client_list() if c.get("name") == name and "b" in c.get("flags", ""))


def test_a_drain_wakes_its_own_children_when_another_supervisor_waits_on_a_queue(
    raw: redis.Redis, client: Client, redis_url: str
) -> None:
    """Supervisor S1 serves queues a and b with 2 idle children; supervisor S2 on the
    same Redis serves only a, and its 2 idle children blocked first. S1's drain put
    its 2 tokens in a's bell: Redis hands them to the clients blocked longest on a,
    S2's children (which find nothing and wait again), and S1's children slept on
    until their blocking read timed out. The drain's tokens must reach S1's
    children only (their own wake key), leaving none behind in the queue bells."""
    from types import SimpleNamespace

    from redflow_mp import Worker
    from supervisor.arbiterstate import ArbiterState

    s1 = SimpleNamespace(
        client=client, queues=("a", "b"), children={1: None, 2: None}, _out_of_reach=lambda: False
    )
    s1.wake_token = "s1-token"
    try:  # the keys one of S1's children blocks on (its Worker, as child.py makes it)
        mine = Worker(client, queues=["a", "b"], wake_token=s1.wake_token)._bells
    except TypeError:  # no wake_token: the bells of its queues and a private key
        mine = Worker(client, queues=["a", "b"])._bells
    theirs = [client.keys.q_bell("a"), client.keys.worker_wake("s2-child")]
    got: dict[str, list[Any]] = {"s1": [], "s2": []}

    def idle(name: str, keys: list[str]) -> None:
        conn = redis.Redis.from_url(redis_url)
        conn.client_setname(name)
        try:
            got[name].append(conn.blpop(keys, timeout=0))
        finally:
            conn.close()

    threads = [threading.Thread(target=idle, args=("s2", theirs)) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(3000):  # S2's children block first (the longest waiting)
        if _blocked(raw, "s2") == 2:
            break
        threading.Event().wait(0.01)
    mine_threads = [threading.Thread(target=idle, args=("s1", mine)) for _ in range(2)]
    for t in mine_threads:
        t.start()
    for _ in range(3000):
        if _blocked(raw, "s1") == 2:
            break
        threading.Event().wait(0.01)
    ArbiterState._ring_bells(s1)  # type: ignore[arg-type]
    still_blocked = _blocked(raw, "s1")
    # release whoever still waits (CLIENT UNBLOCK: the BLPOP returns None)
    for c in raw.client_list():
        if c.get("name") in ("s1", "s2") and "b" in c.get("flags", ""):
            raw.client_unblock(int(c["id"]))
    for t in threads + mine_threads:
        t.join(30)
    assert still_blocked == 0, got
    assert [w is not None for w in got["s1"]] == [True, True], got
    assert sum(int(raw.llen(client.keys.q_bell(q))) for q in ("a", "b")) == 0


def test_a_supervisors_wake_key_reaches_its_children_on_every_shard(
    raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    """With shards, child i blocks on shard i mod shards (its home): the drain's
    tokens go into the supervisor's wake key of every shard, expiring."""
    from redflow_mp import Registry, Worker
    from redflow_mp.maintenance import wake_workers
    from tests.sharding import sharded_client

    with sharded_client(redis_url, prefix, Registry(), 3) as sharded:
        workers = [
            Worker(sharded, queues=["a", "b"], home_shard=i, wake_token="sup") for i in range(3)
        ]
        wake_workers(sharded, "sup", 2)
        for w in workers:
            own = w._bells[-1]
            assert own == w.home.keys.worker_wake("sup")
            assert raw.llen(own) == 2 and 0 < raw.pttl(own) <= 60_000
        assert len({w._bells[-1] for w in workers}) == 3
        assert not any(raw.exists(k) for w in workers for k in w._bells[:-1])
