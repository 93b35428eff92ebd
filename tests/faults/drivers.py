"""The threads that drive and watch a fault case's workload: the producer of
runs, the event sender, the progress sampler and the live wait checker, and
``wait_for``, the polling every wait of the fault cases goes through.

Nothing here sleeps to synchronise: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from redflow_mp import Client, RedflowError, create_client
from tests.faults import invariants, ledger
from tests.faults.workload import WORKFLOWS
from tests.faults.workload_counted import COUNTED_WORKFLOWS
from tests.faults.workload_paged import PAGED_WORKFLOWS
from tests.faults.workload_waits import WAIT_WORKFLOWS
from tests.helpers import texts, wait_until

__all__ = [
    "ALL_WORKFLOWS",
    "NETWORK",
    "TERMINAL",
    "Plan",
    "Producer",
    "Progress",
    "Sender",
    "WaitWatcher",
    "wait_for",
]

ALL_WORKFLOWS = {**WORKFLOWS, **WAIT_WORKFLOWS, **PAGED_WORKFLOWS, **COUNTED_WORKFLOWS}

TERMINAL = (b"succeeded", b"failed", b"canceled")
NETWORK = (redis.ConnectionError, redis.TimeoutError, OSError)


def wait_for(
    predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.02
) -> Any:
    """:func:`tests.helpers.wait_until` of ``predicate``, a network error read as
    not yet (a fault case's Redis may be down): the truthy value, or
    AssertionError at the deadline."""

    def attempt() -> Any:
        try:
            return predicate()
        except NETWORK:
            return None

    return wait_until(attempt, timeout, interval, message=message)


class Progress:
    """Samples the number of finished runs every 20 ms (own connection, survives outages)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.keys = [f"{{{prefix}}}:runs:status:{s}" for s in ("succeeded", "failed", "canceled")]
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-progress", daemon=True)

    def start(self) -> Progress:
        self._thread.start()
        return self

    def _loop(self) -> None:
        r = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while not self._stop.wait(0.02):
                try:
                    with r.pipeline(transaction=False) as pipe:
                        for k in self.keys:
                            pipe.zcard(k)
                        done = sum(pipe.execute())
                except (*NETWORK, redis.ResponseError):
                    continue
                self.samples.append((time.monotonic(), done))
        finally:
            r.close()

    def done(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def first_progress_after(self, t: float) -> float | None:
        """Seconds from ``t`` until the finished count first rose above its value at ``t``."""
        base: int | None = None
        for at, done in self.samples:
            if at <= t:
                base = done
                continue
            if base is None:
                base = done
                continue
            if done > base:
                return at - t
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Plan:
    """The workload: ``n`` runs over the workflows, some with idempotency keys."""

    n: int
    seed: int = 7
    mix: Sequence[tuple[str, float]] = (
        ("fx-chain", 0.5),
        ("fx-limited", 0.15),
        ("fx-parent", 0.15),
        ("fx-flaky", 0.15),
        ("fx-slow", 0.05),
    )
    keyed: float = 0.3
    duplicate: float = 0.05

    def items(self) -> list[tuple[str, Any, str | None]]:
        rng = random.Random(self.seed)
        names = [name for name, _ in self.mix]
        weights = [w for _, w in self.mix]
        out: list[tuple[str, Any, str | None]] = []
        keys: list[tuple[str, str]] = []
        key: str | None
        for i in range(self.n):
            if keys and rng.random() < self.duplicate:
                wf, key = rng.choice(keys)
                out.append((wf, i, key))
                continue
            wf = rng.choices(names, weights)[0]
            key = f"k-{self.seed}-{i}" if rng.random() < self.keyed else None
            if key:
                keys.append((wf, key))
            out.append((wf, i, key))
        return out


class Producer:
    """Enqueues a :class:`Plan` from a thread at ``rate`` runs/s, retrying through
    outages; each acknowledged run id goes to the ledger (``enqueued``)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        plan: Plan,
        ledger_dir: Path,
        rate: float,
        timeout: float | None = None,
        items: Sequence[tuple[str, Any, str | None]] | None = None,
        shards: int = 1,
    ) -> None:
        self.client: Client = create_client(url, prefix=prefix, default=False, shards=shards)
        self.timeout = timeout
        self.plan = plan
        self.items = list(items) if items is not None else plan.items()
        self.ledger = ledger.Ledger(ledger_dir)
        self.rate = rate
        self.ids: list[str] = []
        self.errors: list[str] = []
        self.retries = 0
        self._thread = threading.Thread(target=self._loop, name="faults-producer", daemon=True)
        self._stop = threading.Event()

    def start(self) -> Producer:
        self._thread.start()
        return self

    def _enqueue(self, wf: str, value: Any, key: str | None) -> str:
        delay = 0.05
        deadline = time.monotonic() + 120
        while True:
            try:
                return self.client.enqueue_workflow(
                    ALL_WORKFLOWS[wf], value, idempotency_key=key, timeout=self.timeout
                ).id
            except (*NETWORK, RedflowError) as exc:
                self.retries += 1
                if len(self.errors) < 50:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if time.monotonic() > deadline or self._stop.is_set():
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _loop(self) -> None:
        started = time.monotonic()
        for i, (wf, value, key) in enumerate(self.items):
            if self._stop.is_set():
                return
            due = started + i / self.rate if self.rate > 0 else started
            pause = due - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                return
            run_id = self._enqueue(wf, value, key)
            self.ledger.append("enqueued", run=run_id, wf=wf, key=key)
            self.ids.append(run_id)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish enqueueing in time"
        assert len(self.ids) == len(self.items), f"enqueued {len(self.ids)} of {len(self.items)}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()
        self.ledger.close()


class Sender:
    """Sends events from a thread, retrying through outages; logs each acknowledged
    ``send_event`` to the ledger (``event-sent``, the payload's event id ``eid``).
    A send whose reply was lost is retried with the same payload (``eid``)."""

    def __init__(self, url: str, prefix: str, ledger_dir: Path, rate: float = 0.0) -> None:
        self.client: Client = create_client(url, prefix=prefix, default=False)
        self.ledger = ledger.Ledger(ledger_dir)
        self.pause = 1.0 / rate if rate > 0 else 0.0
        self.queue: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self.sent = 0
        self.refused: list[str] = []
        self.retries = 0
        self._thread = threading.Thread(target=self._loop, name="faults-sender", daemon=True)
        self._thread.start()

    def put(self, run_id: str, event: str, eid: str) -> None:
        self.queue.put((run_id, event, eid))

    def _send(self, run_id: str, event: str, eid: str) -> bool:
        """send_event, retried through outages. send_event is not idempotent and
        raises after a lost reply: before sending again, look whether the event
        was stored (pending, or consumed by a step) and do not send it twice."""
        delay = 0.05
        deadline = time.monotonic() + 120
        unsure = False
        while True:
            try:
                if unsure and self._stored(run_id, event, eid):
                    return True
                return self.client.send_event(run_id, event, {"eid": eid})
            except (*NETWORK, RedflowError):
                self.retries += 1
                unsure = True
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _stored(self, run_id: str, event: str, eid: str) -> bool:
        r = self.client.redis
        keys = self.client.keys
        needle = f'"eid":"{eid}"'
        if any(needle in item for item in texts(r.lrange(keys.run_events(run_id, event), 0, -1))):
            return True
        escaped = needle.replace('"', '\\"')  # the payload as a string inside a step record
        return any(escaped in rec for rec in texts(r.hvals(keys.run_steps(run_id))))

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                run_id, event, eid = item
                if self.pause:
                    time.sleep(self.pause)  # pacing (a backlog across a fault)
                acked = self._send(run_id, event, eid)
                self.ledger.append("event-sent", run=run_id, event=event, eid=eid, acked=acked)
                if acked:
                    self.sent += 1
                else:
                    self.refused.append(eid)
            finally:
                self.queue.task_done()

    def drain(self, timeout: float) -> None:
        """Wait until every event put so far was sent (or refused)."""
        wait_for(lambda: self.queue.unfinished_tasks == 0, timeout, "the events to be sent")

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(10)
        self.client.close()
        self.ledger.close()


class WaitWatcher:
    """Runs the checker's live I9 (:func:`invariants.check_waits`) every 0.2 s:
    no suspended run whose condition holds stays suspended past the bound.
    ``paused()`` covers a fault (nothing can wake during it) and the bound after it."""

    def __init__(self, url: str, prefix: str, bound_ms: int = invariants.WAKE_BOUND_MS) -> None:
        self.url = url
        self.prefix = prefix
        self.bound_ms = bound_ms
        self.violations: dict[str, str] = {}
        self.snapshots = 0
        self.most_suspended = 0
        self._quiet_until = 0.0
        self._pauses = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="faults-waits", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            self._quiet_until = time.monotonic() + self.bound_ms / 1000.0

    def _loop(self) -> None:
        r = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        key = f"{{{self.prefix}}}:runs:status:suspended"
        try:
            interval = 0.2
            while not self._stop.wait(interval):
                if self._pauses or time.monotonic() < self._quiet_until:
                    continue
                began = time.monotonic()
                try:
                    self.most_suspended = max(self.most_suspended, int(r.zcard(key)))
                    found = invariants.check_waits(r, self.prefix, self.bound_ms)
                except (*NETWORK, redis.ResponseError):
                    continue
                # with many runs suspended a snapshot is costly: at most a third of the time
                interval = max(0.2, 2 * (time.monotonic() - began))
                if self._pauses or time.monotonic() < self._quiet_until:
                    continue  # a fault began during the snapshot
                self.snapshots += 1
                for text in found:
                    run_id = text.split(" run ", 1)[-1].split()[0].rstrip(":")
                    self.violations.setdefault(run_id, text)
        finally:
            r.close()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return list(self.violations.values())
