"""Paged durable waits under faults (``--module tests.faults.workload_paged``,
loaded next to ``workload.py`` and ``workload_waits.py``, same queue).

``fx-pparent`` fans out over ``n`` children (``ctx.step.run_workflows``); past
``SUSPEND_PAGE`` (1,000) children its suspension is paged: ``await_children``
a page a call, then ``suspend_run`` (``wait_scripts.py``). The process executing
it SIGKILLs itself at named points of that registration, from a wrapper of
``Scripts.run`` installed at import (in the supervisor's parent, before it forks):

    before:<script>[:<page>]   just before the call is sent
    during:<script>[:<page>]   ``delay_us`` after it is sent (a thread), the
                               call in flight or its reply just read
    after:<script>[:<page>]    once its reply was read

``<script>`` is ``await_children`` (``<page>`` counts from 1) or ``suspend_run``.
An input's ``points`` are fired in order, one per execution (each once per run,
marked by a file in the ledger directory, logged as a ``kill`` fault first).
Each ``before:`` point reached leaves a file ``pcall-<run>-<point>`` (``:`` as
``-``) in the ledger directory: a case injects its fault once it exists.

``fail``: the child of index ``fail_child`` fails, released by the parent's
first execution at the point ``fail`` (same syntax); the parent waits there
until the child's run is ``failed``, then goes on (the failure lands while the
pages are registered). The parent logs ``paged-timer`` with the run's
``timers`` score after each ``suspend_run`` reply: a failure seen by the
registration needs no recheck timer.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from redflow_mp import (
    Context,
    RunCanceledError,
    RunFailedError,
    define_workflow,
    get_default_client,
)
from redflow_mp.scripts import Scripts
from redflow_mp.wait_scripts import SUSPEND_PAGE
from tests.faults import ledger
from tests.faults.workload import QUEUE, RUN_TIMEOUT_S, WAIT_TIMEOUT_S, instrumented, step
from tests.faults.workload_waits import SLOTS, _arm, _input, _marker, wait_step

# run id -> (kill points, delay_us, fail point, fail child index); per process
_PLANS: dict[str, tuple[list[str], int, str | None, int]] = {}
_PAGE: dict[str, int] = {}
_original_run = Scripts.run


def _release_key(parent: str) -> str:
    return f"fxpaged:release:{parent}"


def _point(name: str, args: tuple[Any, ...], when: str) -> tuple[str, str] | None:
    """(run id, point name) of this script call of a planned run, else None."""
    if name not in ("await_children", "suspend_run") or len(args) < 4:
        return None
    run_id = str(args[1])
    if run_id not in _PLANS:
        return None
    if name == "suspend_run":
        return run_id, f"{when}:suspend_run"
    if when == "before" and str(args[3]) == "1":
        _PAGE[run_id] = 0
    if when == "before":
        _PAGE[run_id] = _PAGE.get(run_id, 0) + 1
    return run_id, f"{when}:await_children:{_PAGE.get(run_id, 0)}"


def _kill_now(run_id: str, where: str) -> None:
    ledger.append("fault", kind="kill", pids=[os.getpid()], run=run_id, where=where)
    os.kill(os.getpid(), signal.SIGKILL)


def _fire(run_id: str, where: str, args: tuple[Any, ...]) -> None:
    points, delay_us, fail, fail_child = _PLANS[run_id]
    if fail == where and _marker(f"pfail-{run_id}"):
        _release_child(run_id, fail_child, args)
    for idx, point in enumerate(points):
        if os.path.exists(os.path.join(os.environ.get(ledger.ENV, ""), f"pkill-{run_id}-{idx}")):
            continue  # fired in an earlier execution
        if point != where or not _marker(f"pkill-{run_id}-{idx}"):
            return
        if where.startswith("during:"):

            def later() -> None:
                time.sleep(delay_us / 1e6)
                _kill_now(run_id, where)

            threading.Thread(target=later, name="faults-kill", daemon=True).start()
        else:
            _kill_now(run_id, where)
        return


def _release_child(parent: str, index: int, args: tuple[Any, ...]) -> None:
    """Let the failing child fail; return once its run is ``failed``. A child of
        index past the first page (not started yet, 1,000 runs ahead of it) is canceled
        instead, at ``before:await_children:2`` (``args``: that page's call), before its
    page registers it: the same path of the registration (a child ``failed`` or
    ``canceled``)."""
    client = get_default_client()
    assert client is not None
    if index >= SUSPEND_PAGE:
        page = [str(a) for a in args[5:]]
        with client.redis.pipeline(transaction=False) as pipe:
            for cid in page:
                pipe.hget(client.keys.run(cid), "inputJson")
            inputs = pipe.execute()
        child = next(c for c, v in zip(page, inputs, strict=True) if v and b"release" in v)
        assert client.cancel_run(child, "fails while its parent registers its pages")
        ledger.append("paged-failed", run=parent, child=child, index=index, how="canceled")
        return
    client.redis.rpush(_release_key(parent), "go")
    child = _blpop(f"fxpaged:failed:{parent}")
    deadline = time.monotonic() + 60
    while client.redis.hget(client.keys.run(child), "status") != b"failed":
        assert time.monotonic() < deadline, f"child {index} of {parent} never failed"
        time.sleep(0.005)
    ledger.append("paged-failed", run=parent, child=child, index=index)


def _blpop(key: str) -> str:
    """BLPOP ``key`` for up to 60 s, 2 s a call (under the client's socket timeout)."""
    client = get_default_client()
    assert client is not None
    deadline = time.monotonic() + 60
    while True:
        got = client.redis.blpop([key], timeout=2)
        if got:
            value = got[1]
            return value.decode() if isinstance(value, bytes) else str(value)
        assert time.monotonic() < deadline, f"nothing in {key}"


def _run(
    self: Scripts,
    name: str,
    keys: tuple[str, ...],
    args: tuple[Any, ...],
    *,
    retry: bool,
    fresh: bool = True,
) -> Any:
    before = _point(name, args, "before")
    if before is None:
        return _original_run(self, name, keys, args, retry=retry, fresh=fresh)
    run_id, where = before
    _marker(f"pcall-{run_id}-{where.replace(':', '-')}")  # (P2 faults on it)
    _fire(run_id, where, args)
    _fire(run_id, where.replace("before:", "during:", 1), args)
    reply = _original_run(self, name, keys, args, retry=retry, fresh=fresh)
    _fire(run_id, where.replace("before:", "after:", 1), args)
    if name == "suspend_run":
        client = get_default_client()
        assert client is not None
        score = client.redis.zscore(client.keys.timers, run_id)
        ledger.append("paged-timer", run=run_id, reply=str(reply[0]), timer=score)
    return reply


Scripts.run = _run  # type: ignore[method-assign]


@define_workflow("fx-pchild", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def pchild(ctx: Context[Any]) -> dict[str, Any]:
    """One step; returns its index. ``release``: block until the parent lets it
    fail (see the module doc)."""
    data = _input(ctx)
    if data.get("release"):
        client = get_default_client()
        assert client is not None
        _blpop(_release_key(data["release"]))
        client.redis.rpush(f"fxpaged:failed:{data['release']}", ctx.run.id)
        raise RuntimeError(f"child {data['i']} fails on purpose")
    out = step(ctx, "c1")
    _arm(ctx, ("finish",))
    return {"i": data["i"], "exec": out["exec"]}


@define_workflow("fx-pparent", queue=QUEUE, max_concurrency=SLOTS, timeout=RUN_TIMEOUT_S)
@instrumented
def pparent(ctx: Context[Any]) -> Any:
    """Waits for ``n`` fx-pchild runs (see the module doc); returns their indexes
    in order, or ``{"failed": <error>}`` when the wait step failed."""
    data = _input(ctx)
    n = int(data["n"])
    fail_child = int(data.get("fail_child", -1))
    _PLANS[ctx.run.id] = (
        list(data.get("points", [])),
        int(data.get("delay_us", 0)),
        data.get("fail"),
        fail_child,
    )
    kills = {int(k): int(v) for k, v in dict(data.get("child_kills", {})).items()}
    inputs: list[dict[str, Any]] = []
    for i in range(n):
        one: dict[str, Any] = {"i": i}
        if i == fail_child:
            one["release"] = ctx.run.id
        elif i in kills:
            one.update(kill="finish", delay_us=kills[i])
        inputs.append(one)
    try:
        got = wait_step(
            ctx, "kids", "children",
            lambda: ctx.step.run_workflows("kids", pchild, inputs, timeout=WAIT_TIMEOUT_S),
        )  # fmt: skip
    except (RunFailedError, RunCanceledError) as exc:
        step(ctx, "after")
        return {"failed": str(exc)[:200]}
    step(ctx, "after")
    return [g["i"] if isinstance(g, dict) else g for g in got]


PAGED_WORKFLOWS = {wf.name: wf for wf in (pchild, pparent)}
