"""The ``redflow`` command, run as a subprocess against a real redis-server with real runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redflow_mp import Client, Registry, create_client
from tests.helpers import WorkerPool, status_of, text, texts, wait_until
from tests.ops.conftest import ROOT, Result, Runs, cli_env, run_cli, run_cli_many
from tests.redis_server import RedisServer

Redflow = Callable[..., Result]


def rows(out: str) -> list[list[str]]:
    """A table's body rows split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()[1:]]


# ------------------------------------------------------------------ runs list


def test_runs_list_table_and_json(redflow: Redflow, runs: Runs) -> None:
    res = redflow("runs", "list")
    assert res.code == 0, res
    header, *body = res.out.strip().splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "ATTEMPT", "CREATED", "DURATION", "QUEUE"]
    table = {r[0]: r for r in rows(res.out)}
    assert [line.split()[0] for line in body] == [runs.queued, runs.failed, runs.succeeded]
    assert table[runs.succeeded][1:4] == ["ops-steps", "succeeded", "1/1"]
    assert table[runs.failed][1:3] == ["ops-fail", "failed"]
    assert table[runs.queued][1:3] == ["ops-parked", "queued"]
    assert table[runs.queued][5:] == ["-", "ops-idle"]  # not started: no duration
    assert re.fullmatch(r"\d+ms|\d+\.\ds", table[runs.succeeded][5])

    data = json.loads(redflow("runs", "list", "--json").out)
    assert [r["id"] for r in data] == [runs.queued, runs.failed, runs.succeeded]
    by_id = {r["id"]: r for r in data}
    assert by_id[runs.succeeded]["output"] == {"answer": 42}
    assert by_id[runs.failed]["error"]["type"] == "ValueError"
    assert by_id[runs.queued]["status"] == "queued"
    assert isinstance(by_id[runs.succeeded]["created_at"], int)


def test_runs_list_filters_and_paging(runs: Runs, redis_url: str, prefix: str) -> None:
    target = ["--url", redis_url, "--prefix", prefix]
    by_workflow, by_status, paged, cursor, none, before = run_cli_many(
        [
            ["runs", "list", "--workflow", "ops-fail", "--json", *target],
            ["runs", "list", "--status", "queued", "--json", *target],
            ["runs", "list", "--limit", "1", "--offset", "1", "--json", *target],
            # the page after a cursor (the last run of the previous page)
            ["runs", "list", "--offset", "1", "--after", runs.queued, "--json", *target],
            ["runs", "list", "--workflow", "ops-fail", "--status", "succeeded", *target],
            # the common options may also stand before the command
            [*target, "--json", "runs", "list", "--limit", "1"],
        ]
    )
    assert [r["id"] for r in json.loads(by_workflow.out)] == [runs.failed]
    assert [r["id"] for r in json.loads(by_status.out)] == [runs.queued]
    assert [r["id"] for r in json.loads(paged.out)] == [runs.failed]
    assert [r["id"] for r in json.loads(cursor.out)] == [runs.failed, runs.succeeded], cursor
    assert (none.code, none.out.strip()) == (0, "no runs")
    assert [r["id"] for r in json.loads(before.out)] == [runs.queued], before


def test_a_full_page_names_the_cursor_of_the_next_one(redflow: Redflow, runs: Runs) -> None:
    """A table page of --limit runs ends with the --after of the next page on
    standard error (paging by --offset deep into a status walks every run before
    the page); a page that is not full, or --json, says nothing."""
    first = redflow("runs", "list", "--limit", "2")
    assert first.code == 0, first
    assert [r[0] for r in rows(first.out)] == [runs.queued, runs.failed]
    hint = re.search(r"next page: --after (\S+) \(with --offset (\d+)\)", first.err)
    assert hint is not None, first.err
    assert hint.groups() == (runs.failed, "2")
    rest = redflow("runs", "list", "--limit", "2", "--after", hint[1], "--offset", hint[2])
    assert [r[0] for r in rows(rest.out)] == [runs.succeeded]
    assert "next page" not in rest.err
    assert "next page" not in redflow("runs", "list", "--limit", "2", "--json").err


def test_bad_arguments(redis_url: str, prefix: str) -> None:
    target = ["--url", redis_url, "--prefix", prefix]
    status, limit, workflow, nothing, runs_alone, show_key, cancel_key = run_cli_many(
        [
            ["runs", "list", "--status", "bogus", *target],
            ["runs", "list", "--limit", "-1", *target],
            ["runs", "list", "--workflow", " ", *target],
            [],
            ["runs"],
            ["runs", "show", "01ABC:attempts", *target],  # was a WRONGTYPE traceback
            ["runs", "cancel", "01ABC:steps", *target],
        ]
    )
    for bad in (show_key, cancel_key):
        assert bad.code == 1 and "not found" in bad.err and "Traceback" not in bad.err
    assert status.code == 2 and "invalid choice" in status.err
    assert limit.code == 2 and "must be >= 0" in limit.err
    assert workflow.code == 2 and "non-empty" in workflow.err
    assert nothing.code == 2 and "COMMAND" in nothing.err
    assert runs_alone.code == 2 and "ACTION" in runs_alone.err


# ------------------------------------------------------------------ runs show


def test_runs_show_failed_run_with_steps_and_traceback(redflow: Redflow, runs: Runs) -> None:
    res = redflow("runs", "show", runs.failed)
    assert res.code == 0, res
    out = res.out
    assert re.search(rf"^id\s+{runs.failed}$", out, re.M)
    assert re.search(r"^status\s+failed$", out, re.M)
    assert re.search(r"^input\s+\{\"why\":\"x\"\}$", out, re.M)
    steps = out.split("steps:")[1].split("error:")[0]
    step_rows = rows(steps)
    assert [r[1:3] for r in step_rows] == [["ok", "succeeded"], ["parse", "failed"]]
    assert all(re.fullmatch(r"\d+ms|\d+\.\ds", r[5]) for r in step_rows)
    assert step_rows[1][6] == "ValueError: cannot parse 'x'"
    assert "error: ValueError: cannot parse 'x'" in out
    assert "traceback:" in out and "in _explode" in out

    data = json.loads(redflow("runs", "show", runs.failed, "--json").out)
    assert data["run"]["id"] == runs.failed
    assert data["run"]["error"]["type"] == "ValueError"
    assert "Traceback (most recent call last)" in data["run"]["error"]["traceback"]
    assert [s["name"] for s in data["steps"]] == ["ok", "parse"]
    assert all(isinstance(s["duration_ms"], int) for s in data["steps"])


def test_runs_show_succeeded_and_unknown(redflow: Redflow, runs: Runs) -> None:
    res = redflow("runs", "show", runs.succeeded)
    assert re.search(r'^output\s+\{"answer":42\}$', res.out, re.M), res
    steps = res.out.split("steps:")[1].split("attempts:")[0]
    assert [r[1] for r in rows(steps)] == ["fetch", "double", "store"]
    history = rows(res.out.split("attempts:")[1])
    assert [r[:2] for r in history] == [["1", "succeeded"]]
    res = redflow("runs", "show", "01NOSUCHRUN")
    assert res.code == 1 and "run 01NOSUCHRUN not found" in res.err


# ---------------------------------------------------------------- runs cancel


def test_runs_cancel_queued_run(
    redflow: Redflow, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    res = redflow("runs", "cancel", runs.queued, "--reason", "not needed")
    assert res.code == 0, res
    assert res.out.strip() == f"canceled run {runs.queued}"
    assert status_of(raw, client, runs.queued) == "canceled"
    assert text(raw.hget(client.keys.run(runs.queued), "cancelReason")) == "not needed"
    again = redflow("runs", "cancel", runs.queued, "--json")
    assert again.code == 1
    assert json.loads(again.out) == {
        "id": runs.queued,
        "accepted": False,
        "status": "canceled",
        "cancel_requested_at": json.loads(again.out)["cancel_requested_at"],
        "cancel_reason": "not needed",
    }
    res = redflow("runs", "cancel", runs.succeeded)
    assert res.code == 1 and "already finished (succeeded)" in res.err
    assert redflow("runs", "cancel", "nope").code == 1


def test_runs_cancel_running_run_and_watch_it_end(
    redflow: Redflow, synced: Client, ops_workers: WorkerPool
) -> None:
    # held: it still runs when the CLI gets to it, however slow its start-up (a
    # 10 s run ended first on a loaded machine: "accepted": false, "succeeded")
    handle = synced.run_by_name("ops-slow", {"steps": 2, "pause": 60.0, "held": True})
    wait_until(lambda: (s := handle.state()) is not None and s.status == "running", 10)
    try:
        res = redflow("runs", "cancel", handle.id, "--json")
    finally:  # else the held step keeps its worker past the pool's stop
        handle.cancel()  # a no-op once the CLI's cancel is in
    assert res.code == 0, res
    data = json.loads(res.out)
    assert data["accepted"] is True and data["status"] == "running"
    assert data["cancel_requested_at"] is not None
    res = redflow("runs", "watch", handle.id, "--timeout", "15")
    assert res.code == 1, res  # canceled
    last = res.out.strip().splitlines()[-1]
    assert re.match(r"\d\d:\d\d:\d\d  canceled after ", last), res


# ----------------------------------------------------------------- runs retry


def test_runs_retry_failed_run(
    redflow: Redflow, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    res = redflow("runs", "retry", runs.failed)
    assert res.code == 0, res
    m = re.match(
        rf"retried run {runs.failed} as run (\S+) \(workflow ops-fail, queue ops, ", res.out
    )
    assert m, res
    new_id = m.group(1)
    assert new_id != runs.failed
    assert text(raw.hget(client.keys.run(new_id), "retryOf")) == runs.failed
    shown = redflow("runs", "show", new_id)
    assert re.search(rf"^retry of\s+{runs.failed}$", shown.out, re.M), shown
    assert (
        json.loads(redflow("runs", "show", new_id, "--json").out)["run"]["retry_of"] == runs.failed
    )
    data = json.loads(redflow("runs", "retry", runs.failed, "--json").out)
    assert data["retry_of"] == runs.failed and data["workflow"] == "ops-fail"
    res = redflow("runs", "retry", runs.succeeded)
    assert res.code == 1 and "only failed or canceled runs can be retried" in res.err


def test_runs_retry_given_twice_starts_one_run(
    redflow: Redflow, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    """The command run twice (a shell history, two operators) or the dashboard's
    Retry clicked twice (two POSTs) started the failed run's input twice."""
    first = json.loads(redflow("runs", "retry", runs.failed, "--json").out)["id"]
    again = json.loads(redflow("runs", "retry", runs.failed, "--json").out)["id"]
    assert again == first
    copies = [
        run_id
        for run_id in texts(raw.zrange(client.keys.workflow_runs("ops-fail"), 0, -1))
        if text(raw.hget(client.keys.run(run_id), "retryOf")) == runs.failed
    ]
    assert copies == [first]


def test_a_retry_asked_for_after_the_first_retry_finished_starts_another(
    runs: Runs, client: Client, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once at a time, not once for good: an operator who retries a run whose
    retry failed in turn, past the double-click window, gets a new run."""
    from redflow_mp import admin

    monkeypatch.setattr(admin, "RETRY_ONCE_S", 0.5)
    first = admin.retry_run(client, runs.failed)
    assert admin.retry_run(client, runs.failed).id == first.id  # unfinished: the same
    wait_until(lambda: status_of(raw, client, first.id) == "failed", timeout=20)
    deadline = time.monotonic() + 10
    again = first.id
    while again == first.id and time.monotonic() < deadline:
        again = admin.retry_run(client, runs.failed).id
        time.sleep(0.1)
    assert again != first.id
    assert client.get_run(again) is not None


# ----------------------------------------------------------------- runs resume


def test_runs_resume_puts_a_failed_run_back_as_the_same_run(
    redflow: Redflow, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    step_ok = client.get_run_steps(runs.failed)
    assert step_ok is not None and [s.name for s in step_ok] == ["ok", "parse"]
    res = redflow("runs", "resume", runs.failed)
    assert res.code == 0, res
    assert re.match(
        rf"resumed run {runs.failed} \(workflow ops-fail, queue ops\): \w+, attempt 2/2, "
        r"1 succeeded step\(s\) kept",
        res.out,
    ), res
    # ops-fail fails at the same step again; its succeeded step was not run again
    wait_until(
        lambda: (s := client.get_run(runs.failed)) is not None and s.status == "failed", 15, 0.02
    )
    steps = {s.name: s for s in client.get_run_steps(runs.failed) or []}
    assert steps["ok"].attempt == 1 and steps["parse"].attempt == 2
    # runs show: every attempt with its outcome and error
    shown = redflow("runs", "show", runs.failed)
    assert shown.code == 0, shown
    history = shown.out.split("attempts:")[1]
    rows = [line.split() for line in history.strip().splitlines()[1:]]
    assert [r[:2] for r in rows] == [["1", "failed"], ["2", "failed"]], shown
    assert history.count("ValueError: cannot parse 'x'") == 2
    record = json.loads(redflow("runs", "show", runs.failed, "--json").out)["run"]
    assert [(a["attempt"], a["outcome"]) for a in record["attempts"]] == [
        (1, "failed"),
        (2, "failed"),
    ]
    assert "Traceback" in record["attempts"][0]["error"]["traceback"]
    data = json.loads(redflow("runs", "resume", runs.failed, "--json").out)
    assert data["id"] == runs.failed and data["attempt"] == 3 and data["steps_kept"] == 1
    res = redflow("runs", "resume", runs.succeeded)
    assert res.code == 1 and "is succeeded; only a failed or canceled run" in res.err, res
    res = redflow("runs", "resume", "nope")
    assert res.code == 1 and "run nope not found" in res.err, res
    assert redflow("runs", "resume").code == 2


def test_runs_watch_started_late_prints_every_attempt_from_the_first(
    redflow: Redflow, synced: Client, ops_workers: WorkerPool
) -> None:
    handle = synced.run_by_name("ops-slow", {"steps": 12, "pause": 0.1})
    wait_until(
        lambda: len(synced.get_run_steps(handle.id) or []) >= 2, 10, 0.01, "two steps recorded"
    )
    assert handle.cancel("first try")
    wait_until(lambda: (s := handle.state()) is not None and s.status == "canceled", 10, 0.01)
    synced.resume_run(handle.id)
    wait_until(lambda: (s := handle.state()) is not None and s.status == "running", 10, 0.01)
    res = redflow("runs", "watch", handle.id, "--interval", "0.05", "--timeout", "30")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert re.match(rf"\d\d:\d\d:\d\d  run {handle.id} of ops-slow .*attempt 2/2", lines[0])
    # after the steps of attempt 1 (kept, succeeded), before those of attempt 2
    canceled = [
        i
        for i, line in enumerate(lines)
        if re.match(
            rf"\d\d:\d\d:\d\d  attempt 1 canceled after \S+: RunCanceledError: run "
            f"{handle.id} was canceled",
            line,
        )
    ]
    assert len(canceled) == 1, res
    assert all("attempt 1)" in line for line in lines[1 : canceled[0]]), res
    assert re.search(r"step tick-11 succeeded \(\S+, attempt 2\)", res.out), res
    assert "succeeded in" in lines[-1]
    events = [
        json.loads(line)
        for line in redflow("runs", "watch", handle.id, "--json").out.strip().splitlines()
    ]
    attempts = [ev for ev in events if ev["event"] == "attempt"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "canceled"), (2, "succeeded")]


def test_runs_watch_prints_in_the_order_things_happened(
    redflow: Redflow, synced: Client, ops_workers: WorkerPool
) -> None:
    """``runs watch`` of a run that has ended (or a look that sees the last step and
    the attempt end together) printed the attempt's end before the steps that ran
    in it: ``23:10:48 attempt 1 succeeded`` then ``23:10:47 step s0 succeeded``."""
    handle = synced.run_by_name("ops-steps", {"pause": 0.05})
    assert handle.result(timeout=20) == {"answer": 42}
    res = redflow("runs", "watch", handle.id, "--json")
    assert res.code == 0, res
    events = [json.loads(line) for line in res.out.strip().splitlines()]
    assert [e["event"] for e in events] == ["run", "step", "step", "step", "attempt", "end"]
    times = [e["at"] for e in events[1:]]
    assert times == sorted(times), events
    text = redflow("runs", "watch", handle.id).out.strip().splitlines()
    assert [line.split()[1] for line in text] == [
        "run",
        "step",
        "step",
        "step",
        "attempt",
        "succeeded",
    ]


def test_runs_watch_reads_the_steps_only_when_they_changed(
    redflow: Redflow, synced: Client, ops_workers: WorkerPool, raw: redis.Redis
) -> None:
    """Every look of ``runs watch`` read all of the run's step records (HSCAN) and
    decoded their outputs, also while nothing changed: a run of 20,000 steps with
    2 KB outputs cost 20 HSCANs (~52 ms of Redis) and 40 MB read twice a second
    for each watcher. Now a look reads the steps when the run's step counters
    (``stepSeq``, ``stepBytes``), status or attempt moved, and at most every 10 s
    otherwise."""
    # Its step lasts until the run is canceled: the watch must find it running
    # however long the CLI takes to start (a fixed 3 s step used to end first on a
    # loaded machine, where the CLI's start-up alone took longer).
    handle = synced.run_by_name("ops-slow", {"steps": 2, "pause": 60.0, "held": True})
    wait_until(lambda: len(synced.get_run_steps(handle.id) or []) >= 1, 10, 0.01, "a step")

    def hscans() -> int:
        return int(raw.info("commandstats").get("cmdstat_hscan", {}).get("calls", 0))

    before = hscans()
    try:
        res = redflow("runs", "watch", handle.id, "--interval", "0.05", "--timeout", "1.5")
    finally:  # else the held step keeps its worker past the pool's stop
        handle.cancel()
    assert res.code == 3, res  # still running: the step lasts until canceled
    assert "step tick-0 running" in res.out, res
    # ~30 looks; the step records did not change in the meantime
    assert hscans() - before <= 3
    wait_until(lambda: (s := handle.state()) is not None and s.status == "canceled", 20)


def test_runs_resume_of_a_running_run_is_refused(
    redflow: Redflow, synced: Client, ops_workers: WorkerPool
) -> None:
    handle = synced.run_by_name("ops-slow", {"steps": 2, "pause": 60.0, "held": True})
    wait_until(lambda: (s := handle.state()) is not None and s.status == "running", 10)
    try:
        res = redflow("runs", "resume", handle.id)
    finally:  # else the held step keeps its worker past the pool's stop
        handle.cancel()
    assert res.code == 1 and "is running; only a failed or canceled run" in res.err, res


# ----------------------------------------------------------------- runs watch


def test_runs_watch_prints_steps_until_the_end(
    redflow: Redflow, redis_url: str, prefix: str, synced: Client, ops_workers: WorkerPool
) -> None:
    handle = synced.run_by_name("ops-slow", {"steps": 3, "pause": 0.15})
    res = redflow("runs", "watch", handle.id, "--interval", "0.05", "--timeout", "20")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert re.match(rf"\d\d:\d\d:\d\d  run {handle.id} of ops-slow on queue ops: ", lines[0])
    steps = [line.split()[2:4] for line in lines if "  step " in line]
    assert [name for name, status in steps if status == "succeeded"] == [
        "tick-0",
        "tick-1",
        "tick-2",
    ]
    # a step seen in flight is printed as running (with its start), before its end
    for i, (name, status) in enumerate(steps):
        if status == "running":
            assert [name, "succeeded"] in steps[i + 1 :], res
    assert {status for _, status in steps} <= {"running", "succeeded"}
    assert re.match(r"\d\d:\d\d:\d\d  succeeded in \S+; output: \"slept\"$", lines[-1]), res

    failing = synced.run_by_name("ops-fail", {"why": "late"})
    res = redflow("runs", "watch", failing.id, "--json")
    assert res.code == 1, res
    events = [json.loads(line) for line in res.out.strip().splitlines()]
    assert events[0]["event"] == "run" and events[0]["workflow"] == "ops-fail"
    done = [e for e in events if e["event"] == "step" and e["status"] != "running"]
    assert [e["name"] for e in done] == ["ok", "parse"]
    end = events[-1]
    assert end["event"] == "end" and end["status"] == "failed"
    assert end["error"]["message"] == "cannot parse 'late'"


def test_runs_watch_timeout_and_unknown(redflow: Redflow, runs: Runs) -> None:
    res = redflow("runs", "watch", runs.queued, "--timeout", "0.3")
    assert res.code == 3, res
    assert "is still queued after 0.3 s" in res.err
    assert redflow("runs", "watch", "nope").code == 1


# ------------------------------------------------------------------------- run


def test_run_and_wait(
    redflow: Redflow, ops_workers: WorkerPool, raw: redis.Redis, client: Client
) -> None:
    res = redflow("run", "ops-steps", "--input", '{"pause": 0}', "--wait", "--timeout", "15")
    assert res.code == 0, res
    first, second = res.out.strip().splitlines()
    run_id = re.match(r"enqueued run (\S+) of ops-steps on queue ops$", first).group(1)  # type: ignore[union-attr]
    assert second == 'succeeded; output: {"answer":42}'
    assert status_of(raw, client, run_id) == "succeeded"

    res = redflow("run", "ops-fail", "--input", '{"why": "cli"}', "--wait", "--json")
    assert res.code == 1, res
    data = json.loads(res.out)
    assert data["status"] == "failed" and data["error"]["message"] == "cannot parse 'cli'"


# Seven CLI start-ups: 20-30 s each on a loaded machine, past the default 120 s
# (pytest-timeout ended the xdist worker: "worker 'gw1' crashed").
@pytest.mark.timeout(300)
def test_run_idempotency_input_sources_and_errors(
    redflow: Redflow, synced: Client, tmp_path: Path
) -> None:
    a = json.loads(redflow("run", "ops-parked", "--idempotency-key", "k1", "--json").out)
    assert a["created"] is True and a["status"] == "queued" and a["queue"] == "ops-idle"
    b = redflow("run", "ops-parked", "--idempotency-key", "k1")
    assert b.out.strip() == (
        f"enqueued run {a['id']} of ops-parked on queue ops-idle "
        "(existing run for this idempotency key)"
    ), b
    state = synced.get_run(a["id"])
    assert state is not None and state.idempotency_key == "k1" and state.input is None

    f = tmp_path / "in.json"
    f.write_text('{"from": "file", "n": [1, 2]}')
    rid = json.loads(redflow("run", "ops-parked", "--input", f"@{f}", "--json").out)["id"]
    assert synced.get_run(rid).input == {"from": "file", "n": [1, 2]}  # type: ignore[union-attr]
    rid = json.loads(redflow("run", "ops-parked", "--input", "-", "--json", stdin='"stdin"').out)[
        "id"
    ]
    assert synced.get_run(rid).input == "stdin"  # type: ignore[union-attr]

    res = redflow("run", "ops-parked", "--input", "{not json")
    assert res.code == 2 and "--input is not valid JSON" in res.err
    res = redflow("run", "no-such-flow")
    assert res.code == 1 and "is not synced" in res.err and "--queue" in res.err
    res = redflow("run", "no-such-flow", "--queue", "elsewhere", "--json")
    assert res.code == 0, res
    assert json.loads(res.out)["queue"] == "elsewhere"


def test_run_with_a_priority(redflow: Redflow, synced: Client) -> None:
    rid = json.loads(redflow("run", "ops-parked", "--priority", "7", "--json").out)["id"]
    state = synced.get_run(rid)
    assert state is not None and state.priority == 7
    assert json.loads(redflow("runs", "show", rid, "--json").out)["run"]["priority"] == 7
    assert re.search(r"^priority +7$", redflow("runs", "show", rid).out, re.M)
    res = redflow("run", "ops-parked", "--priority", "12")
    assert res.code == 2 and "priority must be from 0 (default) to 9" in res.err and "12" in res.err
    res = redflow("run", "ops-parked", "--priority", "high")
    assert res.code == 2 and "--priority" in res.err
    assert len(synced.list_runs()) == 1


def test_input_nested_too_deeply(redflow: Redflow, synced: Client, raw: redis.Redis) -> None:
    """Issue 10 #12: a run whose stored input is nested 1,000 deep is shown (its input
    as unreadable), and ``run --input`` refuses such input with a clear message."""
    deep = "[" * 1000 + "0" + "]" * 1000
    handle = synced.run_by_name("ops-parked", {"n": 1})
    raw.hset(synced.keys.run(handle.id), "inputJson", deep)
    shown = redflow("runs", "show", handle.id)
    assert shown.code == 0, shown
    assert "unreadable" in shown.out and "nested too deeply" in shown.out, shown
    listed = redflow("runs", "list", "--json")
    assert listed.code == 0 and json.loads(listed.out)[0]["id"] == handle.id, listed
    for depth in (1000, 300):
        res = redflow("run", "ops-parked", "--input", "[" * depth + "]" * depth)
        assert res.code == 2, res
        assert "nested too deeply" in res.err and "Traceback" not in res.err, res
    assert [r.id for r in synced.list_runs()] == [handle.id]


# ------------------------------------------------------- workflows and queues


def test_workflows(redflow: Redflow, runs: Runs) -> None:
    res = redflow("workflows")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert lines[0].split()[:4] == ["WORKFLOW", "QUEUE", "MAX", "CONC"]
    table = {line.split()[0]: line for line in lines[1:]}
    assert sorted(table) == [
        "ops-cron",
        "ops-fail",
        "ops-nonretriable",
        "ops-parked",
        "ops-slow",
        "ops-steps",
    ]
    assert re.search(
        r"0 3 \* \* \* \[Europe/Berlin\] next \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in \S+\)$",
        table["ops-cron"],
    ), res
    assert table["ops-nonretriable"].split()[1:4] == ["ops", "1", "3"]
    # ops-parked: one queued run
    assert table["ops-parked"].split()[1:7] == ["ops-idle", "2", "1", "0", "1", "0"]
    assert table["ops-parked"].split()[7] == "5/m" and table["ops-steps"].split()[7] == "-"
    assert lines[0].split()[8] == "RATE"

    data = {w["name"]: w for w in json.loads(redflow("workflows", "--json").out)}
    assert data["ops-parked"]["queued"] == 1 and data["ops-parked"]["app"] == "ops-test"
    (cron,) = data["ops-cron"]["cron_entries"]
    assert cron["expression"] == "0 3 * * *" and cron["next_fire_at"] > 0
    assert data["ops-steps"]["max_concurrency"] == 4
    assert data["ops-parked"]["rate_limit"] == "5/m" and data["ops-steps"]["rate_limit"] is None


def test_queues(redflow: Redflow, runs: Runs) -> None:
    res = redflow("queues")
    assert res.code == 0, res
    assert res.out.splitlines()[0].split() == [
        "QUEUE",
        "READY",
        "PROCESSING",
        "SCHEDULED",
        "OLDEST",
        "WAITING",
    ]
    table = {r[0]: r for r in rows(res.out)}
    assert table["ops-idle"][1:4] == ["1", "0", "0"]
    assert re.fullmatch(r"\d+ms|\d+\.\ds", table["ops-idle"][4])
    data = {q["name"]: q for q in json.loads(redflow("queues", "--json").out)}
    assert data["ops-idle"]["ready"] == 1 and data["ops-idle"]["oldest_ready_age_ms"] >= 0
    assert data["ops"]["ready"] == 0 and data["ops"]["oldest_ready_age_ms"] is None


def test_empty_namespace(prefix: str) -> None:
    """Finding nothing, every command says where it looked and which other prefixes
    of this database hold redflow keys (issue 16 #2). A private server: the shared one
    holds the prefixes of every other test."""
    with RedisServer() as server:
        redis_url = server.url
        for other in (prefix + "-demo", prefix + "-etl"):
            with create_client(redis_url, prefix=other, registry=Registry(), default=False) as c:
                c.run_by_name("somewhere-else", {"n": 1}, queue_override="q")
        r = server.client()
        r.set("{" + prefix + "-not-ours}:session", "x")  # a hash tag, but no redflow key
        r.close()
        cmds = (["workflows"], ["queues"], ["supervisors"], ["runs", "list"])
        target = ["--url", redis_url, "--prefix", prefix]
        results = run_cli_many(
            [[*c, *target] for c in cmds] + [[*c, "--json", *target] for c in cmds]
        )
        unknown = run_cli(["runs", "show", "01NOSUCHRUN", *target])
    texts = [r.out.strip() for r in results[:4]]
    assert texts[0].startswith("no workflows synced")
    assert texts[1:] == ["no queues", "no live supervisors", "no runs"]
    assert [json.loads(r.out) for r in results[4:]] == [[], [], [], []]
    for res in results:
        assert res.code == 0, res
        assert res.err.splitlines() == [
            f"redflow: looked in {redis_url}, prefix {prefix!r}",
            f"redflow: other prefixes with redflow keys in this database: '{prefix}-demo', "
            f"'{prefix}-etl' (choose one with --prefix or REDFLOW_PREFIX)",
        ], res
    assert unknown.code == 1
    assert (
        f"not found (unknown id, or removed by retention); looked in {redis_url}, " in unknown.err
    )
    assert f"'{prefix}-demo'" in unknown.err


def test_where_it_looked_masks_the_password_and_bounds_the_scan(prefix: str) -> None:
    secret = "where-Pa55"
    with RedisServer(password=secret) as server:
        r = server.client()
        try:
            with r.pipeline(transaction=False) as pipe:
                for i in range(12_000):
                    pipe.set(f"junk:{i}", "x")
                pipe.execute()
        finally:
            r.close()
        res = run_cli(["runs", "list", "--url", server.url, "--prefix", prefix])
    assert res.code == 0 and res.out.strip() == "no runs", res
    assert secret not in res.err and "redis://:***@127.0.0.1:" in res.err
    assert "only the first 10,000 keys were examined" in res.err, res


# ----------------------------------------------------------------- supervisors


# A supervisor and four CLI start-ups: 20-30 s each on a loaded machine.
@pytest.mark.timeout(300)
def test_supervisors_from_a_real_supervisor(
    redflow: Redflow, supervisor: Callable[..., object], client: Client
) -> None:
    sup = supervisor(modules=("tests.ops.flows",), procs=2, app="ops-sup", args=("--queues", "ops"))
    # held: still running at the CLI's third look, however slow its start-up (a
    # 30 s run had ended by then on a loaded machine: StopIteration below)
    handle = client.run_by_name("ops-slow", {"steps": 2, "pause": 60.0, "held": True})
    try:

        def busy() -> bool:
            data = json.loads(redflow("supervisors", "--json").out)
            return bool(data) and any(c["run_id"] == handle.id for c in data[0]["children"])

        # each look is a CLI start-up: 20-30 s on a loaded machine
        wait_until(busy, 90, 0.1, "a supervisor child running the run")
        data = json.loads(redflow("supervisors", "--json").out)
        (record,) = data
        assert record["app"] == "ops-sup" and record["pid"] == sup.pid  # type: ignore[attr-defined]
        assert record["procs"] == 2 and record["queues"] == ["ops"]
        assert sorted(c["slot"] for c in record["children"]) == [1, 2]
        child = next(c for c in record["children"] if c["run_id"] == handle.id)
        assert child["workflow"] == "ops-slow" and child["pid"] > 0 and child["rss"] > 0

        res = redflow("supervisors")
        assert res.code == 0, res
        head, table = res.out.split("\n", 1)
        assert head.startswith(f"supervisor {record['id']}  app ops-sup  running")
        assert "procs 2  queues ops" in head
        lines = table.strip().splitlines()
        assert lines[0].split() == [
            "SLOT",
            "PID",
            "STATE",
            "RUN",
            "WORKFLOW",
            "RUN",
            "FOR",
            "RSS",
            "CPU",
            "RUNS",
            "RESTARTS",
        ]
        mine = next(line for line in lines if handle.id in line).split()
        assert mine[1] == str(child["pid"]) and mine[4] == "ops-slow"
        assert mine[7] == "MiB" and mine[8].endswith("%")
    finally:
        handle.cancel()


# ------------------------------------------------------- connection settings


def test_url_and_prefix_from_environment(runs: Runs, redis_url: str, prefix: str) -> None:
    env = {"REDFLOW_URL": redis_url, "REDFLOW_PREFIX": prefix}
    calls = [
        (["runs", "list", "--json"], env),
        (["runs", "list", "--json"], {"REDIS_URL": redis_url, "REDFLOW_PREFIX": prefix}),
        # flags win over the environment
        (["runs", "list", "--json", "--prefix", prefix + "-other"], env),
        # REDFLOW_URL wins over REDIS_URL
        (["runs", "list", "--json"], {**env, "REDIS_URL": "redis://127.0.0.1:1/0"}),
    ]
    results = run_cli_many([c[0] for c in calls], envs=[c[1] for c in calls])
    assert [len(json.loads(r.out)) for r in results] == [3, 3, 0, 3], results


def test_unreachable_redis(prefix: str) -> None:
    res = run_cli(["queues", "--url", "redis://127.0.0.1:1/0", "--prefix", prefix])
    assert res.code == 1
    assert res.err.startswith("redflow: cannot reach Redis at redis://127.0.0.1:1/0"), res
    res = run_cli(["queues", "--url", "http://127.0.0.1:1/"])
    assert res.code == 2 and "unsupported Redis URL scheme" in res.err


def test_hostile_names_cannot_drive_the_terminal(
    synced: Client, redis_url: str, prefix: str
) -> None:
    name = "\x1b[31mred\x1b[0m\u202egnp.exe {x} \"q\" 'q' <script>"
    handle = synced.run_by_name(name, {"x": "\x1b[2J"}, queue_override="nobody")
    target = ["--url", redis_url, "--prefix", prefix]
    listing, shown, queues, as_json = run_cli_many(
        [
            ["runs", "list", *target],
            ["runs", "show", handle.id, *target],
            ["queues", *target],
            ["runs", "list", "--json", *target],
        ]
    )
    for res in (listing, shown, queues):
        assert res.code == 0, res
        assert "\x1b" not in res.out and "\u202e" not in res.out
    assert "\\x1b[31mred\\x1b[0m\\u202egnp.exe {x} \"q\" 'q' <script>" in shown.out
    assert json.loads(as_json.out)[0]["workflow"] == name  # JSON keeps the exact name


def test_console_script_is_installed(redis_url: str, prefix: str) -> None:
    script = Path(sys.executable).with_name("redflow")
    assert script.exists(), "pip install -e . should install the redflow console script"
    proc = subprocess.run(
        [str(script), "queues", "--json", "--url", redis_url, "--prefix", prefix],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (proc.returncode, json.loads(proc.stdout)) == (0, []), proc.stderr


# -------------------------------------------------------------------- migrate


def test_migrate_converts_a_v1_keyspace(server: RedisServer, prefix: str) -> None:
    # A server of its own: a migration SCANs the whole database, and the session's
    # server holds the keys of every test this xdist worker ran before (see
    # tests/integration/test_migrate.py).
    client = create_client(server.url, prefix=prefix, default=False)
    raw = server.client()
    target = ["--url", server.url, "--prefix", prefix]
    try:
        k = client.keys
        raw.hset(
            k.run("R1"), mapping={"id": "R1", "workflow": "wf", "queue": "mq", "status": "queued"}
        )
        raw.lpush(f"{k.tag}:q:mq:ready", "R1")
        res = run_cli(["migrate", *target])
        assert res.code == 0, res
        assert "ready lists converted: 1 (1 runs)" in res.out
        assert raw.type(k.q_ready("mq")) == b"zset"
        again = run_cli(["migrate", "--json", *target])
        assert json.loads(again.out)["ready_runs"] == 0
    finally:
        raw.close()
        client.close()


def test_bad_values_and_refusals_are_one_line_never_a_traceback(
    redis_url: str, prefix: str
) -> None:
    """An empty run id or workflow name, a port out of range, a prefix with ``~``
    and a Redis that refuses the write (out of memory) were tracebacks (or, for
    the prefix, called a bad URL)."""
    target = ["--url", redis_url, "--prefix", prefix]
    argss = [
        ["runs", "show", "", *target],
        ["runs", "cancel", "", *target],
        ["runs", "retry", "", *target],
        ["runs", "resume", "", *target],
        ["runs", "watch", "", *target],
        ["run", "", *target],
        ["dashboard", "--port", "99999", *target],
    ]
    results = run_cli_many([*argss, ["runs", "list", "--url", redis_url, "--prefix", "a~b"]])
    for args, res in zip(argss, results, strict=False):
        assert res.code == 2, (args, res)
        assert "Traceback" not in res.err and "error: argument" in res.err, (args, res)
    prefix_res = results[-1]
    assert prefix_res.code == 2 and "Traceback" not in prefix_res.err, prefix_res
    assert "bad Redis URL" not in prefix_res.err and "prefix 'a~b'" in prefix_res.err, prefix_res
    with RedisServer() as server:
        admin = server.client()
        admin.config_set("maxmemory", "1")
        admin.config_set("maxmemory-policy", "noeviction")
        full = run_cli(["run", "anything", "--queue", "q", "--url", server.url, "--prefix", prefix])
        admin.close()
    assert full.code == 1, full
    assert "Traceback" not in full.err and "out of memory" in full.err, full


def test_undecodable_and_overlong_arguments_are_one_line_never_a_traceback(
    redis_url: str, prefix: str
) -> None:
    """Bytes that are not UTF-8 on the command line reach Python as lone surrogates
    (``$'\\xff'`` in a shell): `runs show/cancel/retry/resume/watch` of such an id was a
    UnicodeEncodeError traceback, and so was `run` of a name over the 512-character
    limit (its metadata was read before the name was checked), and so was `run
    --input` / `send-event --payload` of such JSON text."""
    target = ["--url", redis_url, "--prefix", prefix]
    bad = "run\udcff"
    argss = [
        ["runs", "show", bad, *target],
        ["runs", "cancel", bad, *target],
        ["runs", "retry", bad, *target],
        ["runs", "resume", bad, *target],
        ["runs", "watch", bad, "--timeout", "1", *target],
        ["send-event", bad, "go", *target],
        ["run", bad, "--queue", "q", *target],
        ["run", "w", "--queue", "q", "--idempotency-key", bad, *target],
        ["runs", "list", "--workflow", bad, *target],
        ["run", "w" * 600, *target],
        ["runs", "list", "--offset", str(2**64), *target],
        ["run", "w", "--queue", "q", "--input", '"caf\udce9"', *target],
        ["send-event", "01ABC", "go", "--payload", '"caf\udce9"', *target],
    ]
    results = run_cli_many(argss)
    for args, res in zip(argss, results, strict=True):
        assert "Traceback" not in res.err, (args[:2], res)
        assert res.code in (1, 2) and res.err.startswith("redflow: "), (args[:2], res)
    for res in results[:5]:
        assert res.code == 1 and "not found" in res.err, res
    assert results[5].code == 1 and "is unknown or finished" in results[5].err, results[5]
    for res in results[6:9]:
        assert res.code == 2 and "not valid Unicode" in res.err, res
    assert results[9].code == 2 and "the limit is 512" in results[9].err, results[9]
    assert results[10].code == 2 and "offset must be at most" in results[10].err, results[10]
    for res in results[11:]:
        assert res.code == 2 and "not valid JSON: Invalid UTF-8" in res.err, res
