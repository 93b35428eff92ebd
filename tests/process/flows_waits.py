"""Workflows of the durable-wait process tests (issue 12), run under a real
supervisor. Handlers report to the test through keys under the test's prefix:
``exec:now``/``exec:max`` (handler executions in progress, and the most seen at
once), ``execs:<run>`` (executions of a run) and ``done:<run>`` (its final step).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from redflow_mp import Context, define_workflow, get_default_client

_ENTER = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


def _r() -> tuple[Any, str]:
    client = get_default_client()
    assert client is not None
    return client.redis, client.keys.tag


# The run whose handler this process executes now, and the last one it executed:
# a kill timer fires only while its own run is executing here or is being
# suspended or finished (the handler returned, no other handler started).
_current: str | None = None
_last: str | None = None


@contextlib.contextmanager
def _executing(ctx: Context[Any]) -> Iterator[tuple[Any, str]]:
    """Count this handler execution (also one that ends by suspending)."""
    global _current, _last
    r, tag = _r()
    _current = ctx.run.id
    r.eval(_ENTER, 2, f"{tag}:exec:now", f"{tag}:exec:max")
    r.incr(f"{tag}:execs:{ctx.run.id}")
    try:
        yield r, tag
    finally:
        r.decr(f"{tag}:exec:now")
        _current, _last = None, ctx.run.id


@define_workflow("pw-child", queue="w", max_concurrency=1000)
def pw_child(ctx: Context[Any]) -> int:
    with _executing(ctx):
        time.sleep(0.005)
        return int(ctx.input) * 2


@define_workflow("pw-parent", queue="w", max_concurrency=1000)
def pw_parent(ctx: Context[Any]) -> int:
    with _executing(ctx) as (r, tag):
        out = ctx.step.run_workflow("child", pw_child, ctx.input)
        ctx.step.run("done", lambda: r.incr(f"{tag}:done:{ctx.run.id}"))
        return int(out)


@define_workflow("pw-sleeper", queue="w", max_concurrency=1000)
def pw_sleeper(ctx: Context[Any]) -> str:
    with _executing(ctx) as (r, tag):
        ctx.step.sleep("nap", float(ctx.input))
        ctx.step.run("done", lambda: r.incr(f"{tag}:done:{ctx.run.id}"))
        return "slept"


@define_workflow("pw-listener", queue="w", max_concurrency=1000)
def pw_listener(ctx: Context[Any]) -> Any:
    with _executing(ctx) as (r, tag):
        got = ctx.step.wait_for_event("ev", "go")
        ctx.step.run("done", lambda: r.incr(f"{tag}:done:{ctx.run.id}"))
        return got


def _kill_later(run_id: str, delay: float) -> None:
    """SIGKILL this process after ``delay`` s if it still executes, suspends or
    finishes ``run_id`` (not once it moved on to another run's handler)."""

    def mine() -> bool:
        return _current == run_id or (_current is None and _last == run_id)

    def fire() -> None:
        time.sleep(delay)
        if mine():
            r, tag = _r()
            r.incr(f"{tag}:kills:{run_id}")  # may count one that does not fire below
            if mine():  # again: no I/O between this check and the kill
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=fire, daemon=True).start()


@define_workflow("pw-killed", queue="w", max_concurrency=1000)
def pw_killed(ctx: Context[Any]) -> str:
    """Its process is SIGKILLed once, about when it suspends (first execution,
    even ``ctx.input``) or when it resumes (second, odd): ``ctx.input`` is the
    delay in ms."""
    with _executing(ctx) as (r, tag):
        n = int(r.get(f"{tag}:execs:{ctx.run.id}") or 0)
        delay = int(ctx.input)
        if n == 1 + delay % 2 and r.set(f"{tag}:killed:{ctx.run.id}", n, nx=True):
            _kill_later(ctx.run.id, delay / 1000.0)
        ctx.step.sleep("nap", 0.3)
        ctx.step.run("done", lambda: r.incr(f"{tag}:done:{ctx.run.id}"))
        return "ok"


def _spin(seconds: float) -> int:
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


@define_workflow("pw-cpu", queue="w", max_concurrency=1000)
def pw_cpu(ctx: Context[Any]) -> int:
    with _executing(ctx):
        return int(ctx.step.run("spin", _spin, float(ctx.input))) * 0


@define_workflow("pw-fan", queue="w", max_concurrency=1000)
def pw_fan(ctx: Context[Any]) -> list[int]:
    with _executing(ctx):
        return ctx.step.run_workflows("fan", pw_cpu, [ctx.input] * 4)


@define_workflow("pw-dying-child", queue="w", max_concurrency=1000)
def pw_dying_child(ctx: Context[Any]) -> int:
    """Kills its process about when its finish is sent (once per run): ``ctx.input``
    is the delay in ms."""
    with _executing(ctx) as (r, tag):
        if r.set(f"{tag}:killed:{ctx.run.id}", 1, nx=True):
            _kill_later(ctx.run.id, int(ctx.input) / 1000.0)
        return int(ctx.input)


@define_workflow("pw-awaiter", queue="w", max_concurrency=1000)
def pw_awaiter(ctx: Context[Any]) -> int:
    with _executing(ctx) as (r, tag):
        out = ctx.step.run_workflow("child", pw_dying_child, ctx.input)
        ctx.step.run("done", lambda: r.incr(f"{tag}:done:{ctx.run.id}"))
        return int(out)


@define_workflow("pw-gate", queue="w", max_concurrency=1000)
def pw_gate(ctx: Context[Any]) -> str:
    with _executing(ctx):
        return str(ctx.step.wait_for_event("open", "open"))


@define_workflow("pw-sharer", queue="w", max_concurrency=1000)
def pw_sharer(ctx: Context[Any]) -> str:
    """Awaits one child shared by every parent (one idempotency key)."""
    with _executing(ctx) as (r, tag):
        got = ctx.step.run_workflow("gate", pw_gate, None, idempotency_key=str(ctx.input))
        ctx.step.run("done", lambda: r.incr(f"{tag}:done:{ctx.run.id}"))
        return str(got)
