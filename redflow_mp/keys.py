"""Every Redis key name redflow-mp uses; nothing else formats a key.

All keys of one namespace are ``{<prefix>}:<name>``. The braces are a Redis
Cluster hash tag, so every key of a prefix lives in one slot and every Lua
script is Cluster-legal. Lua scripts that must derive per-run keys (the claim
loop, the reaper) receive the tag ``{<prefix>}`` in ``ARGV[1]`` and build the
same names as the methods below; ``lua/_lib.lua`` mirrors them and
``tests/lua`` checks that both agree.

Keys from the seed (SPEC §3)::

    workflows                     SET   all known workflow names
    workflow:<name>               HASH  name queue maxConcurrency app updatedAt cronJson
                                        retriesJson cronIdsJson
    workflow-runs:<name>          ZSET  runId -> createdAt
    runs:created                  ZSET  runId -> createdAt
    runs:status:<status>          ZSET  runId -> time of entering that status
    run:<runId>                   HASH  the run
    run:<runId>:steps             HASH  stepName -> encoded step state
    run:<runId>:lease             STR   lease token, PX expiry
    q:<queue>:ready               LIST  runIds ready to claim (LPUSH in, pop from the right)
    q:<queue>:processing          LIST  runIds claimed by some worker
    q:<queue>:scheduled           ZSET  runId -> due time (delayed runs and retries)
    cron:def                      HASH  cronId -> encoded cron definition
    cron:next                     ZSET  cronId -> next fire time
    lock:cron                     STR   leader token, PX expiry
    idempo:<len:wf>:<len:key>     STR   runId, with TTL

Keys redflow-mp adds::

    queues                        SET   every queue a run was ever enqueued on (reaper, promoter)
    q:<queue>:bell                LIST  wake-up tokens for idle workers (capped; BLPOP target)
    wf-apps:<name>                HASH  app -> last time that app synced the workflow (ownership)
    wf-running:<name>             SET   runIds of the workflow currently running (concurrency gate)
    wf-waiting:<name>             LIST  queued runIds parked behind max_concurrency
    parked                        SET   workflow names whose wf-waiting list is non-empty
    run-done:<runId>              pub/sub channel: the terminal status, published at finish
                                  ("succeeded\n<outputJson>" when the output is < 64 KiB)
    worker-wake:<token>           LIST  wakes one in-process worker blocked on its bells (stop())
    supervisor:<id>               STR   a supervisor's status record (JSON, TTL)
    supervisors                   ZSET  supervisor id -> last refresh time
"""

from __future__ import annotations

__all__ = ["Keys", "validate_prefix"]

STATUSES = ("scheduled", "queued", "running", "succeeded", "failed", "canceled")


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can name a namespace, else raise ``ValueError``/``TypeError``.

    Braces are refused because redflow-mp adds the Cluster hash tag itself; a brace
    inside the prefix would move the tag and split one namespace over several slots.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if not prefix.strip():
        raise ValueError("prefix must be a non-empty string")
    if "{" in prefix or "}" in prefix:
        raise ValueError(
            f"prefix {prefix!r} must not contain '{{' or '}}': redflow-mp wraps the prefix "
            "in braces itself to form the Redis Cluster hash tag"
        )
    if len(prefix) > 200:
        raise ValueError("prefix must be at most 200 characters")
    return prefix


def _part(value: str) -> str:
    """Length-prefix one component of a composite key so that no two pairs collide.

    The length is in UTF-8 bytes, as Lua's ``string.len`` counts it: ``lua/_lib.lua``
    builds the same names (``k_idem``), and a code-point count would name a
    different key for any non-ASCII workflow name or idempotency key.
    """
    return f"{len(value.encode('utf-8'))}:{value}"


class Keys:
    """Key names for one prefix. Pure: builds strings, talks to nobody."""

    __slots__ = ("prefix", "tag")

    def __init__(self, prefix: str) -> None:
        self.prefix = validate_prefix(prefix)
        self.tag = "{" + prefix + "}"

    # namespace-wide
    @property
    def workflows(self) -> str:
        return self.tag + ":workflows"

    @property
    def runs_created(self) -> str:
        return self.tag + ":runs:created"

    @property
    def cron_def(self) -> str:
        return self.tag + ":cron:def"

    @property
    def cron_next(self) -> str:
        return self.tag + ":cron:next"

    @property
    def lock_cron(self) -> str:
        return self.tag + ":lock:cron"

    @property
    def queues(self) -> str:
        return self.tag + ":queues"

    @property
    def parked(self) -> str:
        return self.tag + ":parked"

    @property
    def supervisors(self) -> str:
        return self.tag + ":supervisors"

    def runs_status(self, status: str) -> str:
        return f"{self.tag}:runs:status:{status}"

    # per workflow
    def workflow(self, name: str) -> str:
        return f"{self.tag}:workflow:{name}"

    def workflow_runs(self, name: str) -> str:
        return f"{self.tag}:workflow-runs:{name}"

    def wf_apps(self, name: str) -> str:
        return f"{self.tag}:wf-apps:{name}"

    def wf_running(self, name: str) -> str:
        return f"{self.tag}:wf-running:{name}"

    def wf_waiting(self, name: str) -> str:
        return f"{self.tag}:wf-waiting:{name}"

    # per run
    def run(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}"

    def run_steps(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:steps"

    def run_lease(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:lease"

    def run_done(self, run_id: str) -> str:
        return f"{self.tag}:run-done:{run_id}"

    # per queue
    def q_ready(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:ready"

    def q_processing(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:processing"

    def q_scheduled(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:scheduled"

    def q_bell(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:bell"

    # idempotency and supervisors
    def idempotency(self, workflow: str, key: str) -> str:
        return f"{self.tag}:idempo:{_part(workflow)}:{_part(key)}"

    def worker_wake(self, token: str) -> str:
        return f"{self.tag}:worker-wake:{token}"

    def supervisor(self, supervisor_id: str) -> str:
        return f"{self.tag}:supervisor:{supervisor_id}"


def step_workflow_key(parent_run_id: str, step_name: str, child_name: str) -> str:
    """Deterministic idempotency key of a child started by a step (SPEC §4)."""
    return f"stepwf:{_part(parent_run_id)}:{_part(step_name)}:{_part(child_name)}"


def cron_key(cron_id: str, fire_at_ms: int) -> str:
    """Deterministic idempotency key of the run a cron fire time creates."""
    return f"cron:{_part(cron_id)}:{fire_at_ms}"
