"""Workflows the process tests run under a real ``redflow-supervisor``.

Handlers talk back to the test through Redis keys under the test's prefix
(``ledger:*`` counters, pids, spans), using the child's default client.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
from typing import Any

from redflow_mp import Context, Retries, define_workflow, get_default_client


def _r() -> tuple[Any, str]:
    client = get_default_client()
    assert client is not None
    return client.redis, client.keys.tag


@define_workflow("multi-step", queue="p", max_concurrency=10)
def multi_step(ctx: Context[Any]) -> str:
    """Three steps; the first execution of step two parks until it is killed."""
    r, tag = _r()
    ctx.step.run("one", lambda: r.incr(f"{tag}:ledger:one"))

    def two() -> int:
        n = int(r.incr(f"{tag}:ledger:two"))
        if n == 1:
            r.set(f"{tag}:victim", os.getpid())
            time.sleep(120)
        return n

    ctx.step.run("two", two)
    ctx.step.run("three", lambda: r.incr(f"{tag}:ledger:three"))
    return "done"


def _record_failure(ctx: Any) -> None:
    """on_failure of the workflows the supervisor fails itself: runs in a process
    the supervisor forks for it, with a default client like a worker's."""
    r, tag = _r()
    r.rpush(f"{tag}:on-failure:{ctx.run.id}", f"{ctx.error.type} {os.getpid()} {ctx.input}")


@define_workflow("suicide", queue="p", max_concurrency=10, on_failure=_record_failure)
def suicide(ctx: Context[Any]) -> None:
    r, tag = _r()
    r.incr(f"{tag}:ledger:suicide")
    os.kill(os.getpid(), signal.SIGKILL)


@define_workflow("fickle-pill", queue="p", max_concurrency=10)
def fickle_pill(ctx: Context[Any]) -> None:
    """A poison pill whose step name differs at each execution (a timestamp, a
    uuid in it): each one completes a step nobody recorded before, then kills
    its worker. That is no progress: a replay never reaches the steps before."""
    r, tag = _r()
    n = int(r.incr(f"{tag}:ledger:fickle"))
    ctx.step.run(f"fetch-{n}-{time.time_ns()}", lambda: n)
    os.kill(os.getpid(), signal.SIGKILL)


@define_workflow("long-haul", queue="p", max_concurrency=10)
def long_haul(ctx: Context[Any]) -> str:
    """Four stages, each a step and a sleep. The first execution of each stage's
    step parks until the test SIGKILLs its process (an OOM kill, say): four
    crashes in the run's life, each after the stage before it completed."""
    r, tag = _r()
    for i in range(4):

        def work(i: int = i) -> int:
            n = int(r.incr(f"{tag}:ledger:haul-{i}"))
            if n == 1:
                r.set(f"{tag}:victim-{i}", os.getpid())
                time.sleep(120)
            return n

        ctx.step.run(f"work-{i}", work)
        ctx.step.sleep(f"rest-{i}", 0.1)
    return "done"


@define_workflow("pid", queue="p", max_concurrency=100)
def pid(ctx: Context[Any]) -> int:
    return os.getpid()


@define_workflow("loaded-modules", queue="p", max_concurrency=100)
def loaded_modules(ctx: Context[Any]) -> list[str]:
    """The OpenTelemetry and psutil modules this child has: those its supervisor
    imported before forking it, and any it imported itself since."""
    return sorted(m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "psutil"))


@define_workflow("sleepy", queue="p", max_concurrency=100)
def sleepy(ctx: Context[Any]) -> dict[str, Any]:
    r, tag = _r()
    r.set(f"{tag}:sleepy-started", os.getpid())
    time.sleep(float(ctx.input))
    return {"slept": ctx.input, "pid": os.getpid()}


@define_workflow("counted-sleep", queue="p", max_concurrency=100)
def counted_sleep(ctx: Context[float]) -> int:
    """Counts its executions (``ledger:counted-sleep``), sleeps ``input`` seconds
    without touching Redis, then returns its pid."""
    r, tag = _r()
    r.incr(f"{tag}:ledger:counted-sleep")
    time.sleep(float(ctx.input))
    return os.getpid()


@define_workflow("gil", queue="p", max_concurrency=10)
def gil(ctx: Context[Any]) -> bool:
    """Holds the GIL in the regex engine for several lease periods."""
    r, tag = _r()
    r.incr(f"{tag}:ledger:gil")
    return re.match(r"(a+)+$", "a" * int(ctx.input) + "b") is None


@define_workflow("limited", queue="lim", max_concurrency=2)
def limited(ctx: Context[Any]) -> None:
    r, tag = _r()
    start = time.time()
    time.sleep(0.05)
    r.rpush(f"{tag}:spans", json.dumps([start, time.time()]))


@define_workflow("spin", queue="p", max_concurrency=10)
def spin(ctx: Context[Any]) -> None:
    """CPU-bound and deaf to cancellation."""
    r, tag = _r()
    r.set(f"{tag}:spin-started", os.getpid())
    x = 0
    while True:
        x += 1


@define_workflow(
    "overtime",
    queue="p",
    max_concurrency=10,
    timeout=1.0,
    retries=Retries(max_attempts=2, initial_delay=0.1, jitter=0),
    on_failure=_record_failure,
)
def overtime(ctx: Context[Any]) -> None:
    r, tag = _r()
    r.incr(f"{tag}:ledger:overtime")
    time.sleep(60)


@define_workflow("overtime-stalled", queue="p", max_concurrency=10, timeout=3.0)
def overtime_stalled(ctx: Context[Any]) -> None:
    """Past its timeout (3 s) in an orphan while Redis is stalled (test_orphans)."""
    r, tag = _r()
    r.set(f"{tag}:overtime-stalled", os.getpid())
    time.sleep(60)


_hog: list[bytes] = []


@define_workflow("hog", queue="p", max_concurrency=10)
def hog(ctx: Context[Any]) -> int:
    _hog.append(b"x" * (int(ctx.input) * 1024 * 1024))
    return os.getpid()


_user_log = logging.getLogger("user.code")


@define_workflow("chatty", queue="p", max_concurrency=10)
def chatty(ctx: Context[Any]) -> str:
    def talk() -> str:
        _user_log.info("hello from inside a step")
        return "said"

    ctx.logger.info("starting to talk")
    return str(ctx.step.run("talk", talk))


@define_workflow("broken", queue="p", max_concurrency=10)
def broken(ctx: Context[Any]) -> None:
    ctx.step.run("fine", lambda: 1)
    raise ValueError("broken on purpose")


# A name past the status board's 103 bytes: the supervisor must act on the full name.
LONG_NAME = "overtime-long-" + "x" * 286


@define_workflow(
    LONG_NAME,
    queue="p",
    max_concurrency=10,
    timeout=1.0,
    retries=Retries(max_attempts=2, initial_delay=0.1, jitter=0),
    on_failure=_record_failure,
)
def overtime_long(ctx: Context[Any]) -> None:
    r, tag = _r()
    r.incr(f"{tag}:ledger:overtime-long")
    time.sleep(60)


@define_workflow("gil-overtime", queue="p", max_concurrency=1, timeout=1.0)
def gil_overtime(ctx: Context[str]) -> int:
    """Notes each entry (pid) in the file named by its input, then holds the GIL in
    one C call far longer than its timeout plus kill_grace: only SIGKILL stops it."""
    with open(ctx.input, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return sum(range(10**11))


@define_workflow("nap", queue="p", max_concurrency=100)
def nap(ctx: Context[float]) -> int:
    """Sleeps ``input`` seconds without touching Redis (so a Redis that refuses
    writes cannot fail the handler itself), then returns its pid."""
    time.sleep(float(ctx.input))
    return os.getpid()


@define_workflow("spoiled-wait", queue="p", max_concurrency=10)
def spoiled_wait(ctx: Context[Any]) -> Any:
    """Its first execution turns ``timers`` into a string, then waits (with a
    timeout: a timer) for the event ``go``: Redis refuses the suspend (a key of
    the wrong type) each time it is sent."""
    r, tag = _r()
    client = get_default_client()
    assert client is not None
    if r.set(f"{tag}:spoiled:{ctx.run.id}", 1, nx=True):
        r.set(client.keys.timers, "not a redflow key")
    return ctx.step.wait_for_event("ev", "go", timeout=600)


@define_workflow("exits-in-step", queue="p", max_concurrency=10)
def exits_in_step(ctx: Context[Any]) -> str:
    """A step that ends with ``sys.exit`` (a click command's ``main()`` does, even on
    success): the step's own outcome, not the worker's end."""
    r, tag = _r()

    def cli() -> None:
        r.incr(f"{tag}:ledger:exits")
        raise SystemExit(ctx.input)

    try:
        ctx.step.run("cli", cli)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"
