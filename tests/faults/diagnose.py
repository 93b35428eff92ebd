"""What a fault case prints about a run that did not finish: where Redis keeps it
(its hash, the set holding it and the score, the queue's ``ready-queues`` bound
and bell, its lease) and which server said so (its role, its replication offset).
A case through Sentinel adds :func:`sentinel_view` (who each sentinel names as
master, the tail of each one's log: a second failover shows there).

Read-only, best effort: a read that fails is printed as its error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from tests.faults import ledger
from tests.helpers import texts

__all__ = ["describe_runs", "ledger_timeline", "sentinel_view"]

# Past this many stuck runs, the first ones only (one is usually enough).
MAX_RUNS = 5


def _t(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (redis.RedisError, OSError) as exc:
        return f"<{type(exc).__name__}: {exc}>"


def server_role(raw: redis.Redis) -> str:
    """The role of the server ``raw`` reads, as it says (INFO replication)."""
    info = _try(raw.info, "replication")
    if not isinstance(info, dict):
        return str(info)
    keys = ("role", "master_port", "master_link_status", "master_repl_offset", "connected_slaves")
    port = raw.connection_pool.connection_kwargs.get("port")
    return f":{port} " + " ".join(f"{k}={info[k]}" for k in keys if k in info)


def describe_runs(raw: redis.Redis, prefix: str, run_ids: Iterable[str]) -> str:
    """Where each run sits, as the server ``raw`` reads sees it."""
    tag = "{" + prefix + "}"
    now_ms = int(time.time() * 1000)
    server_ms = _try(raw.time)
    lines = [
        f"server {server_role(raw)}; server time {server_ms}, local {now_ms} ms",
    ]
    index = _try(raw.zrange, f"{tag}:ready-queues", 0, -1, False, True)
    lines.append(f"ready-queues: {index}")
    leases = _try(raw.zrange, f"{tag}:leases", 0, -1, False, True)
    lines.append(f"leases: {leases}")
    lines.append(f"due-queues: {_try(raw.zrange, f'{tag}:due-queues', 0, -1, False, True)}")
    for run_id in list(run_ids)[:MAX_RUNS]:
        h = _try(raw.hgetall, f"{tag}:run:{run_id}")
        fields = {_t(k): _t(v) for k, v in h.items()} if isinstance(h, dict) else h
        lines.append(f"run {run_id}: {fields}")
        if not isinstance(fields, dict) or not fields:
            continue
        q, wf = fields.get("queue", ""), fields.get("workflow", "")
        for name in (f"q:{q}:ready", f"q:{q}:scheduled", f"wf-waiting:{wf}"):
            score = _try(raw.zscore, f"{tag}:{name}", run_id)
            head = _try(raw.zrange, f"{tag}:{name}", 0, 0, False, True)
            size = _try(raw.zcard, f"{tag}:{name}")
            lines.append(f"  {name}: score {score}; size {size}, head {head}")
        running = _try(raw.smembers, f"{tag}:wf-running:{wf}")
        running = sorted(texts(running)) if isinstance(running, set) else running
        lines.append(f"  wf-running:{wf}: {running}")
        lines.append(f"  ready-queues[{q}]: {_try(raw.zscore, f'{tag}:ready-queues', q)}")
        lines.append(f"  q:{q}:bell: {_try(raw.lrange, f'{tag}:q:{q}:bell', 0, -1)}")
        lines.append(f"  leases[{run_id}]: {_try(raw.zscore, f'{tag}:leases', run_id)}")
        lines.append(f"  steps: {_try(raw.hkeys, f'{tag}:run:{run_id}:steps')}")
    return "\n".join(lines)


def ledger_timeline(ledger_dir: Path, run_ids: Iterable[str], marks: dict[str, int]) -> str:
    """The ledger's events of each run (its executions, steps, ends) and every
    fault, with the harness's ``marks`` (name -> ledger time, e.g. when settle
    returned), in time order: was the run ever executed, and when, against the
    failover and the settle."""
    events = [*ledger.read_all(ledger_dir)]
    out = []
    for run_id in list(run_ids)[:MAX_RUNS]:
        mine = [ev for ev in events if ev.get("run") == run_id or ev.get("ev") == "fault"]
        mine += [{"ev": f"(harness) {name}", "mono": at} for name, at in marks.items()]
        first = min((ev["mono"] for ev in mine if ev.get("run") == run_id), default=0)
        out.append(f"ledger of run {run_id} (ms from its first event):")
        for ev in sorted(mine, key=lambda e: int(e["mono"])):
            extra = {k: v for k, v in ev.items() if k not in ("ev", "pid", "mono", "run")}
            ms = (int(ev["mono"]) - first) / 1e6
            out.append(f"  {ms:+10.1f} ms pid {ev.get('pid', '-')} {ev['ev']} {extra}")
    return "\n".join(out)


def sentinel_view(
    sentinels: Iterable[Any], service: str, logs: Iterable[Path], tail: int = 60
) -> str:
    """The master each sentinel names, and from each log the lines of its
    failovers (``+sdown``, ``+odown``, ``+switch-master``, ...: a second failover
    shows there), the last ``tail`` of them."""
    lines = []
    for s in sentinels:
        addr = _try(s.call, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
        lines.append(f"sentinel :{s.port} names master {addr}")
    for path in logs:
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError as exc:
            text = [f"<{exc}>"]
        events = [line for line in text if any(e in line for e in _EVENTS)] or text
        lines.append(f"--- {path} (failover events, last {tail})")
        lines.extend(events[-tail:])
    return "\n".join(lines)


# Sentinel log events that mark a failover or a change of role.
_EVENTS = (
    "sdown", "odown", "failover", "switch-master", "convert-to-slave", "elected-leader",
    "selected-slave", "promoted-slave", "slave-reconf", "+reboot", "+role-change",
)  # fmt: skip
