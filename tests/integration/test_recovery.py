"""Run recovery as the supervisor uses it (``redflow_mp.recovery``), in-process:
what a dead or stopped worker held is put back, retried or failed by the same
rules a worker applies, fenced by the lease token."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Registry, Retries, RunStatus, define_workflow
from redflow_mp.ids import new_token
from redflow_mp.recovery import Abort, HeldRun, abort_run, recover_runs, renew_leases
from redflow_mp.scripts import Claimed
from tests.helpers import status_of

pytestmark = pytest.mark.timeout(60)

LONG = "long-" + "n" * 495  # the longest name a workflow may have (512)


def _claim(client: Client, queue: str) -> Claimed:
    _, claimed = client.scripts.claim((queue,), 30_000, new_token())
    assert claimed is not None
    return claimed


def test_a_timeout_is_retried_by_the_policy_of_the_full_workflow_name(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    @define_workflow(LONG, queue="rq", retries=Retries(max_attempts=2, jitter=0), registry=registry)
    def long_named(ctx: Context[Any]) -> None:
        return None

    handle = long_named.run(None, client=client)
    first = _claim(client, "rq")
    done = abort_run(client, registry, HeldRun(first.id, first.token), Abort.TIMEOUT, 1.5)
    assert done.status == "scheduled" and not done.failed and done.workflow == ""
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.SCHEDULED
    assert state.error is not None and state.error.type == "RunTimeoutError"
    assert "1.5 s" in state.error.message
    raw.zadd(client.keys.q_scheduled("rq"), {handle.id: 0})  # due now
    raw.zadd(client.keys.due_queues, {"rq": 0})  # and the promoter told so
    client.scripts.promote(10)
    second = _claim(client, "rq")
    assert second.attempt == 2
    done = abort_run(client, registry, HeldRun(second.id, second.token), Abort.TIMEOUT, 1.5)
    assert done.failed and done.workflow == LONG  # on_failure is looked up by this name


def test_an_unknown_workflow_is_failed_at_its_timeout_and_a_stale_token_changes_nothing(
    client: Client, registry: Registry
) -> None:
    handle = client.run_by_name("nowhere", None, queue_override="rq2")
    claimed = _claim(client, "rq2")
    stale = abort_run(client, registry, HeldRun(claimed.id, "not-the-token"), Abort.TIMEOUT, 1)
    assert stale.status is None
    state = client.get_run(handle.id)
    assert state is not None and state.status is RunStatus.RUNNING
    done = abort_run(client, registry, HeldRun(claimed.id, claimed.token), Abort.TIMEOUT, 1)
    assert done.failed and done.workflow == "nowhere"


def test_an_ignored_cancel_ends_canceled(client: Client, registry: Registry) -> None:
    handle = client.run_by_name("deaf", None, queue_override="rq3")
    claimed = _claim(client, "rq3")
    assert client.cancel_run(handle.id, "stop")
    [state] = renew_leases(client, 30_000, [HeldRun(claimed.id, claimed.token)])
    assert state.kept and state.cancel
    done = abort_run(client, registry, HeldRun(claimed.id, claimed.token), Abort.CANCEL, 0)
    assert done.status == "canceled"


def test_a_dead_workers_runs_go_back_and_the_innermost_is_charged_a_crash(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    outer_handle = client.run_by_name("outer", None, queue_override="rq4")
    outer = _claim(client, "rq4")
    inner_handle = client.run_by_name("inner", None, queue_override="rq4")
    inner = _claim(client, "rq4")
    held = [HeldRun(outer.id, outer.token), HeldRun(inner.id, inner.token)]
    done = recover_runs(
        client, held, cause="killed by SIGKILL", stopping=False, charge_crash=True, max_crashes=1
    )
    assert [d.run_id for d in done] == [inner.id, outer.id]  # innermost first
    assert done[0].failed and done[0].workflow == "inner"  # the crash cap (1) is reached
    assert done[1].status == "queued"
    inner_state = client.get_run(inner_handle.id)
    outer_state = client.get_run(outer_handle.id)
    assert inner_state is not None and inner_state.error is not None
    assert inner_state.error.type == "RunCrashedError"
    assert outer_state is not None and outer_state.crash_count == 0
    before = [raw.hgetall(client.keys.run(r.run_id)) for r in held]
    again = recover_runs(
        client, held, cause="killed by SIGKILL", stopping=True, charge_crash=False, max_crashes=1
    )
    # The tokens are spent: nothing changes. Finishes are resend-safe (keyspace v2,
    # doneToken): the same holder's token gets the outcome already applied back
    # (so a lost reply costs no second on_failure), not a second write.
    assert [d.status for d in again] == ["failed", "queued"]
    assert [raw.hgetall(client.keys.run(r.run_id)) for r in held] == before


def test_a_dead_workers_run_on_a_broken_queue_is_left_to_the_reaper(
    client: Client, registry: Registry, raw: redis.Redis
) -> None:
    """The parent puts back the run of a child that died; its queue's ready set a
    string (another program, a typo): the put-back raised WrongTypeError (no
    RedisError) out of the arbiter's loop. Both runs are now reported: the one
    on the broken queue stays running for the reaper, the other goes back."""
    stuck_handle = client.run_by_name("outer", None, queue_override="rq5")
    stuck = _claim(client, "rq5")
    fine_handle = client.run_by_name("inner", None, queue_override="rq6")
    fine = _claim(client, "rq6")
    raw.set(client.keys.q_ready("rq5"), "not a redflow key")
    held = [HeldRun(fine.id, fine.token), HeldRun(stuck.id, stuck.token)]
    done = recover_runs(
        client, held, cause="killed by SIGKILL", stopping=False, charge_crash=True, max_crashes=3
    )
    assert [d.run_id for d in done] == [stuck.id, fine.id]
    assert done[0].error and client.keys.q_ready("rq5") in done[0].error
    assert done[1].status == "queued"
    assert status_of(raw, client, stuck_handle.id) == "running"
    assert status_of(raw, client, fine_handle.id) == "queued"
