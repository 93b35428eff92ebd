"""Every Redis key name redflow-mp uses; nothing else formats a key.

All keys of one namespace are ``{<prefix>}:<name>``. The braces are a Redis
Cluster hash tag, so every key of a prefix lives in one slot and every Lua
script is Cluster-legal. Lua scripts that must derive per-run keys (the claim
loop, the reaper) receive the tag ``{<prefix>}`` in ``ARGV[1]`` and build the
same names as the methods below; ``lua/_lib.lua`` mirrors them and
``tests/lua`` checks that both agree.

Keyspace v2 (``meta`` field ``keyspace`` = 2 once migrated). Keys from the
seed (SPEC §3), with what v2 changed::

    workflows                     SET   all known workflow names
    workflow:<name>               HASH  name queue maxConcurrency app updatedAt cronJson
                                        retriesJson cronIdsJson (+ timeoutMs, priority,
                                        rateLimit)
    workflow-runs:<name>          ZSET  runId -> createdAt
    runs:created                  ZSET  runId -> createdAt
    runs:status:<status>          ZSET  runId -> time of entering that status
    run:<runId>                   HASH  the run; v2 adds ``lease`` (token of the current or
                                        last holder), ``doneToken`` (token whose finish was
                                        applied last), ``priority`` (1..9, absent = 0),
                                        ``idempotencyTtlMs`` (with an idempotency key),
                                        ``traceparent`` / ``tracestate`` (the enqueuer's W3C
                                        trace context, when it had one: tracing.py);
                                        a resumed run: ``attemptBudget``, ``resumedAt``,
                                        ``resumeToken`` (resume_run.lua); ``rateSlot``
                                        (a start reserved under a rate limit);
                                        ``delayMs`` (the delay of the retry or defer
                                        that scheduled it: promote_runs.lua);
                                        ``cascadeGen`` (cascades recorded for it),
                                        ``cascadeAt`` (where a cut cascade stopped:
                                        cascade_at.lua)
    run:<runId>:steps             HASH  stepName -> encoded step state (a step in flight:
                                        status ``running``, written when it starts; a
                                        children wait past max_payload_bytes names its
                                        children: outputJson ``@child-outputs``)
    q:<queue>:ready               ZSET  runId -> ready score: (9 - priority) * 2**44 + the ms
                                        the run became ready; the lowest is claimed first
                                        (v1: a LIST)
    q:<queue>:scheduled           ZSET  runId -> due time (delayed runs and retries)
    cron:def                      HASH  cronId -> encoded cron definition
    cron:next                     ZSET  cronId -> next fire time
    lock:cron                     STR   leader token, PX expiry
    idempo:<len:wf>:<len:key>     STR   runId; no expiry until the run finishes, then
                                        expires at max(createdAt + ttl, finish + 1 s);
                                        removed with the run by retention

v1 keys removed by v2 (``redflow migrate`` converts a v1 keyspace)::

    run:<runId>:lease             STR   lease token, PX expiry (now the ``lease`` field
                                        and the ``leases`` ZSET)
    q:<queue>:processing          LIST  runIds claimed (now ``leases`` and
                                        ``runs:status:running``)

Keys redflow-mp adds::

    leases                        ZSET  runId -> lease expiry (server ms); a lease is live iff
                                        the run's ``lease`` field is the token and this score
                                        is not past (the reaper reads the expired ones)
    runs:unindexed                ZSET  runId -> finish time, for finished runs whose
                                        runs:status:<status> was of another type when they
                                        finished (a neighbour's key): retention sweeps them
                                        from here, the key check puts them back into the
                                        index once it is a ZSET again (a resume takes the
                                        run out)
    due-queues                    ZSET  queue -> earliest due time of its scheduled set (may
                                        be early, never late; the promoter reads due ones)
    queues                        SET   queue names, for listing (ops views, metrics); idle
                                        unserved ones are forgotten by the retention duty
    q:<queue>:bell                LIST  wake-up tokens for idle workers (capped; BLPOP target)
    ready-queues                  ZSET  queue -> a lower bound of its ready set's head score,
                                        for every queue whose ready set holds runs (and some
                                        emptied since): every script that places a run in a
                                        ready set lowers it (ZADD LT); claims of a registered
                                        list walk it from the lowest, set the bounds they read
                                        to the heads and remove empty queues (claims of one
                                        queue leave them; retention's forget_queues drops them)
    qset:<digest>                 ZSET  a worker's queue list (past 32 queues) -> its position
                                        in the list; digest: sha1 of the names (queueset.py).
                                        Written by the claim that registers it, expires a day
                                        later (a claim then registers it again)
    run:<runId>:attempts          LIST  one JSON entry per execution a retry or put-back
                                        ended (attempt, startedAt, finishedAt, outcome,
                                        errorJson, cause), oldest first, capped at the newest
                                        100; removed with the run by retention. The execution
                                        a finish ends is implied by the run hash (field
                                        finalAttempt) and written out by a resume
    cron:last                     HASH  cronId -> runId of its latest fire: a fire time passes
                                        while that run is queued or scheduled (fire_cron.lua);
                                        a sync replacing the entry gives the new one no fire
                                        time of the old schedule up to that run's (cronswap.py);
                                        entries go with their cron entry
    cron:skipped                  HASH  cronId -> fire time (ms) of its latest skipped fire
                                        (at max_concurrency, or its previous run not started):
                                        one field per entry, overwritten by the next skip
                                        (fire_cron.lua); the rewind after the clock went back
                                        never moves an entry back to it (rewind_crons.lua),
                                        nor does a sync replacing the entry give the new one a
                                        fire time of the old schedule up to it (cronswap.py);
                                        entries go with their cron entry
    wf-apps:<name>                HASH  app -> last time that app synced the workflow (ownership)
    app-live:<app>                SET   digests of the live registrations of an app's running
                                        supervisors (pruned by the sync that finds one gone)
    app-reg:<digest>              SET   the workflow names one running supervisor of an app
                                        loads (the digest: of the app and the names); expires
                                        30 s after its last renewal (every 10 s, one PEXPIRE)
    app-wfs:<app>                 SET   the workflows an app registers whose keys are in this
                                        shard (a superset: added with their wf-apps entry,
                                        removed with it); the registry duty's withdrawal
                                        reads it, not every workflow (withdrawal.py)
    wf-running:<name>             SET   runIds of the workflow currently running (concurrency gate);
                                        the reaper frees a slot of a parked workflow whose run
                                        is gone, finished or of another type (reap_runs.lua)
    wf-waiting:<name>             ZSET  queued runIds parked behind max_concurrency, scored
                                        like ready (v1: a LIST); by a claim, or at enqueue or
                                        promotion while the workflow is at its limit with runs
                                        parked
    wf-suspended:<name>           SET   suspended runIds holding a slot of wf-running:<name>
                                        (suspend_run adds, wake/finalize remove): the deadlock
                                        rule counts it past 256 slots
    parked                        SET   workflow names whose wf-waiting set is non-empty
    rate:<name>                   ZSET  the workflow's rate limit plan: one member per
                                        start (actual or reserved) -> its start time (server
                                        ms), trimmed to one period; expires a period after
                                        the last one (see ratelimit.py)
    rate-started:<name>           ZSET  the workflow's actual starts (member per start ->
                                        its startedAt), trimmed to one period; expires a
                                        period after the last one: the window the limit is
                                        checked on when a reserved run comes back
    meta                          HASH  ``keyspace``: the keyspace version (written by migration)
    slot-probe                    (never written) read by the first line of every
                                        script on a Redis Cluster (luafiles.SLOT_PROBE): on
                                        a slot being moved, a script stops there, before
                                        any write (off a cluster: not read at all)
    run-done:<runId>              pub/sub channel: the terminal status, published at finish
                                  (a wake-up: waiters read the run)
    worker-wake:<token>           LIST  wakes a worker blocked on its bells (stop());
                                  shared by a supervisor's children (drain, retirement; 60 s TTL)
    supervisor:<id>               STR   a supervisor's status record (JSON, TTL)
    supervisors                   ZSET  supervisor id -> last refresh time
    relist                        HASH  the relist sweep's cursor (``src``: the index it
                                        reads, ``score`` / ``id``: the last entry read;
                                        relist_runs.lua); lost, a pass starts again
    registry-lost                 STR   written (PX 120 s) per shard by a supervisor whose
                                        registry duty found registrations gone (Redis came
                                        back empty): while it lives, a worker puts back
                                        (``defer``) a ``queueFallback`` run of a workflow it
                                        does not load instead of failing it, until the run
                                        is 120 s old (foreign.py ``held_after_loss``)

Durable waits (issue 12; no migration: v2 keyspaces just gain them)::

    run:<runId>                   HASH  + ``wait`` (JSON, while suspended: children, events,
                                        wakeAt, steps), ``waitEvents`` (while suspended:
                                        "<lease token> <the awaited event names,
                                        JSON list, or nothing>"),
                                        ``suspendedAt``, ``wokenAt``,
                                        ``eventsPending`` (events sent, not consumed yet),
                                        ``eventBytes`` (their payloads' bytes),
                                        ``eventKeyBytes`` (bytes of the keys in
                                        ``event-key-order``: at most 4 MiB),
                                        ``awaitsToken`` (the lease token whose paged
                                        suspend built ``awaits``), ``awaitFailed``
                                        (a child that failed while it was built)
    runs:status:suspended         ZSET  runId -> time it suspended (a suspended run has no
                                        ``leases`` entry but keeps its wf-running slot)
    timers                        ZSET  runId -> wake-up time ms (a sleep's end or a wait's
                                        deadline); the promoter duty wakes the due ones. Also
                                        a finished runId -> its finish time while parents
                                        suspended on it are left to notify (a finish
                                        notifies 100; the duty the rest, a batch per call)
    run:<runId>:awaits            SET   awaited child runIds not finished yet (suspended run;
                                        past SUSPEND_PAGE children, built a page a call
                                        by await_children.lua before suspend_run)
    run:<runId>:waiters           SET   parent runIds suspended on this run; a finish removes
                                        it from their ``awaits`` and wakes a parent whose set
                                        is then empty (of another type: the run's own parent
                                        is still notified, the others wait for a deadline)
    run:<runId>:children          SET   children started by run_workflow / run_workflows
                                        (not emit_workflow): a cancel of the run cancels the
                                        unfinished ones, recursively
    run:<runId>:parents           SET   the other parents (not its parentRunId) that found
                                        the run by its idempotency key and await it:
                                        retention keeps it while one of them is unfinished
    cascades                      ZSET  runId -> time it ended canceled, for a canceled run
                                        with children whose cascade may be unfinished:
                                        written by the script that cancels it (it counts
                                        the run's ``cascadeGen``), removed by the walk that
                                        canceled its children if ``cascadeGen`` is still
                                        the one it read first (or by a resume);
                                        the cron leader finishes those older than 10 s
                                        (a canceller that died between the two)
    on-failure-due                ZSET  runId -> deadline (ms) of its on_failure hook: written
                                        by the finish that fails a run of a workflow with a
                                        hook, removed once the hook returned; a supervisor's
                                        reaper takes over one past its deadline
    run:<runId>:ev:<len:name>     LIST  unconsumed events of one name, oldest first (payload
                                        JSON); length-prefixed like the idempotency keys
    run:<runId>:events            SET   the event names sent to the run (retention deletes
                                        their lists with the run)
    run:<runId>:event-keys        SET   the idempotency keys of the events sent to the run
                                        with one (``send_event(..., idempotency_key=)``):
                                        those of its last ``max_events_per_run`` keyed events
    run:<runId>:event-key-order   LIST  the same keys in the order sent, oldest first (the
                                        oldest past ``max_events_per_run``, or past 4 MiB of
                                        keys, are forgotten)

Shards (``shards > 1``, ``shards.py``): every key above named by a workflow or a run
lives in the tag of the workflow's shard; the indexes exist once per shard; ``meta``,
``supervisors``, ``supervisor:<id>``, ``workflows``, ``app-live:<app>`` and
``app-reg:<digest>`` in shard 0 only. ``lock:cron``:
shard 0's names the leader, which holds a copy with the same token in every other
shard (the key that shard's ``fire_cron`` compares; ``maintenance.LeaderLock``).
Run ids end in ``~<shard>``. Keys added for children in another shard::

    run:<runId>:kicked            HASH  child runId -> terminal status: children in other
                                        shards that finished (kick_parent.lua); read by
                                        suspend_run.lua, removed with the run
    run:<runId>:children          (also written for a child in another shard, by a
                                        separate SADD in the parent's shard)
    run:<runId>:parents           (also holds parents in another shard, by a separate
                                        SADD in the child's shard; retention asks their
                                        shard before removing the run: maintenance.py)
"""

from __future__ import annotations

__all__ = ["Keys", "validate_prefix"]

STATUSES = ("scheduled", "queued", "running", "suspended", "succeeded", "failed", "canceled")


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can name a namespace, else raise ``ValueError``/``TypeError``.

    Braces are refused because redflow-mp adds the Cluster hash tag itself; a brace
    inside the prefix would move the tag and split one namespace over several slots.
    ``~`` is refused because it separates the prefix from a shard's salt in the tags
    of ``shards > 1`` (``shards.py``).
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
    if "~" in prefix:
        raise ValueError(
            f"prefix {prefix!r} must not contain '~': it separates a prefix from a shard's "
            "salt in the hash tags of shards > 1 ({<prefix>~<n>}), so another app's prefix "
            "containing it could name one of this app's shards"
        )
    if len(prefix) > 200:
        raise ValueError("prefix must be at most 200 characters")
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 (surrogateescape)
        raise ValueError(
            f"prefix {prefix!r} is not valid Unicode text: it holds a lone surrogate (bytes "
            "that were not UTF-8)"
        ) from None
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

    def __init__(self, prefix: str, tag: str | None = None) -> None:
        self.prefix = validate_prefix(prefix)
        # shard 0 (and shards = 1): "{<prefix>}"; another shard: its own tag (shards.py)
        self.tag = "{" + prefix + "}" if tag is None else tag

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
    def cron_last(self) -> str:
        return self.tag + ":cron:last"

    @property
    def cron_skipped(self) -> str:
        return self.tag + ":cron:skipped"

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

    @property
    def leases(self) -> str:
        return self.tag + ":leases"

    @property
    def result_confirm(self) -> str:
        return self.tag + ":result-confirm"

    @property
    def runs_unindexed(self) -> str:
        return self.tag + ":runs:unindexed"

    @property
    def due_queues(self) -> str:
        return self.tag + ":due-queues"

    @property
    def fallback_runs(self) -> str:
        """Runs enqueued on ``default`` for want of their workflow's metadata."""
        return self.tag + ":fallback-runs"

    @property
    def registry_lost(self) -> str:
        """Marker (PX): a supervisor found registrations gone from this shard."""
        return self.tag + ":registry-lost"

    @property
    def ready_queues(self) -> str:
        return self.tag + ":ready-queues"

    def qset(self, digest: str) -> str:
        """A registered queue list (queueset.py)."""
        return f"{self.tag}:qset:{digest}"

    @property
    def timers(self) -> str:
        return self.tag + ":timers"

    @property
    def relist(self) -> str:
        """The relist sweep's cursor (relist_runs.lua, lostkeys.relist_runs)."""
        return self.tag + ":relist"

    @property
    def cascades(self) -> str:
        """Canceled runs whose cancel cascade may be unfinished (``cascade.py``)."""
        return self.tag + ":cascades"

    @property
    def on_failure_due(self) -> str:
        """Failed runs whose ``on_failure`` hook has not returned yet (``hookdue.py``)."""
        return self.tag + ":on-failure-due"

    @property
    def meta(self) -> str:
        return self.tag + ":meta"

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

    def wf_suspended(self, name: str) -> str:
        """The suspended runs holding a slot of ``wf_running`` (the deadlock rule)."""
        return f"{self.tag}:wf-suspended:{name}"

    def rate(self, name: str) -> str:
        return f"{self.tag}:rate:{name}"

    def rate_started(self, name: str) -> str:
        return f"{self.tag}:rate-started:{name}"

    # per run
    def run(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}"

    def run_steps(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:steps"

    def run_awaits(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:awaits"

    def run_waiters(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:waiters"

    def run_children(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:children"

    def run_parents(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:parents"

    def run_event_names(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:events"

    def run_event_keys(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:event-keys"

    def run_event_key_order(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:event-key-order"

    def run_events(self, run_id: str, event: str) -> str:
        return f"{self.tag}:run:{run_id}:ev:{_part(event)}"

    def run_kicked(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:kicked"

    def run_attempts(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:attempts"

    def run_done(self, run_id: str) -> str:
        return f"{self.tag}:run-done:{run_id}"

    # per queue
    def q_ready(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:ready"

    def q_scheduled(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:scheduled"

    def q_bell(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:bell"

    # keyspace v1 (read only by the migration)
    def v1_processing(self, queue: str) -> str:
        return f"{self.tag}:q:{queue}:processing"

    def v1_lease(self, run_id: str) -> str:
        return f"{self.tag}:run:{run_id}:lease"

    # idempotency and supervisors
    def idempotency(self, workflow: str, key: str) -> str:
        return f"{self.tag}:idempo:{_part(workflow)}:{_part(key)}"

    def worker_wake(self, token: str) -> str:
        return f"{self.tag}:worker-wake:{token}"

    def supervisor(self, supervisor_id: str) -> str:
        return f"{self.tag}:supervisor:{supervisor_id}"

    # live registrations of running supervisors (sync.py)
    def app_live(self, app: str) -> str:
        return f"{self.tag}:app-live:{app}"

    def app_reg(self, digest: str) -> str:
        return f"{self.tag}:app-reg:{digest}"

    def app_wfs(self, app: str) -> str:
        return f"{self.tag}:app-wfs:{app}"


def step_workflow_key(parent_run_id: str, step_name: str, child_name: str) -> str:
    """Deterministic idempotency key of a child started by a step (SPEC §4)."""
    return f"stepwf:{_part(parent_run_id)}:{_part(step_name)}:{_part(child_name)}"


def retry_key(run_id: str) -> str:
    """Idempotency key of the run that ``redflow runs retry`` (or the dashboard's
    Retry) makes of run ``run_id``: retrying it twice starts one run."""
    return f"retry:{_part(run_id)}"


def cron_key(cron_id: str, fire_at_ms: int) -> str:
    """Deterministic idempotency key of the run a cron fire time creates."""
    return f"cron:{_part(cron_id)}:{fire_at_ms}"
