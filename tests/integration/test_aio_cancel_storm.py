"""The asyncio client under a storm of random cancellations: thousands of
concurrent calls (``arun``, ``run_by_name``, ``arun_many``, ``get_run``,
``result(timeout=...)``, ``cancel``, ``send_event``), each cancelled at a random
point (``task.cancel()`` after a random number of loop steps, or an
``asyncio.timeout`` of a random length), while a neighbour's ``CLIENT PAUSE``
holds the server so that cancellations land while replies are in flight.

Invariants: every call that returns gets its own reply (an id whose run holds
the input that call sent, the run it asked for); a cancelled enqueue made its
run or did not, never two; after ``aclose()`` the client's connections are gone
and no pool connection is left checked out meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, Workflow, define_workflow
from redflow_mp.aio import AsyncClient, create_async_client
from redflow_mp.errors import RedflowError
from redflow_mp.transport import SOCKET_TIMEOUT
from tests.helpers import WorkerPool

pytestmark = pytest.mark.timeout(120)

CALLS = int(os.environ.get("STORM_CALLS", "3000"))
CONCURRENCY = 200
NEIGHBOUR = "storm-neighbour"
RESULT_RUNS = 300


class _Neighbour:
    """Another client of the server that pauses it (``CLIENT PAUSE 50``) now and then."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=10, client_name=NEIGHBOUR)
        self._stop = threading.Event()
        self.pauses = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(random.uniform(0.01, 0.08)):
            self._redis.client_pause(50)  # every command waits 50 ms (ours return at once)
            time.sleep(0.05)
            self.pauses += 1

    def __enter__(self) -> _Neighbour:
        # connected and named before the tests count connections: theirs leave it out
        self._redis.ping()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._redis.close()


async def _cancel_randomly(rng: random.Random, coro: Any) -> tuple[bool, Any]:
    """Run ``coro`` and cancel it at a random point; (finished, its value)."""
    task = asyncio.ensure_future(coro)
    how = rng.random()
    try:
        if how < 0.3:  # not cancelled
            return True, await task
        if how < 0.65:  # after some loop steps
            for _ in range(rng.randint(0, 30)):
                if task.done():
                    break
                await asyncio.sleep(0)
            task.cancel()
            return True, await task
        async with asyncio.timeout(rng.uniform(0, 0.08)):  # a deadline
            return True, await task
    except (asyncio.CancelledError, TimeoutError):
        if not task.done():
            raise
        if task.cancelled():
            return False, None
        return True, task.result()  # it had finished when the deadline came


class _Storm:
    """The calls of the storm, each checking its own reply; ``tags``: every input
    an enqueue sent, "done" (the call returned its id) or "cancelled"."""

    def __init__(self, ac: AsyncClient, workflow: Workflow[Any, Any], seed: int) -> None:
        self.ac = ac
        self.wf = workflow
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.tags: dict[str, str] = {}
        self.known: list[tuple[str, str]] = []  # (run id, its input's tag)
        self.problems: list[str] = []

    async def seed(self) -> None:
        for i in range(20):
            h = await self.wf.arun({"tag": f"seed{i}"}, client=self.ac)
            self.made(h.id, f"seed{i}")

    def made(self, run_id: str, tag: str) -> None:
        self.tags[tag] = "done"
        self.known.append((run_id, tag))

    async def check_state(self, run_id: str, tag: str) -> None:
        state = await self.ac.get_run(run_id)
        if state is None or state.id != run_id or state.input != {"tag": tag}:
            self.problems.append(f"get_run({run_id}) for {tag}: {state!r}")

    async def one(self, n: int) -> None:
        op = self.rng.choice(["arun", "by_name", "many", "get", "result", "cancel", "event"])
        ok = await getattr(self, f"_{op}")(n)
        self.counts[f"{op}:{'ok' if ok else 'cancelled'}"] += 1

    async def _arun(self, n: int) -> bool:
        return await self._enqueue(f"c{n}", self.wf.arun({"tag": f"c{n}"}, client=self.ac))

    async def _by_name(self, n: int) -> bool:
        return await self._enqueue(f"c{n}", self.ac.run_by_name("storm", {"tag": f"c{n}"}))

    async def _enqueue(self, tag: str, call: Any) -> bool:
        self.tags[tag] = "cancelled"
        ok, h = await _cancel_randomly(self.rng, call)
        if ok:
            self.made(h.id, tag)
            await self.check_state(h.id, tag)
        return ok

    async def _many(self, n: int) -> bool:
        tags = [f"c{n}.{j}" for j in range(self.rng.randint(1, 5))]
        for t in tags:
            self.tags[t] = "cancelled"
        call = self.wf.arun_many([{"tag": t} for t in tags], client=self.ac)
        ok, hs = await _cancel_randomly(self.rng, call)
        if ok:
            if len(hs) != len(tags):
                self.problems.append(f"arun_many of {len(tags)} gave {len(hs)}")
            for h, t in zip(hs, tags, strict=False):
                self.made(h.id, t)
                await self.check_state(h.id, t)
        return ok

    async def _get(self, n: int) -> bool:
        run_id, want = self.rng.choice(self.known)
        ok, state = await _cancel_randomly(self.rng, self.ac.get_run(run_id))
        if ok and (state is None or state.id != run_id or state.input != {"tag": want}):
            self.problems.append(f"get_run({run_id}) for {want}: {state!r}")
        return ok

    async def _result(self, n: int) -> bool:
        """Nobody runs the storm's runs: each ends in a timeout or its cancellation."""
        run_id, _ = self.rng.choice(self.known)
        call = self.ac.handle(run_id).result(timeout=self.rng.uniform(0.001, 0.05))
        try:
            ok, out = await _cancel_randomly(self.rng, call)
        except Exception as exc:  # ResultTimeoutError, or the canceled run's error
            if run_id not in str(exc):
                self.problems.append(f"result({run_id}) raised {exc!r}")
            return True
        if ok:
            self.problems.append(f"result({run_id}) returned {out!r}")
        return ok

    async def _cancel(self, n: int) -> bool:
        run_id, _ = self.rng.choice(self.known)
        ok, res = await _cancel_randomly(self.rng, self.ac.cancel_run(run_id))
        if ok and not isinstance(res, bool):
            self.problems.append(f"cancel_run({run_id}) gave {res!r}")
        return ok

    async def _event(self, n: int) -> bool:
        run_id, _ = self.rng.choice(self.known)
        ok, res = await _cancel_randomly(self.rng, self.ac.send_event(run_id, "ping", {"n": n}))
        if ok and res is not True:  # False: the run has ended (canceled by the storm)
            state = await self.ac.get_run(run_id)
            if res is not False or state is None or state.status != "canceled":
                self.problems.append(f"send_event({run_id}) gave {res!r}: {state!r}")
        return ok


def _runs_by_tag(raw: redis.Redis, prefix: str) -> Counter[str]:
    tags: Counter[str] = Counter()
    for key in raw.scan_iter(f"{{{prefix}}}:run:*", count=1000):
        if key.count(b":") == 2:
            tags[json.loads(raw.hget(key, "inputJson") or b"null")["tag"]] += 1
    return tags


def test_random_cancellations_never_hand_a_reply_to_the_wrong_call(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    @define_workflow("storm", queue="nobody", registry=registry)
    def storm(ctx: Context[Any]) -> None:
        return None

    def clients() -> list[str]:
        return [c["id"] for c in raw.client_list() if c["name"] != NEIGHBOUR]

    async def main() -> _Storm:
        others = len(clients())
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        s = _Storm(ac, storm, int(os.environ.get("STORM_SEED", "20261206")))
        await s.seed()
        sem = asyncio.Semaphore(CONCURRENCY)

        async def limited(n: int) -> None:
            async with sem:
                await s.one(n)

        await asyncio.gather(*(limited(n) for n in range(CALLS)))
        pool: Any = ac.redis.connection_pool
        in_use = len(pool._in_use_connections)
        assert in_use == 0, f"{in_use} pool connections left checked out"
        for run_id, tag in s.known[-20:]:  # the client still works, on both paths
            await s.check_state(run_id, tag)
        await ac.aclose()
        deadline = time.monotonic() + 5
        while len(clients()) != others and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(clients()) == others, f"{len(clients())} connections after aclose, not {others}"
        return s

    with _Neighbour(redis_url) as neighbour:
        s = asyncio.run(main())
    assert not s.problems, s.problems[:10]
    # every run's input: a call that returned made one run, a cancelled one at most one
    tags = _runs_by_tag(raw, prefix)
    assert set(tags) <= set(s.tags), set(tags) - set(s.tags)
    twice = [t for t, n in tags.items() if n != 1]
    assert not twice, f"{len(twice)} inputs have more than one run: {twice[:5]}"
    lost = [t for t, how in s.tags.items() if how == "done" and t not in tags]
    assert not lost, f"{len(lost)} returned enqueues have no run: {lost[:5]}"
    cancelled = [t for t, how in s.tags.items() if how == "cancelled"]
    landed = sum(t in tags for t in cancelled)
    print(f"storm: {dict(s.counts)}; {neighbour.pauses} pauses; {landed} cancelled enqueues")
    print(f"of {len(cancelled)} made their run")
    assert sum(v for k, v in s.counts.items() if k.endswith("cancelled")) > CALLS // 4, s.counts
    assert 0 < landed < len(cancelled), (landed, len(cancelled))  # cancelled before and after
    assert neighbour.pauses > 5, neighbour.pauses


def test_aclose_racing_calls_in_flight_fails_them_cleanly_and_closes_every_connection(
    redis_url: str, prefix: str, registry: Registry, raw: redis.Redis
) -> None:
    """``aclose()`` while hundreds of calls are in flight on both paths (the command
    connection and the redis.asyncio pool): each call returns its own reply or
    raises; none hangs; no connection of the client outlives it."""

    @define_workflow("race", queue="nobody", registry=registry)
    def race(ctx: Context[Any]) -> None:
        return None

    def clients() -> list[str]:
        return [c["id"] for c in raw.client_list() if c["name"] != NEIGHBOUR]

    async def one_round(steps: int) -> Counter[str]:
        """One client, 600 calls, ``aclose()`` after ``steps`` loop steps."""
        others = len(clients())
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        seed = await race.arun({"tag": "seed"}, client=ac)

        async def call(n: int) -> Any:
            if n % 3 == 0:
                h = await race.arun({"tag": f"r{n}"}, client=ac)
                state = await ac.get_run(h.id)
                assert state is not None and state.input == {"tag": f"r{n}"}, state
                return h
            if n % 3 == 1:
                state = await ac.get_run(seed.id)
                assert state is not None and state.id == seed.id, state
                return state
            return await ac.send_event(seed.id, "e", n)

        tasks = [asyncio.ensure_future(call(n)) for n in range(600)]
        for _ in range(steps):
            await asyncio.sleep(0)
        await ac.aclose()
        async with asyncio.timeout(SOCKET_TIMEOUT):  # none waits for the reply watchdog
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        kinds = Counter(type(o).__name__ for o in outcomes)
        odd = [o for o in outcomes if isinstance(o, BaseException) and not _closed(o)]
        assert not odd, odd[:3]  # no wrong reply, no other error than the documented one
        deadline = time.monotonic() + 5
        while len(clients()) != others and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = [c for c in raw.client_list() if c["name"] != NEIGHBOUR]
        assert len(left) == others, f"{len(left)} connections after aclose, not {others}: {left}"
        return kinds

    async def main() -> Counter[str]:
        total: Counter[str] = Counter()
        for steps in (0, 1, 3, 10, 30, 60, 120):
            total += await one_round(steps)
        return total

    with _Neighbour(redis_url):  # replies in flight when the close comes
        total = asyncio.run(main())
    print("race:", dict(total))
    assert total["RedflowError"] > 0 and len(total) > 1, total  # the closes landed among calls


def _closed(exc: BaseException) -> bool:
    """The error the guide documents for a call still waiting at ``aclose()``."""
    return isinstance(exc, RedflowError) and "is closed" in str(exc)


def test_a_client_used_from_a_second_event_loop_says_so_and_keeps_its_first_loop_s_replies(
    redis_url: str, prefix: str, registry: Registry
) -> None:
    @define_workflow("loops", queue="nobody", registry=registry)
    def loops(ctx: Context[Any]) -> None:
        return None

    ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)

    async def first() -> str:
        h = await loops.arun({"tag": "first"}, client=ac)
        return h.id

    loop = asyncio.new_event_loop()
    try:
        run_id = loop.run_until_complete(first())

        async def second() -> None:
            with pytest.raises(RedflowError, match="event loop"):
                await ac.get_run(run_id)
            with pytest.raises(RedflowError, match="event loop"):
                await loops.arun({"tag": "second"}, client=ac)

        asyncio.run(second())  # (an aclose() there would close it: its loop is idle)

        async def again() -> None:  # its own loop: the replies are still its own
            state = await ac.get_run(run_id)
            assert state is not None and state.input == {"tag": "first"}, state
            h = await loops.arun({"tag": "third"}, client=ac)
            state = await ac.get_run(h.id)
            assert state is not None and state.input == {"tag": "third"}, state

        loop.run_until_complete(again())
    finally:
        loop.run_until_complete(ac.aclose())
        loop.close()


def test_result_waiters_cancelled_at_random_never_get_another_run_s_output(
    client: Client, registry: Registry, workers: WorkerPool, redis_url: str, prefix: str
) -> None:
    """Runs that do finish, each awaited by one to three ``result()`` calls, some
    of them cancelled at random (they share the run's subscription with the
    others): each waiter that is not cancelled gets its own run's output."""

    @define_workflow("echo-tag", queue="storm-q", registry=registry)
    def echo_tag(ctx: Context[Any]) -> Any:
        return {"echo": ctx.input["tag"]}

    workers.start(queues=["storm-q"])
    rng = random.Random(int(os.environ.get("STORM_SEED", "20261206")))
    counts: Counter[str] = Counter()
    wrong: list[str] = []

    async def wait(h: Any, tag: str) -> None:
        ok, out = await _cancel_randomly(rng, h.result(timeout=30))
        counts["ok" if ok else "cancelled"] += 1
        if ok and out != {"echo": tag}:
            wrong.append(f"{h.id} ({tag}) gave {out!r}")

    async def one(n: int, ac: AsyncClient) -> None:
        h = await echo_tag.arun({"tag": f"w{n}"}, client=ac)
        await asyncio.gather(*(wait(h, f"w{n}") for _ in range(rng.randint(1, 3))))
        assert await h.result(timeout=30) == {"echo": f"w{n}"}  # after the others left

    async def main() -> None:
        ac = create_async_client(redis_url, prefix=prefix, registry=registry, default=False)
        try:
            await asyncio.gather(*(one(n, ac) for n in range(RESULT_RUNS)))
        finally:
            await ac.aclose()

    with _Neighbour(redis_url):
        asyncio.run(main())
    print("waiters:", dict(counts))
    assert not wrong, wrong[:5]
    assert counts["ok"] > 0 and counts["cancelled"] > RESULT_RUNS // 4, counts
