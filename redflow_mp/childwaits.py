"""Waiting for child runs: ``run_workflow`` / ``run_workflows`` as durable waits.

Owns :class:`ChildWaits`: the children wait step (start the children once,
under idempotency keys derived from the run and the step; read their states in
one round trip a shard; resume the children this run's own cancel canceled
when the run was resumed; fail the step on the first failed child, in input
order), and the deadlock rule (children of this run's own workflow that can
never start because every concurrency slot is held by runs that wait).
``suspend_run.lua`` applies the same rule with the same limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from . import codec, tracing
from .cascade import positions_by_shard
from .errors import (
    RedflowError,
    RunCanceledError,
    StepTimeoutError,
    UnknownWorkflowError,
    WaitDeadlockError,
    run_failed,
)
from .ids import new_token
from .keys import step_workflow_key
from .options import RunOptions, check_name
from .registry import Workflow
from .waitbase import ChildOutputs, PendingWait, WaitBase, Waiting, check_wait_timeout

__all__ = ["ChildWaits", "workflow_name"]

# Above this many runs in a workflow's concurrency set, the deadlock check does
# not read them all: it counts the suspended ones (wf-suspended:<wf>, kept by the
# scripts). suspend_run.lua applies the same rule with the same limit when it
# suspends (DEADLOCK_SCAN_LIMIT).
_DEADLOCK_SCAN_LIMIT = 256


class ChildWaits(WaitBase):
    """The children wait step, shared by the sync and async step APIs."""

    __slots__ = ()

    @tracing.traced_wait  # a span per wait step, with the OpenTelemetry extra
    def _children_check(
        self,
        name: object,
        workflow: Workflow[Any, Any] | str,
        inputs: Sequence[Any],
        timeout: object,
        *,
        single: bool,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        priority: int | None = None,
    ) -> Any:
        limit = check_wait_timeout(timeout)
        child = workflow_name(workflow)
        step, done, value, waiting, started = self._wait_begin(name, "children")
        if done:
            if isinstance(value, ChildOutputs):  # recorded by reference: read them
                ids = value.ids
                states, _ = self._read_children(ids)
                outputs = [_child_output(cid, st) for cid, st in zip(ids, states, strict=True)]
                return True, outputs[0] if single else outputs
            return True, value

        def body() -> tuple[bool, Any]:
            nonlocal waiting, started
            ex = self._ex
            fresh = waiting is None
            if waiting is None:
                self._check_known(step, workflow)
                ids = self._start_children(
                    step, workflow, child, inputs, single, queue_override, idempotency_key, priority
                )
                started = self._server_ms()
                wake = None if limit is None else started + int(limit * 1000)
                waiting = Waiting(kind="children", wake_at=wake, children=ids)
                self._record_waiting(step, waiting, started)
            ids = waiting.children
            states, now = self._read_children(ids)
            if fresh and self._resume_cascaded(ids, states):
                states, now = self._read_children(ids)
            if not fresh:  # the timeout, relative: re-based if the clock went back
                waiting, started = self._rebased(step, waiting, started, now)
            for cid, st in zip(ids, states, strict=True):
                if st[0] in ("failed", "canceled"):  # fails the step now: first in input order
                    _child_output(cid, st)
            pending = [cid for cid, st in zip(ids, states, strict=True) if not _finished(st)]
            if not pending:
                outputs = [_child_output(cid, st) for cid, st in zip(ids, states, strict=True)]
                # Past max_payload_bytes together (each child's within it: a fan-out
                # of 100 outputs of 100 kB), recorded as the children's ids: copied,
                # the parent failed with PayloadTooLargeError after every child ran.
                value = outputs[0] if single else outputs
                return True, self._succeed(step, value, started, children=ids)
            if waiting.wake_at is not None and now >= waiting.wake_at:
                raise StepTimeoutError(
                    f"step {step!r} timed out after {limit or 0:g} s waiting for "
                    f"{len(pending)} child run(s) of {child!r} ({', '.join(pending[:5])})"
                )
            same = [cid for cid, st in zip(ids, states, strict=True) if st[3] and not _finished(st)]
            if same and child == ex.workflow:
                self._check_deadlock(step, child, same)
            return False, PendingWait(
                step, "children", children=tuple(pending), wake_at=waiting.wake_at
            )

        return self._guarded(step, started, body)

    def _resume_cascaded(self, ids: Sequence[str], states: list[tuple[Any, ...]]) -> bool:
        """The step starts in a new attempt of this run (``resume_run`` of a
        canceled run): resume its children that this run's own cancel canceled
        (the cascade), so that they run on instead of failing the step at once
        with ``RunCanceledError``. Their own children follow the same way when
        they replay. Returns True when one was resumed."""
        ex = self._ex
        canceled = [cid for cid, st in zip(ids, states, strict=True) if st[0] == "canceled"]
        if not canceled:
            return False
        cascade = f"parent run {ex.run_id} was canceled"
        runs = ex.runs
        mine: list[str] = []
        for positions in positions_by_shard(canceled, runs.shard_of_run):
            shard = runs.shard_of_run(canceled[positions[0]])
            names = [shard.keys.run(canceled[i]) for i in positions]
            reasons = ex.durable(
                partial(_read_field, shard.redis, names, "cancelReason"),
                "reading the cancel reasons of canceled children",
            )
            mine += [
                canceled[i]
                for i, why in zip(positions, reasons, strict=True)
                if why is not None and codec.text(why).startswith(cascade)
            ]
        for cid in mine:
            scripts = runs.shard_of_run(cid).scripts
            ex.durable(
                partial(scripts.resume, cid, new_token()),
                "resuming a child canceled by this run's cancel",
            )
        return bool(mine)

    def _check_known(self, step: str, workflow: Workflow[Any, Any] | str) -> None:
        if isinstance(workflow, Workflow):
            return
        runs = self._ex.runs
        if runs.registry.get(workflow) is not None:
            return
        meta = self._ex.durable(lambda: runs.get_workflow_meta(workflow), "reading metadata")
        if meta is None:
            raise UnknownWorkflowError(
                f"step {step!r} waits for workflow {workflow!r}, which is neither "
                "registered in this process nor synced to Redis; nothing was started"
            )

    def _start_children(
        self,
        step: str,
        workflow: Workflow[Any, Any] | str,
        child: str,
        inputs: Sequence[Any],
        single: bool,
        queue_override: str | None,
        idempotency_key: str | None,
        priority: int | None,
    ) -> list[str]:
        ex = self._ex
        base = idempotency_key or step_workflow_key(ex.run_id, step, child)
        options = [
            RunOptions.of(
                queue_override=queue_override,
                idempotency_key=base if single else f"{base}:{i}",
                priority=priority,
                parent_run_id=ex.run_id,
                linked=True,
                system_key=idempotency_key is None,
            )
            for i in range(len(inputs))
        ]
        if single:
            return [
                ex.durable(
                    lambda: ex.runs.enqueue(workflow, inputs[0], options[0]),
                    f"starting child {child!r}",
                )
            ]
        # One pipelined round trip for the whole fan-out; every input is checked
        # before anything is written, and a resend is deduplicated by the keys.
        return ex.durable(
            lambda: ex.runs.enqueue_each(workflow, list(inputs), options),
            f"starting {len(inputs)} children of {child!r}",
        )

    def _read_children(self, ids: Sequence[str]) -> tuple[list[tuple[Any, ...]], int]:
        """Each child's (status, outputJson, errorJson, same workflow as this run)
        and the server time, in one round trip."""
        ex = self._ex
        runs = ex.runs
        if runs.shard_count == 1:

            def read() -> list[Any]:
                pipe = runs.redis.pipeline(transaction=False)
                for cid in ids:
                    pipe.hmget(runs.keys.run(cid), "status", "outputJson", "errorJson", "workflow")
                pipe.time()
                return list(pipe.execute())

        else:  # shards > 1: children may live in other shards, one pipeline per shard

            def read() -> list[Any]:
                groups: dict[int, list[int]] = {}
                for i, cid in enumerate(ids):
                    groups.setdefault(runs.shard_of_run(cid).index, []).append(i)
                out: list[Any] = [None] * len(ids)
                for index, positions in groups.items():
                    shard = runs.shards[index]
                    pipe = shard.redis.pipeline(transaction=False)
                    for i in positions:
                        pipe.hmget(
                            shard.keys.run(ids[i]), "status", "outputJson", "errorJson", "workflow"
                        )
                    for i, reply in zip(positions, pipe.execute(), strict=True):
                        out[i] = reply
                return [*out, runs.redis.time()]

        replies = ex.durable(read, "reading child runs")
        seconds, micros = replies[-1]
        now = int(seconds) * 1000 + int(micros) // 1000
        states: list[tuple[Any, ...]] = []
        for status, output, error, wf in replies[:-1]:
            states.append(
                (
                    codec.text(status) if status is not None else None,
                    output,
                    error,
                    wf is not None and codec.text(wf) == ex.workflow,
                )
            )
        return states, now

    def _check_deadlock(self, step: str, child: str, waiting_on: list[str]) -> None:
        """Fail the step when the awaited children of this run's own workflow can
        never start: every slot is held by runs that wait (this one included)."""
        ex = self._ex
        # the children are of this run's own workflow: the same shard as this run
        shard = ex.runs.shard_of_workflow(child)
        keys = shard.keys
        running_key = keys.wf_running(child)

        def read() -> list[Any]:
            pipe = shard.redis.pipeline(transaction=False)
            pipe.scard(running_key)
            pipe.hget(keys.workflow(child), "maxConcurrency")
            pipe.hget(keys.run(ex.run_id), "maxConcurrency")
            pipe.scard(keys.wf_suspended(child))
            pipe.sismember(running_key, ex.run_id)
            for cid in waiting_on:
                pipe.sismember(running_key, cid)
            replies = list(pipe.execute(raise_on_error=False))
            if isinstance(replies[3], Exception):  # of another type: no rule (as the script)
                replies[3] = -1
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies

        card, meta_limit, run_limit, held, me, *members = ex.durable(read, "checking concurrency")
        limit = max(1, _int(meta_limit) or _int(run_limit) or 1)
        if int(card) < limit or any(members):
            return
        if int(card) > _DEADLOCK_SCAN_LIMIT:  # counted (suspend_run.lua, the same rule)
            if int(held) >= int(card) - int(me):
                raise WaitDeadlockError(self._deadlock_message(step, child, waiting_on, limit))
            return

        def holders() -> list[Any]:
            ids = [codec.text(m) for m in shard.redis.smembers(running_key)]
            pipe = shard.redis.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(keys.run(rid), "status")
            return list(zip(ids, pipe.execute(), strict=True))

        holders_of = ex.durable(holders, "checking concurrency")
        if all(rid == ex.run_id or codec.text(st or b"") == "suspended" for rid, st in holders_of):
            raise WaitDeadlockError(self._deadlock_message(step, child, waiting_on, limit))

    @staticmethod
    def _deadlock_message(step: str, child: str, waiting_on: list[str], limit: int) -> str:
        return (
            f"step {step!r} waits for run(s) {', '.join(waiting_on[:5])} of workflow "
            f"{child!r}, which can never start: all {limit} max_concurrency slot(s) of "
            f"{child!r} are held by runs that wait, this one included. Raise "
            f"max_concurrency, or run the child as another workflow."
        )


def _read_field(r: Any, keys: list[str], name: str) -> list[Any]:
    """HGET of field ``name`` of each hash in ``keys``, in one round trip."""
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, name)
    return list(pipe.execute())


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _finished(state: tuple[Any, ...]) -> bool:
    status = state[0]
    return status is None or status in ("succeeded", "failed", "canceled")


def _child_output(child_id: str, state: tuple[Any, ...]) -> Any:
    status, output, error, _ = state
    if status is None:
        raise RedflowError(f"child run {child_id} no longer exists (removed by retention?)")
    if status == "succeeded":
        return codec.decode_json(output) if output else None
    info = codec.decode_error(error)
    if status == "canceled":
        raise RunCanceledError(child_id, info)
    raise run_failed(child_id, info)


def workflow_name(workflow: Workflow[Any, Any] | str) -> str:
    """The name of ``workflow`` (a Workflow, or a name, checked): the child a step
    starts or waits for (``run_workflow``, ``run_workflows``, ``emit_workflow``)."""
    if isinstance(workflow, Workflow):
        return workflow.name
    if isinstance(workflow, str):
        return check_name(workflow, "workflow name")
    raise TypeError("workflow must be a Workflow or a workflow name")
