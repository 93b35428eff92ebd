"""The asyncio client: start runs, inspect them, cancel them and await their results
from async code (a web application, an asyncio service).

::

    from redflow_mp.aio import create_async_client

    client = create_async_client("redis://localhost:6379/0", prefix="redflow:prod")
    handle = await resize.arun({"url": "..."})       # or await client.run_by_name(...)
    output = await handle.result(timeout=90)
    await client.aclose()

One implementation of the semantics, two transports: the Lua scripts, the
keyspace, the enqueue rules (targets, payload encoding, validation at enqueue),
the queries and the reading of a run's end are the sync client's own functions
(``runs.py``, ``scripts.py``, ``queries.py``, ``results.py``); only the
transport differs (``aio_transport.py``: redis-py's asyncio client plus a
hiredis protocol for the hot calls). Result waiting subscribes to the run's
``run-done`` channel, then reads the run, like the sync client, on one pub/sub
connection per client shared by every task.

An :class:`AsyncClient` is safe to share between the tasks of one event loop.
It belongs to the loop that first uses it: another loop gets a clear
:class:`~redflow_mp.errors.RedflowError`, and so does any use after
:meth:`AsyncClient.aclose`. ``aclose()`` itself may be awaited from another
loop: once the first has ended or while it is not running it closes every
socket at once; while it runs in another thread (a background loop) it hands
the closing to that loop and waits for it (``aio_elsewhere.py``).
``create_async_client()`` is a plain function (it opens nothing); unless
``default=False`` the client becomes the process's default async client, used
by ``Workflow.arun()`` without ``client=``.

Adding a run method of the sync client here takes its call builder and reply
reader from ``scripts.py`` (``ScriptSet.<name>_call`` / ``<name>_reply``) and
one ``await self.scripts.run(...)``: see :meth:`AsyncClient.send_event`.

The client is put together from parts, each the twin of a sync one: canceling
and its cascade in ``aio_cancel.py`` (``cascade.py``), waiting for a result in
``aio_results.py`` (``results.py``), the way to the shards in ``aio_shards.py``
(``shardset.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, cast, overload

import redis.asyncio

from . import batch, queries, shardmeta
from .aio_cancel import AsyncCancels
from .aio_connection import drive_query as _drive_query
from .aio_elsewhere import check_not_forked, close_on_owner, owner_elsewhere
from .aio_results import AsyncResults
from .aio_scripts import AsyncScripts
from .aio_shards import AsyncShardSet
from .aio_transport import AsyncTransport
from .clientargs import (
    batch_options,
    check_client_args,
    known_target,
    run_options,
)
from .codec import RunState, RunStatus, StepState, WorkflowMeta
from .connection import DEFAULT_WAIT_MS, NotReplicatedError
from .errors import NETWORK_ERRORS, RunNotResumableError
from .handle import AsyncRunHandle
from .ids import new_token
from .keys import Keys
from .options import (
    RunOptions,
    cannot_be_run_id,
    check_idempotency_key,
    check_name,
    check_run_id,
    spec_run_id,
)
from .registry import (
    Registry,
    Workflow,
    default_async_starter,
    get_default_registry,
    set_default_async_starter,
)
from .replies import refused
from .runs import (
    DEFAULT_MAX_EVENT_BYTES_PER_RUN,
    DEFAULT_MAX_EVENTS_PER_RUN,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PREFIX,
    check_max_events_per_run,
    check_max_payload_bytes,
    encode_input,
    enqueue_call,
    event_payload,
    target_of_name,
    workflow_meta,
)
from .scripts import resume_plan
from .wait_scripts import send_event_call, send_event_reply

__all__ = [
    "AsyncClient",
    "AsyncRunHandle",
    "create_async_client",
    "get_default_async_client",
    "set_default_async_client",
]

I = TypeVar("I")  # noqa: E741 - input type of a workflow
O = TypeVar("O")  # noqa: E741 - output type of a workflow


class AsyncClient(AsyncCancels, AsyncResults):
    """Access to one redflow namespace (``prefix``) on one Redis, from asyncio code."""

    def __init__(
        self,
        transport: AsyncTransport,
        *,
        prefix: str = DEFAULT_PREFIX,
        registry: Registry | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        redis_functions: bool = False,
        max_events_per_run: int = DEFAULT_MAX_EVENTS_PER_RUN,
        shards: int = 1,
        max_event_bytes_per_run: int = DEFAULT_MAX_EVENT_BYTES_PER_RUN,
    ) -> None:
        self.transport = transport
        self.keys = Keys(prefix)
        self.prefix = prefix
        functions = bool(redis_functions)
        self.scripts = AsyncScripts(transport, self.keys, functions=functions)
        self.shard_set = AsyncShardSet(
            transport,
            prefix,
            shards,
            scripts=self.scripts,
            make_scripts=lambda t, k: AsyncScripts(t, k, functions=functions),
        )
        if registry is not None and not isinstance(registry, Registry):
            raise TypeError("registry must be a Registry")
        self.registry = registry if registry is not None else get_default_registry()
        self.max_payload_bytes = check_max_payload_bytes(max_payload_bytes)
        self.max_events_per_run = check_max_events_per_run(max_events_per_run)
        self.max_event_bytes_per_run = check_max_events_per_run(
            max_event_bytes_per_run, "max_event_bytes_per_run"
        )
        self._shards_verified = True  # create_async_client asks for the check

    async def _verify_shards(self) -> None:
        """The recorded shard count check (``shardmeta.acheck_recorded``), once."""
        if not self._shards_verified:
            try:
                await shardmeta.acheck_recorded(self)
            except redis.exceptions.ResponseError as exc:  # BUSY: the RedisBusyError scripts raise
                where = self.transport.describe()
                mapped = refused(exc, "the first call (reading the shard count)", where)
                if mapped is None:
                    raise
                raise mapped from exc
            self._shards_verified = True

    def __repr__(self) -> str:
        return f"<AsyncClient {self.transport.describe()} prefix={self.prefix!r}>"

    @property
    def redis(self) -> redis.asyncio.Redis:
        """The underlying redis.asyncio client (bytes replies)."""
        return self.transport.redis

    async def aclose(self) -> None:
        """Close the connections; the client can no longer be used (safe to repeat).
        Cancelled while it waits, the closing goes on (a later call waits for it).

        Awaited in another loop than the client's own: while that one runs (in
        another thread) the closing is handed to it and waited for
        (``aio_elsewhere.py``: the calls in flight there fail with the closed
        client's error); once it has ended or while it is not running, every
        socket is closed directly (``AsyncTransport.release_now``). In a child
        forked while that loop was alive it raises and touches nothing
        (``aio_elsewhere.check_not_forked``)."""
        transports = self.shard_set.transports()
        for t in transports:  # in a forked child: raises, touching nothing
            check_not_forked(t.own_loop, t.own_pid, self.transport.describe())
        owner = owner_elsewhere(t.own_loop for t in transports)
        if owner is not None:

            def release() -> None:
                for t in transports:
                    t.release_now()

            pid = next(t.own_pid for t in transports if t.own_loop is owner)
            await close_on_owner(owner, self._aclose_here, release, self.transport.describe(), pid)
        else:
            await self._aclose_here()
        if default_async_starter() is self:
            set_default_async_starter(None)

    async def _aclose_here(self) -> None:
        """:meth:`aclose` on the client's own loop (or, for one that is not running,
        any: each transport then closes its sockets directly)."""
        self.transport.begin_close()  # begun before any wait, as the shards' own
        await self.shard_set.aclose()
        await self.transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ runs

    async def enqueue_workflow(
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
    ) -> AsyncRunHandle[O]:
        """Enqueue a run of a known :class:`Workflow` (what ``Workflow.arun`` calls)."""
        options = run_options(
            run_at,
            queue_override,
            idempotency_key,
            idempotency_ttl,
            timeout,
            priority,
            parent_run_id,
        )
        return AsyncRunHandle(self, await self._enqueue(workflow, input, options))

    async def run_by_name(
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
    ) -> AsyncRunHandle[Any]:
        """Enqueue a run of the workflow called ``name``; see ``Client.run_by_name``
        (the same rules: this client's registry, else the synced metadata)."""
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
        return AsyncRunHandle(self, await self._enqueue(name, input, options))

    async def _enqueue(
        self, workflow: Workflow[Any, Any] | str, input: Any, options: RunOptions
    ) -> str:
        """``Runs.enqueue`` on this transport (the same functions, in the same order)."""
        self.transport.enter()
        await self._verify_shards()
        target = known_target(self.registry, workflow, options)
        if target is None:  # a name only: its synced metadata
            name = cast(str, workflow)
            target = target_of_name(name, await self.get_workflow_meta(name), options)
        data = encode_input(target, input, self.max_payload_bytes)
        scripts: AsyncScripts = self.shard_set.of_workflow(target.workflow).scripts
        run_id, _created = await scripts.send_enqueue(*enqueue_call(scripts, target, data, options))
        return run_id

    async def enqueue_workflow_many(
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
    ) -> list[AsyncRunHandle[O]]:
        """Enqueue a run per input (what ``Workflow.arun_many`` calls); see
        ``Client.run_many_by_name``."""
        options = batch_options(run_at, queue_override, idempotency_ttl, timeout, priority)
        ids = await self._enqueue_many(workflow, inputs, options, idempotency_keys)
        return [AsyncRunHandle(self, run_id) for run_id in ids]

    async def run_many_by_name(
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
    ) -> list[AsyncRunHandle[Any]]:
        """Enqueue one run of the workflow called ``name`` per input; see
        ``Client.run_many_by_name`` (the same checks, chunks and idempotency)."""
        check_name(name, "workflow name")
        options = batch_options(run_at, queue_override, idempotency_ttl, timeout, priority)
        ids = await self._enqueue_many(name, inputs, options, idempotency_keys)
        return [AsyncRunHandle(self, run_id) for run_id in ids]

    async def _enqueue_many(
        self,
        workflow: Workflow[Any, Any] | str,
        inputs: Iterable[Any],
        options: RunOptions,
        idempotency_keys: Iterable[str | None] | None,
    ) -> list[str]:
        """``Client.enqueue_many`` on this transport (the same functions, in order)."""
        self.transport.enter()
        await self._verify_shards()
        target = known_target(self.registry, workflow, options)
        if target is None:  # a name only: its synced metadata
            name = cast(str, workflow)
            target = target_of_name(name, await self.get_workflow_meta(name), options)
        datas, keys = batch.encode_batch(target, inputs, idempotency_keys, self.max_payload_bytes)
        progress = batch.Progress(len(datas))
        shard = self.shard_set.of_workflow(target.workflow)  # one workflow: one shard
        scripts = shard.scripts
        for sent, call_keys, args in batch.chunk_calls(
            shard.keys, target, datas, keys, options, suffix=scripts.id_suffix
        ):
            try:
                try:
                    reply = await scripts.run("enqueue_runs", call_keys, tuple(args), retry=False)
                except NotReplicatedError:
                    raise  # answered: a resend would only wait for the same replica
                except NETWORK_ERRORS:  # the ids make a resend harmless
                    reply = await scripts.run("enqueue_runs", call_keys, tuple(args), retry=True)
            except Exception as exc:  # the chunks before it stay written: say which
                raise progress.failed(exc, len(sent))  # noqa: B904 (its cause is set)
            progress.answered(batch.many_reply(sent, reply))
        return [run_id for run_id in progress.enqueued if run_id is not None]

    def handle(self, run_id: str) -> AsyncRunHandle[Any]:
        """A handle for an existing run id (no round trip)."""
        return AsyncRunHandle(self, check_run_id(run_id))

    async def send_event(
        self, run_id: str, event: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> bool:
        """Record ``event`` for the run and wake it if it waits for it; see
        ``Client.send_event`` (``idempotency_key``: at most one event per key)."""
        name, data = event_payload(event, payload, self.max_payload_bytes)
        key = check_idempotency_key(idempotency_key)
        if cannot_be_run_id(check_run_id(run_id)):
            return False
        shard = self.shard_of_run(run_id)
        limits = self.max_events_per_run, self.max_event_bytes_per_run
        keys, args = send_event_call(shard.keys, run_id, name, data, limits[0], key, limits[1])
        # without a key never resent: a resend after a lost reply would store the
        # event twice; with one the script stores it once
        reply = await shard.scripts.run("send_event", keys, args, retry=bool(key))
        return send_event_reply(reply, run_id, *limits)

    async def resume_run(self, run_id: str) -> AsyncRunHandle[Any]:
        """Put a failed or canceled run back in its queue as the same run, keeping
        its succeeded steps; see ``Client.resume_run``."""
        run_id = check_run_id(run_id)
        if cannot_be_run_id(run_id):
            raise RunNotResumableError(run_id, None)
        scripts = self.shard_of_run(run_id).scripts
        keys, args = scripts.resume_call(run_id, new_token())
        plan = resume_plan(args, run_id)  # by pages past the records one call reads
        sent = next(plan)
        while True:
            reply = await scripts.run("resume_run", keys, sent, retry=True)
            try:
                sent = plan.send(reply)
            except StopIteration:
                break
        return AsyncRunHandle(self, run_id)

    # ---------------------------------------------------------------- reads

    @overload
    async def get_run(self, run_id: str) -> RunState | None: ...
    @overload
    async def get_run(self, *, id: str) -> RunState | None: ...
    async def get_run(self, run_id: str | None = None, *, id: str | None = None) -> RunState | None:
        """The run's state with its attempts' history, or None for an unknown id
        (the id also as ``id=``, SPEC's spelling)."""
        run_id = spec_run_id(run_id, id, "get_run")
        shard = self.shard_of_run(run_id)
        return await _drive_query(shard.redis, queries.get_run(shard.keys, run_id))

    async def get_workflow_meta(self, name: str) -> WorkflowMeta | None:
        """Synced metadata of one workflow, or None."""
        shard = self.shard_of_workflow(check_name(name, "workflow name"))
        raw = await _drive_query(shard.redis, queries.one("hgetall", shard.keys.workflow(name)))
        return workflow_meta(raw, name)

    @overload
    async def get_run_steps(self, run_id: str) -> list[StepState] | None: ...
    @overload
    async def get_run_steps(self, *, id: str) -> list[StepState] | None: ...
    async def get_run_steps(
        self, run_id: str | None = None, *, id: str | None = None
    ) -> list[StepState] | None:
        """The run's recorded steps in execution order, or None for an unknown id
        (the id also as ``id=``, SPEC's spelling). Read by HSCAN pages of about
        1,000 records or 1 MiB (one record bigger than that comes alone), so no
        one call holds Redis for the whole run."""
        run_id = spec_run_id(run_id, id, "get_run_steps")
        shard = self.shard_of_run(run_id)
        return await _drive_query(shard.redis, queries.get_run_steps(shard.keys, run_id))

    async def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
    ) -> list[RunState]:
        """Runs, newest first, optionally of one workflow and/or one status (every
        shard's, merged: ``queries.alist_runs_all``); ``after``: the id of the
        last run of the previous page, as for the sync ``Client.list_runs``, and
        read in bounded round trips as it is (payloads in trips of about 4 MiB)."""
        await self._verify_shards()
        return await queries.alist_runs_all(
            self, _drive_query, workflow, status, limit, offset, after
        )

    async def list_workflows(self) -> list[WorkflowMeta]:
        """Metadata of every synced workflow, by name (each read in its shard)."""
        await self._verify_shards()
        return await queries.alist_workflows_all(self, _drive_query)


def create_async_client(
    url: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    *,
    redis: redis.asyncio.Redis | None = None,
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
) -> AsyncClient:
    """Create an async client for ``url`` (without one: ``$REDFLOW_URL``, then
    ``$REDIS_URL``, else ``redis://localhost:6379/0``, as the CLI) and ``prefix``;
    a plain function: nothing connects until the first call.

    The URL forms are the sync client's (``rediss://`` for TLS, ``user:password@``,
    ``unix://``). Passing ``redis=`` (a ``redis.asyncio.Redis``) reuses its
    connection settings; the client opens its own connections, with bytes
    replies. Unless ``default=False`` the client becomes the process's default
    async client (``Workflow.arun()`` without ``client=``). Close it with
    ``await client.aclose()`` (or ``async with``). ``redis_functions`` as for
    :func:`~redflow_mp.create_client` (opt-in; EVALSHA by default), and so are
    ``cluster`` and ``sentinel_master`` (a Redis Cluster node's URL, detected, or a
    ``redis+sentinel://`` URL), ``durability``, ``durability_wait_ms`` and ``shards``.
    ``verify_shards`` as for the sync client, but the check (one ``HMGET``) is made
    before the client's first enqueue or listing, since nothing connects here.
    """
    check_client_args(url, redis, redis_functions, shards, verify_shards, registry)
    client = AsyncClient(
        AsyncTransport(
            url,
            redis,
            cluster=cluster,
            sentinel_master=sentinel_master,
            route_key=Keys(prefix).tag,
            durability=durability,
            durability_wait_ms=durability_wait_ms,
        ),
        prefix=prefix,
        registry=registry,
        max_payload_bytes=max_payload_bytes,
        redis_functions=redis_functions,
        max_events_per_run=max_events_per_run,
        shards=shards,
        max_event_bytes_per_run=max_event_bytes_per_run,
    )
    client._shards_verified = not verify_shards
    if default:
        set_default_async_client(client)
    return client


def set_default_async_client(client: AsyncClient | None) -> None:
    """Make ``client`` the process's default async client (``Workflow.arun()``)."""
    set_default_async_starter(client)


def get_default_async_client() -> AsyncClient | None:
    """The process's default async client, if one was created."""
    starter = default_async_starter()
    return starter if isinstance(starter, AsyncClient) else None
