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
:meth:`AsyncClient.aclose`. ``create_async_client()`` is a plain function (it
opens nothing); unless ``default=False`` the client becomes the process's
default async client, used by ``Workflow.arun()`` without ``client=``.

Adding a run method of the sync client here takes its call builder and reply
reader from ``scripts.py`` (``ScriptSet.<name>_call`` / ``<name>_reply``) and
one ``await self.scripts.run(...)``: see :meth:`AsyncClient.cancel_run`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar, cast

import redis.asyncio

from . import batch, queries, shardmeta
from .aio_connection import drive_query as _drive_query
from .aio_scripts import AsyncScripts
from .aio_shards import AsyncShard, AsyncShardSet
from .aio_transport import AsyncTransport, wait_for_future
from .cascade import CHUNK as CASCADE_CHUNK
from .cascade import forget_args, gen_text, positions_by_shard
from .clientargs import (
    batch_options,
    cascade_refused,
    check_client_args,
    known_target,
    run_options,
)
from .codec import RunState, RunStatus, StepState, WorkflowMeta, text
from .connection import DEFAULT_WAIT_MS, NotReplicatedError
from .errors import NETWORK_ERRORS, RedflowError, RunNotResumableError
from .handle import AsyncRunHandle
from .ids import new_token
from .keys import Keys
from .listing import read_error
from .options import (
    RunOptions,
    cannot_be_run_id,
    check_idempotency_key,
    check_name,
    check_reason,
    check_run_id,
    check_timeout,
    shown_run_id,
)
from .registry import (
    Registry,
    Workflow,
    default_async_starter,
    get_default_registry,
    set_default_async_starter,
)
from .replies import refused
from .results import (
    RESULT_RECHECK_S,
    STATE_FIELDS,
    WAIT_TROUBLE,
    outcome,
    passes,
    result_timeout,
    terminal_state,
    wait_refusal,
)
from .runs import (
    DEFAULT_MAX_EVENT_BYTES_PER_RUN,
    DEFAULT_MAX_EVENTS_PER_RUN,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PREFIX,
    cancel_accepted,
    check_max_events_per_run,
    check_max_payload_bytes,
    encode_input,
    enqueue_call,
    event_payload,
    target_of_name,
    workflow_meta,
)
from .scripts import cancel_reply, resume_plan
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


class AsyncClient:
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

    @property
    def shards(self) -> tuple[AsyncShard, ...]:
        """The namespace's shards (``shards`` setting); shard 0 is :attr:`keys`."""
        return self.shard_set.shards

    @property
    def shard_count(self) -> int:
        return self.shard_set.count

    def shard_of_workflow(self, name: str) -> AsyncShard:
        """The shard holding workflow ``name``'s keys and runs."""
        return self.shard_set.of_workflow(name)

    def shard_of_run(self, run_id: str) -> AsyncShard:
        """The shard a run id names (``ValueError`` for a malformed id)."""
        return self.shard_set.of_run(check_run_id(run_id))

    async def aclose(self) -> None:
        """Close the connections; the client can no longer be used (safe to repeat).
        Cancelled while it waits, the closing goes on (a later call waits for it)."""
        self.transport.begin_close()  # begun before any wait, as the shards' own
        await self.shard_set.aclose()
        await self.transport.aclose()
        if default_async_starter() is self:
            set_default_async_starter(None)

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

    async def cancel_run(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a run; see ``Client.cancel_run``."""
        run_id = check_run_id(run_id)
        why = check_reason(reason)
        if cannot_be_run_id(run_id):
            return False
        status = await self._cancel_one(run_id, why)
        accepted = cancel_accepted(status)
        if accepted:
            try:
                await self._cancel_children(run_id, why or None)
            except redis.exceptions.ResponseError as exc:
                named = cascade_refused(exc, run_id)
                if named is None:
                    raise
                raise named from exc
            if status == "canceled" and self.shard_count > 1:
                await self._kick_parent(run_id, status)
        return accepted

    async def _cancel_one(self, run_id: str, reason: str) -> str | None:
        scripts = self.shard_of_run(run_id).scripts
        keys, args = scripts.cancel_call(run_id, reason)
        return cancel_reply(await scripts.run("cancel_run", keys, args, retry=True))

    async def _kick_parent(self, run_id: str, status: str) -> None:
        """shards > 1: the canceled run wakes its parent in another shard (see
        ``xshard.py``)."""
        shard = self.shard_of_run(run_id)
        raw = await shard.redis.hget(shard.keys.run(run_id), "parentRunId")
        parent = text(raw) if raw else ""
        try:
            home = self.shard_of_run(parent) if parent else shard
        except ValueError:  # a parent id given by hand, naming no shard of ours
            return
        if home.index == shard.index:
            return
        await home.scripts.run(
            "kick_parent",
            (home.keys.run(parent),),
            (home.keys.tag, parent, run_id, status),
            retry=True,
        )

    async def _cancel_children(self, run_id: str, reason: str | None) -> None:
        """The cancel cascade (see ``cascade.py``) on this client's connections: a
        chunk of children per round trip, only children with children scanned."""
        why = f"parent run {run_id} was canceled" + (f": {reason}" if reason else "")
        stack, seen = [run_id], {run_id}
        while stack:
            parent = stack.pop()
            shard, fresh, listed = self.shard_of_run(parent), [], False
            # read before the children are listed: a cascade recorded after it
            # (resumed, canceled again) is not this walk's (forget_cascades.lua)
            gen = gen_text(await shard.redis.hget(shard.keys.run(parent), "cascadeGen"))
            children = shard.keys.run_children(parent)
            try:
                async for raw in shard.redis.sscan_iter(children, count=500):
                    listed = True
                    if (child := text(raw)) not in seen:
                        seen.add(child)
                        fresh.append(child)
            except redis.exceptions.ResponseError as exc:  # the bare reply names no key
                named = read_error(exc, [("sscan", (children,))])
                if named is None:
                    raise
                raise named from exc
            for at in range(0, len(fresh), CASCADE_CHUNK):
                chunk = fresh[at : at + CASCADE_CHUNK]
                done = await self._cancel_many(chunk, why)
                stack += [c for c, (st, more) in zip(chunk, done, strict=True) if st and more]
            if listed:  # its cascade is no longer owed (``cascade.finish_pending``)
                keys = shard.keys
                args = forget_args(keys.tag, [(parent, gen)])
                await shard.scripts.run("forget_cascades", (keys.cascades,), args, retry=True)

    async def _cancel_many(self, ids: list[str], why: str) -> list[tuple[str | None, bool]]:
        """``Runs._cancel_many`` on this client's connections."""
        out: list[tuple[str | None, bool]] = [(None, False)] * len(ids)
        for positions in positions_by_shard(ids, self.shard_of_run):
            shard = self.shard_of_run(ids[positions[0]])
            await shard.scripts._load()
            commands: list[tuple[Any, ...]] = []
            for i in positions:
                keys, args = shard.scripts.cancel_call(ids[i], why)
                commands.append(shard.scripts.command("cancel_run", keys, args))
                commands.append(("SCARD", shard.keys.run_children(ids[i])))
            try:  # durability: cascade.send_cancels (NotReplicatedError ends the walk)
                if shard.transport.wait_args is not None:
                    replies = await shard.transport.call_waited(commands)
                else:
                    async with shard.redis.pipeline(transaction=False) as pipe:
                        for command in commands:
                            pipe.execute_command(*command)
                        replies = await pipe.execute(raise_on_error=False)
            except NotReplicatedError:
                raise  # every reply read: one by one would wait again, each
            except NETWORK_ERRORS:  # one by one (a cancel sent twice is harmless)
                replies = [RuntimeError("resend")] * (2 * len(positions))
            for j, i in enumerate(positions):
                reply, n = replies[2 * j], replies[2 * j + 1]
                bad = isinstance(reply, Exception)
                status = await self._cancel_one(ids[i], why) if bad else cancel_reply(reply)
                out[i] = (status, isinstance(n, Exception) or int(n) > 0)
        return out

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

    async def wait_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait until the run ends; return its output or raise its error (see
        ``RunHandle.result``). Subscribes to the run's channel, then reads the run:
        a finish before the subscription is seen by the read, a later one by the
        message; without a message the run is read again every RESULT_RECHECK_S.
        A ``timeout`` is kept even while Redis does not answer (the calls in flight
        are abandoned at the deadline, not after the reply watchdog's 5 s)."""
        check_run_id(run_id)
        timeout = check_timeout(timeout, "timeout") if timeout != 0 else 0.0
        if cannot_be_run_id(run_id):
            raise RedflowError(
                f"run {shown_run_id(run_id)} does not exist (unknown id, or removed by retention)"
            )
        shard = self.shard_of_run(run_id)  # its pub/sub on the shard's connections
        t = shard.transport
        t.enter()
        if not timeout:  # None: no deadline; 0: one look, however long it takes
            return await self._wait_result(shard, run_id, timeout, None)
        deadline = t.loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline) as scope:
                return await self._wait_result(shard, run_id, timeout, deadline)
        except TimeoutError:
            if scope.expired():
                raise result_timeout(run_id, timeout) from None
            raise

    async def _confirm_result(self, shard: AsyncShard) -> None:
        """durability "wait"/"waitaof": a write and its WAIT before an outcome is
        returned (a finish is published before its worker's WAIT confirmed it)."""
        if shard.transport.durability != "none":
            keys = shard.keys
            await shard.scripts.run(
                "confirm_result", (keys.result_confirm,), (keys.tag,), retry=True
            )

    async def _wait_result(
        self, shard: AsyncShard, run_id: str, timeout: float | None, deadline: float | None
    ) -> Any:
        t = shard.transport
        loop = t.loop
        if deadline is None and timeout is not None:
            deadline = loop.time() + timeout
        name = shard.keys.run_done(run_id).encode()
        read = ("HMGET", shard.keys.run(run_id), *STATE_FIELDS)
        while True:
            channel = None
            try:
                # at most RESULT_RECHECK_S, then the run is read again (a lost publish)
                recheck = loop.time() + RESULT_RECHECK_S
                until = recheck if deadline is None else min(deadline, recheck)
                channel = await t.subscribe(name)
                if await wait_for_future(channel.ready, until):
                    channel.ready.result()  # raises if the subscription failed
                state = terminal_state(run_id, await t.call(*read))
                if state is None and await wait_for_future(channel.message, until):
                    # a wake-up only: the outcome is the run's record (results.py)
                    state = terminal_state(run_id, await t.call(*read))
                if state is not None:
                    await self._confirm_result(shard)
                    return outcome(run_id, state)
                if deadline is not None and loop.time() >= deadline:
                    raise result_timeout(run_id, timeout)
            except WAIT_TROUBLE as exc:
                if not passes(exc):
                    raise wait_refusal(exc, shard.keys.run(run_id))  # noqa: B904 (its cause is set)
                if deadline is not None and loop.time() >= deadline:
                    raise result_timeout(run_id, timeout) from None
                await asyncio.sleep(0.05)
            finally:
                if channel is not None:
                    t.unsubscribe(channel)

    # ---------------------------------------------------------------- reads

    async def get_run(self, run_id: str) -> RunState | None:
        """The run's state with its attempts' history, or None for an unknown id."""
        shard = self.shard_of_run(run_id)
        return await _drive_query(shard.redis, queries.get_run(shard.keys, run_id))

    async def get_workflow_meta(self, name: str) -> WorkflowMeta | None:
        """Synced metadata of one workflow, or None."""
        shard = self.shard_of_workflow(check_name(name, "workflow name"))
        raw = await _drive_query(shard.redis, queries.one("hgetall", shard.keys.workflow(name)))
        return workflow_meta(raw, name)

    async def get_run_steps(self, run_id: str) -> list[StepState] | None:
        """The run's recorded steps in execution order, or None for an unknown id."""
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
        last run of the previous page, as for the sync ``Client.list_runs``."""
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
