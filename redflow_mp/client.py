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

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

import redis

from . import queries, sync
from .codec import RunState, RunStatus, StepState, WorkflowMeta
from .connection import DEFAULT_WAIT_MS
from .handle import RunHandle
from .keys import Keys
from .options import RunOptions, check_name, check_reason, check_run_id
from .registry import Registry, Workflow, default_starter, set_default_starter
from .runs import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_PREFIX, Runs, cancel_accepted
from .transport import Transport

__all__ = ["Client", "RunHandle", "create_client", "get_default_client", "set_default_client"]

I = TypeVar("I")  # noqa: E741 - input type of a workflow
O = TypeVar("O")  # noqa: E741 - output type of a workflow


class Client(Runs):
    """Access to one redflow namespace (``prefix``) on one Redis."""

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
        options = RunOptions.of(
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            priority=priority,
            parent_run_id=parent_run_id,
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
        up fails it with ``UnknownWorkflowError`` (not retried).
        """
        check_name(name, "workflow name")
        options = RunOptions.of(
            run_at=run_at,
            queue_override=queue_override,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            timeout=timeout,
            priority=priority,
            parent_run_id=parent_run_id,
        )
        return RunHandle(self, self.enqueue(name, input, options))

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle for an existing run id (no round trip)."""
        return RunHandle(self, check_run_id(run_id))

    def get_run_steps(self, run_id: str) -> list[StepState] | None:
        """The run's recorded steps in execution order, or None for an unknown id."""
        return queries.drive(self.redis, queries.get_run_steps(self.keys, run_id))

    def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunState]:
        """Runs, newest first, optionally of one workflow and/or one status."""
        return queries.drive(
            self.redis, queries.list_runs(self.keys, workflow, status, limit, offset)
        )

    def cancel_run(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a run.

        A queued or scheduled run ends ``canceled`` at once; a running run is
        asked to stop (``ctx.cancelled``), raises ``RunCanceledError`` at its next
        step, and is stopped by the supervisor after ``cancel_grace`` if it
        ignores the request. Returns True if the run is canceled or will be,
        False if it does not exist or had already finished.
        """
        return cancel_accepted(self.scripts.cancel(check_run_id(run_id), check_reason(reason)))

    # ------------------------------------------------------------ workflows

    def list_workflows(self) -> list[WorkflowMeta]:
        """Metadata of every synced workflow, by name."""
        return queries.drive(self.redis, queries.list_workflows(self.keys))

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
        - otherwise ``app`` withdraws its own registration, and the metadata and
          cron entries (never runs) are removed only when no other app still
          registers the workflow. An app never withdraws another app's
          registration, however old: a supervisor syncs at start and on HUP only,
          so an old sync time does not mean the app is gone.

        Metadata written before this rule (an ``app`` field, no ``wf-apps``
        record) counts as that app's registration at its ``updatedAt``.
        """
        sync.sync_registry(self, registry, app=app)


def create_client(
    url: str | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    redis: redis.Redis | None = None,
    default: bool = True,
    registry: Registry | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    redis_functions: bool = False,
    cluster: bool = False,
    sentinel_master: str | None = None,
    durability: str = "none",
    durability_wait_ms: int = DEFAULT_WAIT_MS,
) -> Client:
    """Create a client for ``url`` (default ``redis://localhost:6379/0``) and ``prefix``.

    ``rediss://`` URLs use TLS; ``redis://user:password@host`` authenticates
    (ACL users included). Passing ``redis=`` reuses that client's connection
    settings (the client opens its own connections, with bytes replies). Unless
    ``default=False`` the new client becomes the process's default client.

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
    (``sentinel_master`` names the service where the URL does not). README,
    "Redis Cluster and Sentinel".

    ``durability="wait"`` acknowledges every run-state write (enqueue, claim,
    step, finish, cancel: each is one script call) only once a replica has it
    (``WAIT 1 durability_wait_ms`` pipelined after the call); ``"waitaof"`` once
    the master and a replica fsynced it (``WAITAOF 1 1``, Redis >= 7.2 with
    appendonly on both). A write not confirmed in time raises
    :class:`~redflow_mp.NotReplicatedError` (a network error: its fate is
    unknown). The default ``"none"`` acknowledges when the master has it.
    README, "Durability".
    """
    if url is not None and redis is not None:
        raise ValueError("pass either url or redis, not both")
    if not isinstance(redis_functions, bool):
        raise TypeError("redis_functions must be a bool")
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
    )
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
