"""The public client: start runs, inspect them, cancel them, wait for results, sync metadata.

A :class:`Client` is the run store (:class:`~redflow_mp.runs.Runs`: its own
connections, one key namespace, a registry) with the public API on top. The
work lives by responsibility: enqueueing and reading a run in ``runs.py``,
waiting for results in ``results.py``, queries in ``queries.py``, registry
sync in ``sync.py``; this module wires them into one object and keeps the
process's default client. It is thread-safe: hot paths use a connection per
thread, everything else redis-py's pool.

``create_client()`` also makes the process's default client (used by
``Workflow.run()`` without ``client=``) unless ``default=False``.

Fork safety: connections are per process (see ``transport.py``); a forked
child that keeps using an inherited client opens fresh sockets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar, cast, overload

import redis
from redis.exceptions import ResponseError

from . import batch, queries, shardmeta, sync, xshard
from .clientargs import (
    batch_options,
    cascade_refused,
    check_client_args,
    known_target,
    run_options,
)
from .codec import RunState, RunStatus, StepState, WorkflowMeta
from .connection import DEFAULT_WAIT_MS, NotReplicatedError
from .errors import NETWORK_ERRORS, RunNotResumableError, ShardsMismatchError
from .handle import RunHandle
from .ids import new_token
from .keys import Keys
from .options import (
    NO_OPTIONS,
    RunOptions,
    cannot_be_run_id,
    check_name,
    check_reason,
    check_run_id,
    spec_run_id,
)
from .registry import Registry, Workflow, default_starter, set_default_starter
from .runs import (
    DEFAULT_MAX_EVENT_BYTES_PER_RUN,
    DEFAULT_MAX_EVENTS_PER_RUN,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PREFIX,
    Runs,
    cancel_accepted,
    target_of_name,
)
from .scripts import Scripts
from .shardset import Shard
from .transport import Transport, Wire

__all__ = ["Client", "RunHandle", "create_client", "get_default_client", "set_default_client"]

I = TypeVar("I")  # noqa: E741 - input type of a workflow
_new_handle = object.__new__
O = TypeVar("O")  # noqa: E741 - output type of a workflow


class Client(Runs):
    """Access to one redflow namespace (``prefix``) on one Redis."""

    #: ``Workflow.run(client=...)`` takes it without looking its methods over.
    sync_starter = True

    def __repr__(self) -> str:
        return f"<Client {self.transport.describe()} prefix={self.prefix!r}>"

    def close(self) -> None:
        """Close this process's connections; any later call raises ``RedflowError``."""
        super().close()
        if default_starter() is self:
            set_default_starter(None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def enqueue_workflow(
        self,
        workflow: Workflow[I, O],
        input: I | Mapping[str, Any] | None = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        parent_run_id: str | None = None,
    ) -> RunHandle[O]:
        """Enqueue a run of a known :class:`Workflow` (what ``Workflow.run`` calls)."""
        if (
            run_at is None
            and queue_override is None
            and idempotency_key is None
            and idempotency_ttl is None
            and timeout is None
            and priority is None
            and not parent_run_id
        ):  # what run_options() answers, without its call: Workflow.run's common run
            # RunHandle(self, run_id) without its __init__ frame (about 1,500 CPU
            # instructions an enqueue, benchmarks.enqueue_instr)
            handle: RunHandle[O] = _new_handle(RunHandle)
            handle.id = self.enqueue(workflow, input, NO_OPTIONS)
            handle._client = self
            return handle
        options = run_options(
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            timeout,
            priority,
            parent_run_id,
        )
        return RunHandle(self, self.enqueue(workflow, input, options))

    def run_by_name(
        self,
        name: str,
        input: Any = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        parent_run_id: str | None = None,
    ) -> RunHandle[Any]:
        """Enqueue a run of the workflow called ``name``.

        The workflow's queue, attempts and priority come from this client's
        registry, else from metadata synced to Redis. A name known to neither is
        enqueued on ``queue_override`` or ``"default"``; the worker that picks it
        up fails it with ``UnknownWorkflowError`` (not retried). Put on
        ``"default"`` that way (no ``queue_override``), the run is marked
        (``queueFallback``) and a supervisor that registers the workflow within
        60 s moves it to the workflow's queue (``adopt_runs.lua``).
        """
        check_name(name, "workflow name")
        options = run_options(
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            timeout,
            priority,
            parent_run_id,
        )
        return RunHandle(self, self.enqueue(name, input, options))

    def enqueue_workflow_many(
        self,
        workflow: Workflow[I, O],
        inputs: Iterable[I | Mapping[str, Any] | None],
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_keys: Iterable[str | None] | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
    ) -> list[RunHandle[O]]:
        """Enqueue a run of a known :class:`Workflow` per input (what
        ``Workflow.run_many`` calls); see :meth:`run_many_by_name`."""
        options = batch_options(run_at, queue_override, idempotency_ttl, timeout, priority)
        ids = self.enqueue_many(workflow, inputs, options, idempotency_keys)
        return [RunHandle(self, run_id) for run_id in ids]

    def run_many_by_name(
        self,
        name: str,
        inputs: Iterable[Any],
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_keys: Iterable[str | None] | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        priority: int | None = None,
    ) -> list[RunHandle[Any]]:
        """Enqueue one run of the workflow called ``name`` per input; the handles in
        the order of ``inputs``.

        The workflow's options come as for :meth:`run_by_name`, once for the whole
        batch. Every input (and idempotency key) is checked before anything is
        written: the first bad one raises, naming its index, and no run of the
        batch is written. The runs are written in chunks of
        :data:`~redflow_mp.batch.BATCH_CHUNK` (fewer past
        :data:`~redflow_mp.batch.BATCH_CHUNK_BYTES`), one round trip each, every chunk
        atomic. ``idempotency_keys``, one per input (None for none): an item
        whose key names an existing run gets that run's handle.
        """
        check_name(name, "workflow name")
        options = batch_options(run_at, queue_override, idempotency_ttl, timeout, priority)
        ids = self.enqueue_many(name, inputs, options, idempotency_keys)
        return [RunHandle(self, run_id) for run_id in ids]

    def enqueue_many(
        self,
        workflow: Workflow[Any, Any] | str,
        inputs: Iterable[Any],
        options: RunOptions,
        idempotency_keys: Iterable[str | None] | None = None,
    ) -> list[str]:
        """Enqueue a run per input (checked first, then chunk by chunk); the run ids."""
        target = known_target(self.registry, workflow, options)
        if target is None:  # a name only: its synced metadata
            name = cast(str, workflow)
            target = target_of_name(name, self.get_workflow_meta(name), options)
        datas, keys = batch.encode_batch(target, inputs, idempotency_keys, self.max_payload_bytes)
        shard = self.shard_of_workflow(target.workflow)  # one workflow: one shard
        calls = batch.chunk_calls(
            shard.keys, target, datas, keys, options, suffix=shard.scripts.id_suffix
        )
        return self._send_chunks(shard, calls, len(datas))

    def _send_chunks(self, shard: Shard, calls: Iterator[batch.ChunkCall], total: int) -> list[str]:
        """Send each chunk's ``enqueue_runs`` call; the run ids, in order.

        Overlapped (:func:`_send_ahead`): the next chunk is built and sent before
        the previous reply is read, so the client's work on one chunk runs while
        Redis applies the other. Each chunk stays one atomic script call. After
        an error reply or a network error, every chunk not answered yet goes one
        by one through ``Scripts.run`` (script reload, error mapping, one resend),
        which is harmless for a chunk already applied: its run ids are fixed, so a
        resend finds the runs it made and returns the same reply. So when a chunk
        fails for good, the chunk sent after it may have been written too; and
        when a chunk got an error reply while the next one was applied (a script
        cache flushed and reloaded by another client in between), its resend
        comes after that chunk, whose runs are then claimed first. A chunk that
        fails for good raises its error with what the batch wrote
        (:meth:`batch.Progress.failed`): the chunks answered before it, and the
        chunks sent after it whose replies were read.
        """
        scripts = shard.scripts
        progress = batch.Progress(total)
        scripts.ensure_loaded()
        wire = shard.transport.ahead()
        left, late = (
            _send_ahead(wire, scripts, calls, progress) if wire is not None else (deque(), [])
        )
        for n, (sent, call_keys, args) in enumerate((*left, *calls)):
            try:
                try:
                    reply = scripts.run(
                        "enqueue_runs", call_keys, tuple(args), retry=False, fresh=False
                    )  # resent below
                except NotReplicatedError:
                    raise  # answered: a resend would only wait for the same replica
                except NETWORK_ERRORS:  # the ids make a resend harmless
                    reply = scripts.run("enqueue_runs", call_keys, tuple(args), retry=True)
            except Exception as exc:
                after = [(left[j][0], late[j - 1]) for j in range(n + 1, len(left))]
                raise progress.failed(exc, len(sent), after)  # noqa: B904 (its cause is set)
            progress.answered(batch.many_reply(sent, reply))
        return [run_id for run_id in progress.enqueued if run_id is not None]

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle for an existing run id (no round trip)."""
        return RunHandle(self, check_run_id(run_id))

    @overload
    def get_run_steps(self, run_id: str) -> list[StepState] | None: ...
    @overload
    def get_run_steps(self, *, id: str) -> list[StepState] | None: ...
    def get_run_steps(
        self, run_id: str | None = None, *, id: str | None = None
    ) -> list[StepState] | None:
        """The run's recorded steps in execution order, or None for an unknown id
        (the id also as ``id=``, SPEC's spelling). Read by HSCAN pages of about
        1,000 records or 1 MiB (one record bigger than that comes alone), so no
        one call holds Redis for the whole run."""
        run_id = spec_run_id(run_id, id, "get_run_steps")
        shard = self.shard_of_run(run_id)
        return queries.drive(shard.redis, queries.get_run_steps(shard.keys, run_id))

    def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
    ) -> list[RunState]:
        """Runs, newest first, optionally of one workflow and/or one status (every
        shard's, merged: ``queries.list_runs_all``).

        ``after``: the id of the last run of the previous page. The page is the
        ``limit`` runs right after that run (``offset`` is then not used): a deep
        page costs what the first does, and paging on while runs are enqueued
        neither repeats nor skips one. Pass ``offset`` too: it places the page
        when that run has been removed meanwhile (retention).

        Every round trip is bounded, whatever the runs hold and whatever
        ``limit`` is (up to ``queries.MAX_LIST_POSITION``): the rows of at most
        1,000 runs, then their payloads in round trips of about 4 MiB (one
        larger payload alone), and at most 10,000 ids of an index
        (``listing.run_states``). The list itself holds every run asked for:
        :meth:`iter_runs` holds a page at a time."""
        return queries.list_runs_all(self, workflow, status, limit, offset, after)

    def iter_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
    ) -> Iterator[RunState]:
        """:meth:`list_runs` as an iterator: the same runs, read 1,000 per round
        trip, so a large ``limit`` does not hold every run in memory at once
        (``queries.iter_runs_all``); ``after`` as for :meth:`list_runs`. Bad
        arguments raise at the call."""
        return queries.iter_runs_all(self, workflow, status, limit, offset, after=after)

    @overload
    def cancel_run(self, run_id: str, reason: str | None = None) -> bool: ...
    @overload
    def cancel_run(self, *, id: str, reason: str | None = None) -> bool: ...
    def cancel_run(
        self, run_id: str | None = None, reason: str | None = None, *, id: str | None = None
    ) -> bool:
        """Cancel a run.

        A queued, scheduled or suspended run ends ``canceled`` at once; a running run is
        asked to stop (``ctx.cancelled``), raises ``RunCanceledError`` at its next
        step, and is stopped by the supervisor after ``cancel_grace`` if it
        ignores the request. Returns True if the run is canceled or will be,
        False if it does not exist or had already finished. Its unfinished
        children started by ``run_workflow``/``run_workflows`` are canceled too
        (recursively), not those started by ``emit_workflow``. The run id may
        also be given as ``id=`` (SPEC's spelling).
        """
        run_id = spec_run_id(run_id, id, "cancel_run")
        why = check_reason(reason)
        if cannot_be_run_id(run_id):
            return False
        status = self.scripts_for(run_id).cancel(run_id, why)
        accepted = cancel_accepted(status)
        if accepted:
            try:
                self.cancel_children(run_id, why or None)
            except ResponseError as exc:
                named = cascade_refused(exc, run_id)
                if named is None:
                    raise
                raise named from exc
            if status == "canceled" and self.shard_count > 1:
                xshard.kick_parent_of(self, run_id, status)  # a parent in another shard
        return accepted

    def resume_run(self, run_id: str) -> RunHandle[Any]:
        """Put a ``failed`` or ``canceled`` run back in its queue as the same run.

        The run gets the next attempt number (and its retries again) and keeps
        its succeeded steps: they return their recorded outputs instead of
        running again; the steps that failed or were interrupted run again.
        ``runs retry`` / :func:`~redflow_mp.admin.retry_run` is the other choice
        (a new run that executes everything). One script (a run with more step
        records than one call reads, 1,000 or 1 MiB, has those to drop dropped
        by pages first, as its claim reads them): a run that is unknown,
        or queued, scheduled, suspended, running or succeeded, raises
        :class:`RunNotResumableError` and nothing changes. The children that a
        cancel of the run canceled (``run_workflow`` cascade) are resumed by its
        wait step when it replays.
        """
        run_id = check_run_id(run_id)
        if cannot_be_run_id(run_id):
            raise RunNotResumableError(run_id, None)
        self.scripts_for(run_id).resume(run_id, new_token())
        return RunHandle(self, run_id)

    # ------------------------------------------------------------ workflows

    def list_workflows(self) -> list[WorkflowMeta]:
        """Metadata of every synced workflow, by name (each read in its shard)."""
        return queries.list_workflows_all(self)

    def sync_registry(self, registry: Registry | None = None, *, app: str) -> None:
        """Write workflow metadata and cron entries of ``registry`` for ``app``.

        Ownership: several apps (supervisors started with different ``--app``)
        may register the same workflow. Each sync records, per workflow it
        registers, ``app -> now`` in ``wf-apps:<name>``; the metadata hash holds
        the definition of the latest sync (its ``app`` field names that app), so
        apps sharing a workflow should define it alike. When ``app`` syncs a
        registry that no longer lists a workflow it registered:

        - if ``app`` synced it less than 30 s ago, nothing changes (other hosts
          of the same app may still run the previous code: a rolling deploy);
        - nor while a running supervisor of ``app`` loads it (each one renews
          its live registration every 10 s: hosts of one app may load
          different modules);
        - otherwise ``app`` withdraws its own registration, and the metadata and
          cron entries (never runs) are removed only when no other app still
          registers the workflow. An app never withdraws another app's
          registration, however old: a supervisor syncs at start and on HUP only,
          so an old sync time does not mean the app is gone.

        Metadata written before this rule (an ``app`` field, no ``wf-apps``
        record) counts as that app's registration at its ``updatedAt``.

        A sync that changes a workflow's ``rate_limit`` puts the runs waiting on
        starts the old limit reserved back in their ready sets: their claims
        reserve again under the new limit.
        """
        sync.sync_registry(self, registry, app=app)


def create_client(
    url: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    *,
    redis: redis.Redis | None = None,
    default: bool = True,
    registry: Registry | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    redis_functions: bool = False,
    max_events_per_run: int = DEFAULT_MAX_EVENTS_PER_RUN,
    max_event_bytes_per_run: int = DEFAULT_MAX_EVENT_BYTES_PER_RUN,
    cluster: bool = False,
    sentinel_master: str | None = None,
    durability: str = "none",
    durability_wait_ms: int = DEFAULT_WAIT_MS,
    shards: int = 1,
    verify_shards: bool = True,
) -> Client:
    """Create a client for ``url`` and ``prefix``; without ``url``: ``$REDFLOW_URL``,
    then ``$REDIS_URL``, else ``redis://localhost:6379/0`` (as the CLI).

    ``rediss://`` URLs use TLS; ``redis://user:password@host`` authenticates
    (ACL users included). Passing ``redis=`` reuses that client's connection
    settings (the client opens its own connections, with bytes replies). Unless
    ``default=False`` the new client becomes the process's default client.
    ``max_payload_bytes`` bounds each encoded input, output and event payload:
    1024 to 536870912 (512 MiB, Redis's largest argument, as the supervisor's
    setting), else ``ValueError``.

    ``redis_functions=True`` runs the scripts as a Redis >= 7 function library
    (somewhat cheaper for Redis) instead of EVALSHA. Only for a server where no
    other user may run ``FUNCTION``: a library is found by name, and a user who
    can ``FUNCTION LOAD REPLACE`` could swap its code (a library of our name with
    other code is refused, but one replaced after we checked is not noticed).

    A Redis Cluster is found from any node's URL (``INFO`` says
    ``cluster_enabled:1``; ``cluster=True`` says so without asking): the client
    connects to the master serving the prefix's slot and follows it through
    failovers and resharding. ``redis+sentinel://[user:pass@]host:port[,host:port
    ...]/service_name[/db]`` connects to a Sentinel group's master
    (``sentinel_master`` names the service where the URL does not).
    docs/operations.md, "Redis Cluster, Sentinel and durability".

    ``durability="wait"`` acknowledges every run-state write (enqueue, claim,
    step, finish, cancel: each is one script call) only once a replica has it
    (``WAIT 1 durability_wait_ms`` pipelined after the call, or after a batch of
    them: a ``run_many`` chunk, ``run_workflows``, a cancel cascade's chunk); its
    reply may take ``durability_wait_ms`` plus the 5 s socket timeout, and a write
    whose WAIT answered is never resent; ``"waitaof"`` once
    the master and a replica fsynced it (``WAITAOF 1 1``, Redis >= 7.2 with
    appendonly on both). A write not confirmed in time raises
    :class:`~redflow_mp.NotReplicatedError` (a network error: its fate is
    unknown). The default ``"none"`` acknowledges when the master has it.
    docs/operations.md, "Durability".

    ``shards`` (1 to 1024, default 1) splits the namespace over that many Redis
    hash tags (on a cluster: masters); it must be the value the keyspace was
    created or migrated with. docs/operations.md, "Shards". Unless
    ``verify_shards=False``, the client reads the count the keyspace records (one
    ``HMGET``, writing nothing) and raises :class:`~redflow_mp.ShardsMismatchError`
    naming ``redflow migrate --shards N`` when it differs or a migration is
    pending; a fresh keyspace records nothing until a supervisor starts on it, and
    any other error of that read (Redis not reachable yet, a refused password, a
    server that is not the cluster asked for) skips the check: the client's first
    use reports it as before.
    """
    check_client_args(url, redis, redis_functions, shards, verify_shards, registry)
    transport = Transport(
        url,
        redis,
        cluster=cluster,
        sentinel_master=sentinel_master,
        route_key=Keys(prefix).tag,
        durability=durability,
        durability_wait_ms=durability_wait_ms,
    )
    client = Client(
        transport,
        prefix=prefix,
        registry=registry,
        max_payload_bytes=max_payload_bytes,
        redis_functions=redis_functions,
        max_events_per_run=max_events_per_run,
        shards=shards,
        max_event_bytes_per_run=max_event_bytes_per_run,
    )
    if verify_shards:
        try:
            shardmeta.check_recorded(client)
        except ShardsMismatchError:
            client.close()
            raise
        except Exception:  # not reachable, auth, not a cluster...: the
            pass  # client's first use raises it as before; the check is skipped
    if default:
        set_default_client(client)
    return client


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the process's default (used by ``Workflow.run()``)."""
    set_default_starter(client)


def get_default_client() -> Client | None:
    """The process's default client, if one was created."""
    starter = default_starter()
    return starter if isinstance(starter, Client) else None


_WIRE_ERRORS: tuple[type[Exception], ...] = (ResponseError, *NETWORK_ERRORS)


def _send_ahead(
    wire: Wire, scripts: Scripts, calls: Iterator[batch.ChunkCall], progress: batch.Progress
) -> tuple[deque[batch.ChunkCall], list[Any]]:
    """Send ``calls`` on ``wire`` with at most two in flight, giving each answered
    chunk's run ids to ``progress``; returns the chunks left unanswered by an error
    reply or a network error (empty when every one was answered), and the replies
    (or errors) read for the ones after the first of them. Leaves the wire in
    step: the replies still due are read, or the wire is closed."""
    inflight: deque[batch.ChunkCall] = deque()
    late: list[Any] = []
    try:
        for call in calls:
            inflight.append(call)
            wire.send(scripts.command("enqueue_runs", call[1], tuple(call[2])))
            if len(inflight) == 2:
                progress.answered(batch.many_reply(inflight[0][0], wire.read()))
                inflight.popleft()
        while inflight:
            progress.answered(batch.many_reply(inflight[0][0], wire.read()))
            inflight.popleft()
    except _WIRE_ERRORS as exc:
        # After a network error redis-py closed the connection (the next command
        # reconnects); after an error reply, the replies still due are read (kept:
        # a chunk after a refused one may have been written).
        for _ in range(len(inflight) - 1):
            if not isinstance(exc, ResponseError):
                late.append(exc)  # sent, no reply: it may have been written
                continue
            try:
                late.append(wire.read())
            except _WIRE_ERRORS as err:
                late.append(err)
    except BaseException:
        if inflight:
            wire.close()  # replies left unread must never answer a later command
        raise
    return inflight, late
