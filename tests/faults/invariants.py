"""The invariant checker every fault case runs after its fault (one checker, reused).

It reads Redis with a plain redis-py client (never through redflow_mp, so a
library bug cannot hide itself) and the ledger files (``ledger.py``), which
record what really executed, outside Redis.

    I1  every acknowledged run reaches a terminal status; none is missing from
        Redis, none is left queued, scheduled or running.
    I2  each run is in exactly one ``runs:status:*`` index, the one its hash
        names; ready/scheduled/waiting sets and running sets hold no terminal
        run, and a queued or scheduled run is in exactly one of them; a queue
        with scheduled runs is in ``due-queues`` no later than its head; every
        running run holds a live lease (its hash's token and a ``leases``
        entry not past), and ``leases`` holds no other run.
    I3  no step whose success was recorded executed again: no ``step-start`` of
        a (run, step) after its first acknowledged record (ledger) or after the
        end of the execution whose output Redis holds; and no acknowledged step
        record is missing from Redis. A ``step-start`` logged after a SIGCONT by
        an execution whose lease was confirmed (``lease-confirmed``) before that
        bound and before the SIGSTOP was under way when the stop came: it resumes
        inside its step, as one stopped inside the step function does (cut off in
        flight, allowed).
    I4  max_concurrency was never exceeded by lease holders: an execution held
        its lease from its handler's start to its last acknowledged step write
        (a write is accepted only under the lease and a lease never comes
        back), so those intervals must never overlap more than the limit. A
        write sent before a SIGSTOP of its process and acknowledged after the
        SIGCONT was applied by the stop (``_held_until``).
        Physical overlap including fenced zombies is reported too.
    I5  a child started by a step exists once per (parent, step).
    I6  every idempotency key maps to one run; the key of a finished run expires.
    I7  no cron fire time produced two runs.
    I8  no run executes in two processes at once: two executions of one run
        (handler start to end, or to the death of its process) never overlap,
        unless a fault on the earlier one's whole supervisor, its network or
        Redis lasted into that time (what leases and fencing are for; a fault
        lasts its ``seconds`` or until its ``<kind>-end`` event). A process that
        is merely busy, stopped alone or being killed keeps its run.

Durable waits (issue 12); a ``suspended`` run holds no lease, is in no ready,
scheduled or waiting set, and keeps its slot in its workflow's ``wf-running``
set (so does a woken run until it finishes):

    I9  no lost wake-up: every suspended run has its wake-ups registered (each
        awaited unfinished child names it in ``run:<child>:waiters`` and sits in
        its ``run:<id>:awaits``; its wake-up time is its ``timers`` score), and
        none is still suspended once its condition holds: every awaited child
        finished (or one failed or was canceled) more than ``wake_bound_ms`` ago,
        its wake-up time is past by
        more than ``wake_bound_ms``, or an event it waits for is pending (the
        finish, the timer and ``send_event`` wake it in the same script, so a
        pending awaited event on a suspended run is lost at once). Checked on
        the final state and, through :func:`check_waits`, on live snapshots.
    I10 no event is lost or consumed twice: every event whose ``send_event``
        was acknowledged (``event-sent`` in the ledger) is consumed by one wait
        step (its record in Redis) or still pending; no event id is consumed by
        two steps; every consumed event was sent.
    I11 no wait step completes twice: every handler execution that returned
        from a wait step (``wait-done``: the step record's ``seq`` and
        ``finishedAt``, and the event id it got) saw the same completion, the
        one Redis holds.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.faults import ledger

__all__ = ["Report", "check", "check_waits"]

STATUSES = ("scheduled", "queued", "running", "suspended", "succeeded", "failed", "canceled")
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
_BATCH = 500


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


@dataclass
class Report:
    """What the checker found. ``violations`` empty means every invariant holds."""

    runs: int = 0
    acknowledged: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    reexecuted: list[str] = field(default_factory=list)
    inflight_reexecutions: int = 0
    step_executions: int = 0
    fenced_executions: int = 0
    max_concurrency: dict[str, int] = field(default_factory=dict)
    max_physical_concurrency: dict[str, int] = field(default_factory=dict)
    child_runs: int = 0
    idempotency_keys: int = 0
    cron_runs: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    double_executions: list[str] = field(default_factory=list)
    events_sent: int = 0
    events_consumed: int = 0
    events_pending: int = 0
    lost_events: list[str] = field(default_factory=list)
    wait_steps: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violate(self, code: str, text: str) -> None:
        self.violations.append(f"{code}: {text}")

    def summary(self) -> str:
        conc = ", ".join(
            f"{wf} {n} (physical {self.max_physical_concurrency.get(wf, n)})"
            for wf, n in sorted(self.max_concurrency.items())
        )
        lines = [
            f"runs {self.runs} (acknowledged {self.acknowledged}), "
            f"statuses {dict(sorted(self.statuses.items()))}",
            f"lost {len(self.lost)}, stuck {len(self.stuck)}, completed steps re-executed "
            f"{len(self.reexecuted)}; of {self.step_executions} step executions "
            f"{self.inflight_reexecutions} were cut off in flight (killed or fenced: may run "
            f"again, allowed); fenced handler executions {self.fenced_executions}",
            f"max concurrency seen: {conc or '-'}; child runs {self.child_runs}, "
            f"idempotency keys {self.idempotency_keys}, cron runs {self.cron_runs}; "
            f"runs executed twice at once {len(self.double_executions)}",
            f"events sent (acknowledged) {self.events_sent}, consumed {self.events_consumed}, "
            f"pending {self.events_pending}, lost {len(self.lost_events)}; "
            f"wait steps completed {self.wait_steps}",
        ]
        if self.failures:
            lines.append(f"failed runs by error type: {dict(self.failures)}")
        if self.violations:
            shown = self.violations[:25]
            more = len(self.violations) - len(shown)
            lines.append("VIOLATIONS:\n  " + "\n  ".join(shown))
            if more:
                lines.append(f"  ... and {more} more")
        return "\n".join(lines)

    def assert_ok(self, *, all_succeeded: bool = False) -> None:
        problems = list(self.violations)
        if all_succeeded:
            bad = {s: n for s, n in self.statuses.items() if s != "succeeded" and n}
            if bad:
                problems.append(
                    f"expected every run to succeed, found {bad}: {dict(self.failures)}"
                )
        assert not problems, (
            "invariants violated:\n"
            + self.summary()
            + ("\n" + problems[-1] if all_succeeded and problems and not self.violations else "")
        )


class _Redis:
    """Batched reads of one namespace."""

    def __init__(self, raw: redis.Redis, prefix: str) -> None:
        self.r = raw
        self.tag = "{" + prefix + "}"

    def key(self, *parts: str) -> str:
        return ":".join((self.tag, *parts))

    def run_ids(self) -> set[str]:
        ids = {_s(m) for m in self.r.zrange(self.key("runs", "created"), 0, -1)}
        pattern = _glob_escape(self.tag) + ":run:*"
        for k in self.r.scan_iter(match=pattern, count=2000, _type="hash"):
            name = _s(k)[len(self.tag) + len(":run:") :]
            if not name.endswith(":steps"):
                ids.add(name)
        return ids

    def scored(self, key: str) -> list[tuple[str, float]]:
        """A whole ZSET, (member, score) in score order."""
        pairs: Any = self.r.zrange(key, 0, -1, withscores=True)
        return [(_s(m), float(score)) for m, score in pairs]

    def hashes(self, ids: list[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for i in range(0, len(ids), _BATCH):
            chunk = ids[i : i + _BATCH]
            with self.r.pipeline(transaction=False) as pipe:
                for run_id in chunk:
                    pipe.hgetall(self.key("run", run_id))
                for run_id, raw in zip(chunk, pipe.execute(), strict=True):
                    if raw:
                        out[run_id] = {_s(k): _s(v) for k, v in raw.items()}
        return out

    def steps(self, ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for i in range(0, len(ids), _BATCH):
            chunk = ids[i : i + _BATCH]
            with self.r.pipeline(transaction=False) as pipe:
                for run_id in chunk:
                    pipe.hgetall(self.key("run", run_id, "steps"))
                for run_id, raw in zip(chunk, pipe.execute(), strict=True):
                    recs: dict[str, dict[str, Any]] = {}
                    for k, v in raw.items():
                        try:
                            recs[_s(k)] = json.loads(v)
                        except ValueError:
                            recs[_s(k)] = {"status": "corrupt"}
                    out[run_id] = recs
        return out

    def index_scores(self, ids: list[str]) -> dict[str, list[str]]:
        where: dict[str, list[str]] = defaultdict(list)
        for status in STATUSES:
            key = self.key("runs", "status", status)
            for i in range(0, len(ids), _BATCH):
                chunk = ids[i : i + _BATCH]
                scores = self.r.zmscore(key, chunk)
                for run_id, score in zip(chunk, scores, strict=True):
                    if score is not None:
                        where[run_id].append(status)
        # index members that have no run at all
        known = set(ids)
        for status in STATUSES:
            for m in self.r.zrange(self.key("runs", "status", status), 0, -1):
                if _s(m) not in where and _s(m) not in known:
                    where[_s(m)].append(status)
        return where


def _check_runs(
    report: Report,
    db: _Redis,
    runs: Mapping[str, Mapping[str, str]],
    acknowledged: Iterable[str],
) -> None:
    """I1 and I2."""
    ids = sorted(runs)
    for run_id in sorted(set(acknowledged)):
        if run_id not in runs:
            report.lost.append(run_id)
            report.violate("I1", f"acknowledged run {run_id} is missing from Redis")
    for run_id, h in runs.items():
        status = h.get("status", "")
        report.statuses[status or "(none)"] += 1
        if status not in TERMINAL:
            report.stuck.append(run_id)
            report.violate(
                "I1", f"run {run_id} ({h.get('workflow')}) is {status or 'without status'}"
            )
        if status == "failed":
            try:
                err = json.loads(h.get("errorJson") or "{}")
            except ValueError:
                err = {"type": "unreadable"}
            report.failures[str(err.get("type"))] += 1
    where = db.index_scores(ids)
    for run_id in ids:
        status = runs[run_id].get("status", "")
        found = where.get(run_id, [])
        if found != [status]:
            report.violate("I2", f"run {run_id} has status {status!r} but is indexed in {found}")
    for run_id, found in where.items():
        if run_id not in runs:
            report.violate("I2", f"index {found} holds {run_id}, which has no run hash")
    _check_queues(report, db, runs)


def _check_queues(report: Report, db: _Redis, runs: Mapping[str, Mapping[str, str]]) -> None:
    """I2 over the queue structures (keyspace v2): ready, scheduled and waiting
    sets hold only runs of their status, a queued run sits in exactly one of
    them, every queue with scheduled runs is in due-queues no later than its
    head, and the leases ZSET matches the running runs."""
    r = db.r
    queues = {_s(q) for q in r.smembers(db.key("queues"))} | {
        h.get("queue", "") for h in runs.values()
    }
    workflows = {h.get("workflow", "") for h in runs.values()} | {
        _s(w) for w in r.smembers(db.key("workflows"))
    }
    holders: list[tuple[str, list[str], set[str]]] = []
    due = dict(db.scored(db.key("due-queues")))
    for q in sorted(x for x in queues if x):
        holders.append(
            (f"q:{q}:ready", [_s(x) for x in r.zrange(db.key("q", q, "ready"), 0, -1)], {"queued"})
        )
        scheduled = db.scored(db.key("q", q, "scheduled"))
        holders.append((f"q:{q}:scheduled", [x for x, _ in scheduled], {"scheduled"}))
        if scheduled and not (q in due and due[q] <= scheduled[0][1]):
            report.violate(
                "I2", f"queue {q} has scheduled runs from {scheduled[0][1]} but due-queues "
                f"says {due.get(q)}"
            )  # fmt: skip
    for wf in sorted(w for w in workflows if w):
        holders.append(
            (
                f"wf-waiting:{wf}",
                [_s(x) for x in r.zrange(db.key("wf-waiting", wf), 0, -1)],
                {"queued"},
            )
        )
        holders.append(
            (
                f"wf-running:{wf}",
                [_s(x) for x in r.smembers(db.key("wf-running", wf))],
                # a suspended run keeps its slot, and so does a woken one until it ends
                {"running", "suspended", "queued"},
            )
        )
    homes: Counter[str] = Counter()
    for name, members, allowed in holders:
        for run_id in members:
            if not name.startswith("wf-running:"):
                homes[run_id] += 1
            status = runs.get(run_id, {}).get("status")
            if status in TERMINAL or (status is not None and status not in allowed):
                report.violate("I2", f"{name} holds {run_id}, which is {status}")
    _check_slots(report, holders, runs)
    for run_id, h in runs.items():
        if h.get("status") in ("queued", "scheduled") and homes[run_id] != 1:
            report.violate(
                "I2", f"{h.get('status')} run {run_id} is in {homes[run_id]} ready/scheduled/"
                "waiting sets (expected exactly one)"
            )  # fmt: skip
    _check_leases(report, db, runs)


def _check_slots(
    report: Report,
    holders: list[tuple[str, list[str], set[str]]],
    runs: Mapping[str, Mapping[str, str]],
) -> None:
    """I2 over wf-running: a suspended run keeps its slot; a queued run holds one
    only after a wake-up (it keeps the slot it had while suspended)."""
    slot_holders: set[str] = set()
    for name, members, _ in holders:
        if not name.startswith("wf-running:"):
            continue
        slot_holders.update(members)
        for run_id in members:
            h = runs.get(run_id, {})
            if h.get("status") == "queued" and not h.get("wokenAt"):
                report.violate("I2", f"{name} holds {run_id}, which is queued (never woken)")
    for run_id, h in runs.items():
        if h.get("status") == "suspended" and run_id not in slot_holders:
            report.violate("I2", f"suspended run {run_id} lost its slot in wf-running")


def _check_leases(report: Report, db: _Redis, runs: Mapping[str, Mapping[str, str]]) -> None:
    """I2: every running run holds a live lease (hash token + leases entry); no
    other run has a leases entry."""
    secs, micros = db.r.time()
    now = int(secs) * 1000 + int(micros) // 1000
    leases = dict(db.scored(db.key("leases")))
    for run_id, h in runs.items():
        if h.get("status") == "running":
            if not h.get("lease") or run_id not in leases:
                report.violate("I2", f"running run {run_id} has no lease")
            elif leases[run_id] < now:
                report.violate("I2", f"running run {run_id} has an expired lease (not reaped)")
    for run_id in leases:
        status = runs.get(run_id, {}).get("status")
        if status != "running":
            report.violate("I2", f"leases holds {run_id}, which is {status}")


@dataclass
class _Exec:
    pid: int
    run: str
    wf: str
    token: str
    start: int
    ppid: int | None = None
    end: int | None = None
    outcome: str | None = None
    last_recorded: int | None = None
    last_sent: int | None = None  # the step-end of that record (its write went out after)


def _executions(events: list[dict[str, Any]]) -> list[_Exec]:
    """Pair handler-start/-end per process (inline child runs nest)."""
    stacks: dict[int, list[_Exec]] = defaultdict(list)
    out: list[_Exec] = []
    step_ends: dict[str, int] = {}
    for ev in events:
        kind = ev["ev"]
        if kind == "step-end":
            step_ends[ev["exec"]] = ev["mono"]
        elif kind == "handler-start":
            ex = _Exec(
                ev["pid"], ev["run"], ev["wf"], ev.get("token", ""), ev["mono"], ev.get("ppid")
            )
            stacks[ev["pid"]].append(ex)
            out.append(ex)
        elif kind == "handler-end":
            stack = stacks[ev["pid"]]
            for ex in reversed(stack):
                if ex.run == ev["run"] and ex.end is None:
                    ex.end = ev["mono"]
                    ex.outcome = ev.get("outcome")
                    stack.remove(ex)
                    break
        elif kind == "step-recorded":
            for ex in reversed(stacks[ev["pid"]]):
                if ex.run == ev["run"] and ex.end is None:
                    ex.last_recorded = ev["mono"]
                    ex.last_sent = step_ends.get(ev["exec"])
                    break
    return out


#: A SIGSTOP of a supervisor: (stop, cont, pids, landed). ``stop`` is when the
#: harness recorded it, just before it sent the signal; ``landed`` when sending it
#: had returned (``stop-landed``; ``stop`` in a ledger without one): in between
#: the process may still run a little, log and send (a loaded machine took 9 ms).
Stop = tuple[int, int, set[int], int]


def _stops(events: list[dict[str, Any]]) -> list[Stop]:
    """Each SIGSTOP of a supervisor as (stop, cont, pids, landed)."""
    spans: list[Stop] = []
    stopped: tuple[int, set[int]] | None = None
    landed: int | None = None
    for ev in events:
        if ev["ev"] == "fault" and ev.get("kind") == "stop":
            stopped, landed = (ev["mono"], {int(p) for p in ev.get("pids") or []}), None
        elif ev["ev"] == "stop-landed" and stopped is not None and landed is None:
            landed = ev["mono"]
        elif ev["ev"] == "fault" and ev.get("kind") == "cont" and stopped is not None:
            at = stopped[0] if landed is None else landed
            spans.append((stopped[0], ev["mono"], stopped[1], at))
            stopped = None
    return spans


def _held_until(e: _Exec, stops: list[Stop]) -> int:
    """When ``e``'s last acknowledged write was applied, at the latest: when its
    acknowledgement was read, unless the process was stopped between sending it
    and reading the reply. A stopped process sends nothing, so the write went out
    before the stop landed and Redis applied it on receipt, under the lease; the
    reply is read only after SIGCONT, when that lease may be long gone and its
    slot taken by another run. The harness records a stop just before it sends
    SIGSTOP: a write whose step ended between the two went out before the stop
    too (3a with the default lease: a step-end 9 ms after the stop's record, its
    write applied at once, read after SIGCONT 6 s later, counted as holding the
    lease all along: three lease holders of a limit of 2)."""
    assert e.last_recorded is not None
    end = e.last_recorded
    if e.last_sent is not None:
        for _, cont, pids, landed in stops:
            if e.pid in pids and e.last_sent <= landed and cont <= end:
                end = min(end, landed)
    return end


def _peak(intervals: list[tuple[int, int]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def _deaths(events: list[dict[str, Any]]) -> dict[int, int]:
    """When each process stopped executing: killed or stopped by a fault (until
    continued), else seen gone by the harness's exit watcher (``exit``)."""
    deaths: dict[int, int] = {}
    exits: dict[int, int] = {}
    for ev in events:
        if ev["ev"] == "fault" and ev.get("kind") in ("kill", "stop"):
            for pid in ev.get("pids", []):
                deaths.setdefault(int(pid), ev["mono"])
        if ev["ev"] == "fault" and ev.get("kind") == "cont":
            for pid in ev.get("pids", []):
                deaths.pop(int(pid), None)
        if ev["ev"] == "exit":
            for pid in ev.get("pids", []):
                exits.setdefault(int(pid), ev["mono"])
    return {**exits, **deaths}


def _physical_end(e: _Exec, deaths: Mapping[int, int]) -> int | None:
    return e.end if e.end is not None else deaths.get(e.pid)


def _check_concurrency(
    report: Report, events: list[dict[str, Any]], limits: Mapping[str, int]
) -> None:
    """I4."""
    deaths = _deaths(events)
    stops = _stops(events)
    by_wf: dict[str, list[_Exec]] = defaultdict(list)
    for ex in _executions(events):
        by_wf[ex.wf].append(ex)
        if ex.outcome == "lost":
            report.fenced_executions += 1
    for wf, execs in by_wf.items():
        limit = limits.get(wf)
        held = [(e.start, _held_until(e, stops)) for e in execs if e.last_recorded is not None]
        report.max_concurrency[wf] = _peak(held)
        physical: list[tuple[int, int]] = []
        for e in execs:
            end = _physical_end(e, deaths)
            if end is None:
                report.violate("I4", f"execution of {e.run} in pid {e.pid} has no end and no death")
                continue
            physical.append((e.start, end))
        report.max_physical_concurrency[wf] = _peak(physical)
        if limit is not None and report.max_concurrency[wf] > limit:
            report.violate(
                "I4",
                f"{wf}: {report.max_concurrency[wf]} lease holders ran at once (limit {limit})",
            )


def _fault_spans(events: list[dict[str, Any]]) -> list[tuple[int, int, list[int]]]:
    """Each fault as (start, end, pids): a fault lasts ``seconds`` when it says so,
    or until its ``<kind>-end`` event; a ``stop`` lasts until its ``cont``. The
    harness records a stop just *before* it sends SIGSTOP, so a stopped process may
    still log an event (an execution's start) after the stop's time: while its
    supervisor is stopped, that execution is cut off like any other."""
    spans: list[tuple[int, int, list[int]]] = []
    open_at: dict[str, int] = {}
    for ev in events:
        if ev["ev"] != "fault":
            continue
        kind = str(ev.get("kind"))
        if kind == "cont":
            i = open_at.pop("stop", None)
            if i is not None:
                start, end, pids = spans[i]
                spans[i] = (start, max(end, ev["mono"]), pids)
            continue
        if kind.endswith("-end"):
            i = open_at.pop(kind[: -len("-end")], None)
            if i is not None:
                start, _, pids = spans[i]
                spans[i] = (start, ev["mono"], pids)
            continue
        end = ev["mono"] + int(float(ev.get("seconds") or 0) * 1e9)
        open_at[kind] = len(spans)
        spans.append((ev["mono"], end, [int(p) for p in ev.get("pids") or []]))
    return spans


def _cut_off(earlier: _Exec, later_start: int, spans: list[tuple[int, int, list[int]]]) -> bool:
    """Whether a fault while both executions could exist took ``earlier``'s lease
    away: one on Redis or the network (no pids), or one that hit its supervisor."""
    for start, end, pids in spans:
        if start > later_start or end < earlier.start:
            continue
        if not pids or (earlier.ppid is not None and earlier.ppid in pids):
            return True
    return False


def _check_exclusive(report: Report, events: list[dict[str, Any]]) -> None:
    """I8."""
    deaths = _deaths(events)
    spans = _fault_spans(events)
    by_run: dict[str, list[_Exec]] = defaultdict(list)
    for ex in _executions(events):
        by_run[ex.run].append(ex)
    for run_id, execs in by_run.items():
        execs.sort(key=lambda e: e.start)
        for i, a in enumerate(execs):
            end = _physical_end(a, deaths)
            if end is None:
                continue  # I4 reports an execution without an end
            for b in execs[i + 1 :]:
                if b.start >= end:
                    break
                if _cut_off(a, b.start, spans):
                    continue
                report.double_executions.append(run_id)
                report.violate(
                    "I8",
                    f"run {run_id} ({a.wf}) was executed twice at once: pid {a.pid} from "
                    f"{a.start} to {end} and pid {b.pid} from {b.start} (ns, monotonic), "
                    "with no fault in between that cut the first one off",
                )


@dataclass
class _StepLog:
    """What the ledger says about step executions."""

    starts: dict[tuple[str, str], list[tuple[int, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    ends: dict[str, int] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    recorded: dict[tuple[str, str], int] = field(default_factory=dict)
    # exec -> (pid, step-start); (pid, run) -> times of lease-confirmed
    started: dict[str, tuple[int, int]] = field(default_factory=dict)
    confirmed: dict[tuple[int, str], list[int]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> _StepLog:
        log = cls()
        for ev in events:
            kind = ev["ev"]
            if kind == "step-start":
                log.starts[(ev["run"], ev["step"])].append((ev["mono"], ev["exec"]))
                log.started[ev["exec"]] = (int(ev["pid"]), ev["mono"])
            elif kind == "lease-confirmed":
                log.confirmed[(int(ev["pid"]), ev["run"])].append(ev["mono"])
            elif kind == "step-end":
                log.ends[ev["exec"]] = ev["mono"]
                if ev.get("ok") is False:
                    log.failed.add(ev["exec"])
            elif kind == "step-recorded":
                key = (ev["run"], ev["step"])
                log.recorded[key] = min(log.recorded.get(key, ev["mono"]), ev["mono"])
        return log


def _begun_before_a_stop(log: _StepLog, stops: list[Stop], run_id: str, e: str, bound: int) -> bool:
    """Whether step execution ``e`` was decided (its lease confirmed) before
    ``bound`` and its process was stopped and continued between that and its
    ``step-start``: it was under way when the stop came, and resumed inside the
    step (cut off in flight), as an execution stopped inside the step function
    does."""
    pid, start = log.started.get(e, (0, 0))
    before = [t for t in log.confirmed.get((pid, run_id), []) if t < start]
    if not before or max(before) > bound:
        return False
    confirmed = max(before)
    # The harness logs a stop just before SIGSTOP lands, so a confirmation may be
    # logged a little after the stop's time: what counts is that the process was
    # continued between its confirmation and its step-start.
    return any(pid in pids and confirmed < cont <= start for _, cont, pids, _ in stops)


def _timeline(events: list[dict[str, Any]], run_id: str) -> str:
    """The ledger's events of one run and every fault, in time order (ms from
    the run's first event): what a violation needs to be read."""
    mine = [ev for ev in events if ev.get("run") == run_id or ev["ev"] == "fault"]
    first = min((ev["mono"] for ev in mine if ev.get("run") == run_id), default=0)
    lines = []
    for ev in sorted(mine, key=lambda e: e["mono"]):
        extra = {k: v for k, v in ev.items() if k not in ("ev", "pid", "mono", "run")}
        lines.append(
            f"  {(ev['mono'] - first) / 1e6:+10.1f} ms pid {ev.get('pid')} {ev['ev']} {extra}"
        )
    return "\n".join(lines)


def _holder(stored: Mapping[str, Any] | None) -> str | None:
    """The execution id inside a succeeded step record (our step functions return it)."""
    if not stored or stored.get("status") != "succeeded" or not stored.get("outputJson"):
        return None
    try:
        out = json.loads(stored["outputJson"])
    except ValueError:
        return None
    return out.get("exec") if isinstance(out, dict) else None


def _check_steps(
    report: Report,
    events: list[dict[str, Any]],
    runs: Mapping[str, Mapping[str, str]],
    steps: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> None:
    """I3."""
    log = _StepLog.of(events)
    stops = _stops(events)
    for key, execs in log.starts.items():
        run_id, name = key
        report.step_executions += len(execs)
        # The success is recorded at the latest when Redis acknowledged it to the
        # ledger, and no earlier than the end of the execution whose output it holds.
        bound = log.recorded.get(key)
        holder = _holder(steps.get(run_id, {}).get(name))
        if holder in log.ends:
            end = log.ends[holder]
            bound = end if bound is None else min(bound, end)
        redone = [e for _, e in execs if e != holder and e not in log.failed]
        late = [
            (t, e)
            for t, e in execs
            if bound is not None
            and t > bound
            and e != holder
            and not _begun_before_a_stop(log, stops, run_id, e, bound)
        ]
        for t, e in late:
            report.reexecuted.append(f"{run_id}/{name}")
            report.violate(
                "I3",
                f"step {name!r} of run {run_id} executed again ({e}) "
                f"{(t - (bound or 0)) / 1e6:.1f} ms after its success was recorded "
                f"(holder {holder}); timeline:\n{_timeline(events, run_id)}",
            )
        report.inflight_reexecutions += max(0, len(redone) - len(late))
    for run_id, name in log.recorded:
        stored = steps.get(run_id, {}).get(name)
        if run_id in runs and (not stored or stored.get("status") != "succeeded"):
            report.violate(
                "I3", f"acknowledged record of step {name!r} of run {run_id} is gone from Redis"
            )


def _group(
    report: Report, runs: Mapping[str, Mapping[str, str]]
) -> tuple[
    dict[tuple[str, str], list[str]], dict[tuple[str, str], list[str]], dict[str, list[str]]
]:
    """Runs by (workflow, idempotency key), children by (parent, key), cron runs by key."""
    by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    children: dict[tuple[str, str], list[str]] = defaultdict(list)
    cron: dict[str, list[str]] = defaultdict(list)
    for run_id, h in runs.items():
        key = h.get("idempotencyKey")
        if key:
            by_key[(h.get("workflow", ""), key)].append(run_id)
        if h.get("parentRunId"):
            report.child_runs += 1
            children[(h["parentRunId"], key or f"(no key: {run_id})")].append(run_id)
        if h.get("cronId"):
            report.cron_runs += 1
            cron[key or f"(no key: {run_id})"].append(run_id)
    return by_key, children, cron


def _idem_key(tag: str, workflow: str, key: str) -> str:
    def part(text: str) -> str:
        return f"{len(text.encode())}:{text}"

    return f"{tag}:idempo:{part(workflow)}:{part(key)}"


def _check_keys(
    report: Report, db: _Redis, runs: Mapping[str, Mapping[str, str]], events: list[dict[str, Any]]
) -> None:
    """I5, I6, I7."""
    by_key, children, cron = _group(report, runs)
    report.idempotency_keys = len(by_key)
    for (parent, key), ids in children.items():
        if len(ids) != 1:
            report.violate("I5", f"parent {parent} has {len(ids)} children for {key}: {ids}")
    for (wf, key), ids in by_key.items():
        if len(ids) != 1:
            report.violate("I6", f"idempotency key {key!r} of {wf} maps to {len(ids)} runs {ids}")
            continue
        _check_idempotency_key(report, db, wf, key, ids[0], runs[ids[0]])
    acked: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ev in events:
        if ev["ev"] == "enqueued" and ev.get("key"):
            acked[(ev["wf"], ev["key"])].add(ev["run"])
    for (wf, key), acked_ids in acked.items():
        if len(acked_ids) != 1:
            report.violate("I6", f"enqueue of {wf} with key {key!r} returned {sorted(acked_ids)}")
    for key, ids in cron.items():
        if len(ids) != 1:
            report.violate("I7", f"cron fire {key} produced {len(ids)} runs {ids}")
    _check_parents(report, runs)


def _check_idempotency_key(
    report: Report, db: _Redis, wf: str, key: str, run_id: str, run: Mapping[str, str]
) -> None:
    """I6 for one key: it names its run, and it expires once the run finished."""
    idem = _idem_key(db.tag, wf, key)
    mapped = db.r.get(idem)
    if mapped is None:
        return
    if _s(mapped) != run_id:
        report.violate("I6", f"idempotency key {key!r} of {wf} points at {_s(mapped)}")
    elif run.get("status") in TERMINAL and db.r.pttl(idem) < 0:
        report.violate("I6", f"idempotency key {key!r} of finished run {run_id} never expires")


def _check_parents(report: Report, runs: Mapping[str, Mapping[str, str]]) -> None:
    """I5: a parent that finished points at the one child its emit step started."""
    for run_id, h in runs.items():
        if h.get("workflow") != "fx-parent" or h.get("status") != "succeeded":
            continue
        try:
            out = json.loads(h.get("outputJson") or "null")
        except ValueError:
            out = None
        emitted = out.get("emitted") if isinstance(out, dict) else None
        if not emitted or runs.get(emitted, {}).get("parentRunId") != run_id:
            report.violate("I5", f"parent {run_id}: emitted child {emitted} not found")


# --------------------------------------------------------------- durable waits

WAKE_BOUND_MS = 2000


def _wait_of(raw: Any) -> dict[str, Any] | None:
    try:
        wait = json.loads(raw) if raw else None
    except ValueError:
        return None
    return wait if isinstance(wait, dict) else None


def _ev_key(db: _Redis, run_id: str, event: str) -> str:
    return db.key("run", run_id, f"ev:{len(event.encode())}:{event}")


def check_waits(raw: redis.Redis, prefix: str, wake_bound_ms: int = WAKE_BOUND_MS) -> list[str]:
    """I9 on one consistent snapshot (MULTI) of the suspended runs; safe on a live
    system. Returns the violations found (empty: none)."""
    db = _Redis(raw, prefix)
    out: list[str] = []
    ids = [_s(m) for m in raw.zrange(db.key("runs", "status", "suspended"), 0, -1)]
    for i in range(0, len(ids), _BATCH):
        chunk = ids[i : i + _BATCH]
        with raw.pipeline(transaction=False) as pipe:
            for run_id in chunk:
                pipe.hget(db.key("run", run_id), "wait")
            waits = {rid: _wait_of(w) for rid, w in zip(chunk, pipe.execute(), strict=True)}
        with raw.pipeline(transaction=True) as pipe:
            pipe.time()
            for run_id in chunk:
                wait = waits[run_id] or {}
                pipe.hmget(db.key("run", run_id), "status", "wait")
                pipe.zscore(db.key("timers"), run_id)
                pipe.smembers(db.key("run", run_id, "awaits"))
                for child in wait.get("children") or []:
                    pipe.hmget(db.key("run", child), "status", "finishedAt")
                    pipe.sismember(db.key("run", child, "waiters"), run_id)
                for event in wait.get("events") or []:
                    pipe.llen(_ev_key(db, run_id, event))
            replies = iter(pipe.execute())
        secs, micros = next(replies)
        now = int(secs) * 1000 + int(micros) // 1000
        for run_id in chunk:
            wait = waits[run_id] or {}
            (status, raw_wait), timer, awaits = next(replies), next(replies), next(replies)
            children = [(c, next(replies), next(replies)) for c in wait.get("children") or []]
            pending_events = [
                (e, int(next(replies))) for e in wait.get("events") or []
            ]  # fmt: skip
            if _s(status or b"") != "suspended":
                continue  # woken (or finished) between the two reads
            if _wait_of(raw_wait) != waits[run_id]:
                continue  # suspended again on another wait in between
            out.extend(_judge_wait(run_id, wait, now, timer, awaits, children, pending_events,
                                   wake_bound_ms))  # fmt: skip
    return out


def _judge_children(
    run_id: str, now: int, awaits: Any, children: list[tuple[str, Any, Any]], bound: int
) -> list[str]:
    """I9 for the awaited children of one suspended run."""
    out: list[str] = []
    awaited = {_s(m) for m in awaits or ()}
    finished_at: list[int] = []
    unfinished = 0
    for child, (status, finished), named in children:
        if status is None or _s(status) in TERMINAL:
            at = int(float(_s(finished))) if finished else 0
            finished_at.append(at)
            if status is not None and _s(status) != "succeeded" and now - at > bound:
                out.append(
                    f"I9: suspended run {run_id}: awaited child {child} ended {_s(status)} "
                    f"{now - at} ms ago (bound {bound} ms), not resumed (its wait fails at once)"
                )
            continue
        unfinished += 1
        if child not in awaited or not named:
            out.append(
                f"I9: suspended run {run_id} waits for child {child}, but the child's finish "
                "would not wake it (not in its awaits set or the child's waiters)"
            )
    if children and not unfinished and now - max(finished_at) > bound:
        out.append(
            f"I9: suspended run {run_id}: all {len(children)} awaited children finished "
            f"{now - max(finished_at)} ms ago (bound {bound} ms), not resumed"
        )
    return out


def _judge_wait(
    run_id: str,
    wait: Mapping[str, Any],
    now: int,
    timer: Any,
    awaits: Any,
    children: list[tuple[str, Any, Any]],
    pending_events: list[tuple[str, int]],
    bound: int,
) -> list[str]:
    if not wait:
        return [f"I9: suspended run {run_id} has no readable wait (nothing can wake it)"]
    out = _judge_children(run_id, now, awaits, children, bound)
    wake_at = wait.get("wakeAt")
    if wake_at is not None:
        if timer is None or int(float(timer)) != int(wake_at):
            out.append(
                f"I9: suspended run {run_id} wakes at {wake_at} but its timers entry is {timer}"
            )
        if now - int(wake_at) > bound:
            out.append(
                f"I9: suspended run {run_id}: its wake-up time passed {now - int(wake_at)} ms "
                f"ago (bound {bound} ms), not resumed"
            )
    for event, n in pending_events:
        if n:
            out.append(
                f"I9: suspended run {run_id} waits for event {event!r}, which has {n} pending "
                "(a lost wake-up)"
            )
    if not children and wake_at is None and not pending_events:
        out.append(f"I9: suspended run {run_id} waits for nothing (nothing can wake it)")
    return out


def _fingerprint(stored: Mapping[str, Any] | None) -> str | None:
    if not stored:
        return None
    return f"{stored.get('status')}:{stored.get('seq')}:{stored.get('finishedAt')}"


def _eid(stored: Mapping[str, Any] | None) -> str | None:
    """The event id in a succeeded wait_for_event step record (our payloads carry one)."""
    if not stored or stored.get("status") != "succeeded" or not stored.get("outputJson"):
        return None
    try:
        out = json.loads(stored["outputJson"])
    except ValueError:
        return None
    return str(out["eid"]) if isinstance(out, dict) and "eid" in out else None


def _pending_events(db: _Redis, sent: list[dict[str, Any]]) -> Counter[str]:
    """Event ids still pending in the lists of the runs and names events were sent to."""
    names: dict[str, set[str]] = defaultdict(set)
    for ev in sent:
        names[ev["run"]].add(ev["event"])
    pending: Counter[str] = Counter()
    targets = sorted((run_id, event) for run_id, evs in names.items() for event in evs)
    for i in range(0, len(targets), _BATCH):
        chunk = targets[i : i + _BATCH]
        with db.r.pipeline(transaction=False) as pipe:
            for run_id, event in chunk:
                pipe.lrange(_ev_key(db, run_id, event), 0, -1)
            for items in pipe.execute():
                for item in items:
                    try:
                        payload = json.loads(item)
                    except ValueError:
                        continue
                    if isinstance(payload, dict) and "eid" in payload:
                        pending[str(payload["eid"])] += 1
    return pending


def _check_events(
    report: Report,
    db: _Redis,
    events: list[dict[str, Any]],
    steps: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> None:
    """I10."""
    consumed: dict[str, list[str]] = defaultdict(list)
    for run_id, recs in steps.items():
        for name, stored in recs.items():
            eid = _eid(stored)
            if eid is not None:
                consumed[eid].append(f"{run_id}/{name}")
    sent = [ev for ev in events if ev["ev"] == "event-sent"]
    attempted = {str(ev["eid"]) for ev in sent}
    pending = _pending_events(db, sent)
    report.events_sent = sum(1 for ev in sent if ev.get("acked"))
    report.events_consumed = sum(len(v) for v in consumed.values())
    report.events_pending = sum(pending.values())
    for eid, where in sorted(consumed.items()):
        if len(where) > 1:
            report.violate("I10", f"event {eid} was consumed {len(where)} times: {where}")
        elif pending[eid]:
            report.violate("I10", f"event {eid} was consumed ({where[0]}) and is still pending")
        if eid not in attempted and events:
            report.violate("I10", f"event {eid} consumed by {where[0]} was never sent")
    for ev in sent:
        eid = str(ev["eid"])
        if ev.get("acked") and eid not in consumed and not pending[eid]:
            report.lost_events.append(eid)
            report.violate(
                "I10", f"event {eid} ({ev['event']!r} to run {ev['run']}) was acknowledged, "
                "and is neither consumed nor pending: lost"
            )  # fmt: skip


def _check_wait_steps(
    report: Report,
    events: list[dict[str, Any]],
    steps: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> None:
    """I11."""
    seen: dict[tuple[str, str, int], set[tuple[str, str | None]]] = defaultdict(set)
    for ev in events:
        if ev["ev"] != "wait-done":
            continue
        attempt = 0 if ev.get("ok") else int(ev.get("attempt") or 0)
        seen[(ev["run"], ev["step"], attempt)].add((str(ev.get("fp")), ev.get("eid")))
    report.wait_steps = len(seen)
    for (run_id, name, attempt), got in sorted(seen.items()):
        if len(got) > 1:
            report.violate(
                "I11", f"wait step {name!r} of run {run_id} completed more than once: "
                f"{sorted(got, key=str)}"
            )  # fmt: skip
            continue
        stored = steps.get(run_id, {}).get(name)
        fp, eid = next(iter(got))
        if stored is None or (attempt and stored.get("attempt") != attempt):
            continue
        if fp != _fingerprint(stored) or (eid is not None and eid != _eid(stored)):
            report.violate(
                "I11", f"wait step {name!r} of run {run_id} returned completion {fp} ({eid}), "
                f"but Redis holds {_fingerprint(stored)} ({_eid(stored)})"
            )  # fmt: skip


def check(
    raw: redis.Redis,
    prefix: str,
    ledger_dir: str | Path,
    *,
    limits: Mapping[str, int] | None = None,
    extra_acknowledged: Iterable[str] = (),
    wake_bound_ms: int = WAKE_BOUND_MS,
    live_violations: Iterable[str] = (),
) -> Report:
    """Check I1-I11 for ``prefix``; call it once the system is quiet.
    ``live_violations``: I9 findings of :func:`check_waits` on earlier snapshots."""
    report = Report()
    db = _Redis(raw, prefix)
    events = sorted(ledger.read_all(ledger_dir), key=lambda ev: ev["mono"])
    acknowledged = {ev["run"] for ev in events if ev["ev"] == "enqueued"} | set(extra_acknowledged)
    report.acknowledged = len(acknowledged)
    ids = sorted(db.run_ids() | acknowledged)
    runs = db.hashes(ids)
    report.runs = len(runs)
    steps = db.steps(sorted(runs))
    _check_runs(report, db, runs, acknowledged)
    _check_steps(report, events, runs, steps)
    _check_concurrency(report, events, limits or {})
    _check_exclusive(report, events)
    _check_keys(report, db, runs, events)
    for text in [*live_violations, *check_waits(raw, prefix, wake_bound_ms)]:
        code, _, rest = text.partition(": ")
        report.violate(code, rest)
    _check_events(report, db, events, steps)
    _check_wait_steps(report, events, steps)
    return report
