"""The soak's takeover check: after one of two supervisors is SIGSTOPped, every
lease it held must be taken over, while the other supervisor's runs go on.

The snapshot is every live lease at the stop, the stopped supervisor's and the
running one's alike (a lease names no supervisor). A run of the snapshot is
done with once it is

- finished, or leased under another token (taken over), or
- moved by its own holder to a state that needs no lease: suspended, scheduled
  for a retry, or queued again for a later attempt.

A stopped process moves nothing, and the reaper only ever puts an expired run
back to ``queued`` with its attempt unchanged (``requeue`` in ``_lib.lua``), so
for the stopped supervisor's runs this is exactly "finished or leased again".
The second clause is for the running supervisor's own runs: they are not
stranded, and what they wait for next is the ordinary queue. A retried run goes
into the ready set at its due time (``promote_runs.lua``), behind every run
enqueued before it; a parent suspends until its child, enqueued now, gets its
turn. With one supervisor serving alone behind the producer's backlog, that
turn can be minutes away, so "leased again within the deadline" is no
property of those runs.

While polled, :class:`Takeover` keeps each run's trail of states; on a timeout
:meth:`Takeover.describe` says where every run that was not done with stands.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from tests.faults.workload import QUEUE
from tests.helpers import texts

__all__ = ["Takeover", "live_leases"]

TERMINAL = ("succeeded", "failed", "canceled")
NO_LEASE_NEEDED = ("suspended", "scheduled")
FIELDS = ("status", "lease", "attempt", "workflow", "createdAt", "availableAt", "updatedAt")


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def live_leases(raw: redis.Redis, prefix: str) -> dict[str, tuple[str, str]]:
    """{run id: (lease token, attempt)} of every running run whose lease is live."""
    tag = "{" + prefix + "}"
    ids = texts(raw.zrange(f"{tag}:runs:status:running", 0, -1))
    secs, micros = raw.time()
    now = secs * 1000 + micros // 1000
    with raw.pipeline(transaction=False) as pipe:
        for run_id in ids:
            pipe.hmget(f"{tag}:run:{run_id}", "lease", "attempt")
            pipe.zscore(f"{tag}:leases", run_id)
        replies = pipe.execute()
    out = {}
    for i, run_id in enumerate(ids):
        (token, attempt), expiry = replies[2 * i], replies[2 * i + 1]
        if token and expiry is not None and expiry >= now:
            out[run_id] = (_text(token), _text(attempt) or "1")
    return out


def done_with(fields: dict[str, Any], token: str, attempt: str) -> bool:
    """Whether a run whose hash now holds ``fields`` no longer waits for a takeover
    of the lease (``token``, ``attempt``) it held at the stop."""
    status = fields.get("status")
    if status in TERMINAL or fields.get("lease") != token:
        return True
    return status in NO_LEASE_NEEDED or (
        status == "queued" and (fields.get("attempt") or "1") != attempt
    )


class Takeover:
    """Polls the runs of a :func:`live_leases` snapshot until each is done with."""

    def __init__(self, raw: redis.Redis, prefix: str, snapshot: dict[str, tuple[str, str]]):
        self.raw = raw
        self.tag = "{" + prefix + "}"
        self.snapshot = snapshot
        self.t0 = time.monotonic()
        self.trail: dict[str, list[str]] = {run_id: [] for run_id in snapshot}
        self.last: dict[str, dict[str, Any]] = {}

    def _read(self) -> dict[str, dict[str, Any]]:
        ids = list(self.snapshot)
        with self.raw.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hmget(f"{self.tag}:run:{run_id}", *FIELDS)
            replies = pipe.execute()
        return {
            run_id: dict(zip(FIELDS, map(_text, reply), strict=True))
            for run_id, reply in zip(ids, replies, strict=True)
        }

    def done(self) -> bool:
        now = self._read()
        t = time.monotonic() - self.t0
        for run_id, fields in now.items():
            token = self.snapshot[run_id][0]
            state = (
                f"{fields['status']} attempt {fields['attempt']}"
                f"{'' if fields['lease'] == token else ' new lease'}"
            )
            trail = self.trail[run_id]
            if not trail or not trail[-1].endswith(" " + state):
                trail.append(f"{t:.2f}s {state}")
            self.last[run_id] = fields
        return all(done_with(fields, *self.snapshot[run_id]) for run_id, fields in now.items())

    def describe(self) -> str:
        """Where each run not done with stands: its hash, lease entry and place in line."""
        lines = [f"{len(self.snapshot)} leases live at the stop"]
        for run_id, fields in self.last.items():
            if done_with(fields, *self.snapshot[run_id]):
                continue
            queue = f"{self.tag}:q:{QUEUE}:ready"
            lines.append(
                f"{run_id} {json.dumps(fields)} lease entry "
                f"{self.raw.zscore(f'{self.tag}:leases', run_id)} ready rank "
                f"{self.raw.zrank(queue, run_id)} of {self.raw.zcard(queue)}; "
                f"trail: {'; '.join(self.trail[run_id])}"
            )
        return "\n".join(lines)
