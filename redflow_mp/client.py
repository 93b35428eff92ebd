"""The client: start runs, inspect them, cancel them, wait for results, sync metadata.

A :class:`Client` wraps one :class:`~redflow_mp.transport.Transport` (its own
connections) and one key namespace. It is thread-safe: hot paths use a
connection per thread, everything else redis-py's pool.

``create_client()`` also makes the process's default client (used by
``Workflow.run()`` without ``client=``) unless ``default=False``.

Waiting for a result (:meth:`RunHandle.result`) subscribes to the run's
``run-done:<id>`` channel, then reads the run: no polling loop, and a run that
finished before the subscription is seen by the read.

Fork safety: connections are per process (see ``transport.py``); a forked
child that keeps using an inherited client opens fresh sockets.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import redis

from . import codec
from .codec import ErrorInfo, RunState, RunStatus, StepState, WorkflowMeta
from .cron import CronDef, cron_id_for, next_fire_ms
from .errors import (
    PayloadTooLargeError,
    RedflowError,
    ResultTimeoutError,
    RunCanceledError,
    run_failed,
)
from .ids import new_run_id
from .keys import Keys
from .registry import Registry, Workflow, check_name, check_timeout, get_default_registry
from .scripts import Scripts
from .transport import Transport

if TYPE_CHECKING:
    pass

__all__ = ["Client", "RunHandle", "client_or_default", "create_client", "get_default_client"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "redflow"
DEFAULT_IDEMPOTENCY_TTL = 7 * 24 * 3600.0
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 4096
STALE_WORKFLOW_GRACE_MS = 30_000
_SCAN_LIMIT = 10_000
_STATUS_VALUES = frozenset(s.value for s in RunStatus)


def _dec(value: Any) -> str:
    """Decode a redis-py reply item (bytes) to str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _check_list_args(workflow: object, status: object, limit: object, offset: object) -> str | None:
    if workflow is not None:
        check_name(workflow, "workflow")
    for label, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{label} must be an int")
        if value < 0:
            raise ValueError(f"{label} must be >= 0")
    if status is None:
        return None
    if not isinstance(status, str):
        raise TypeError("status must be a RunStatus or str")
    if status not in _STATUS_VALUES:
        raise ValueError(f"unknown status {status!r}; expected one of {sorted(_STATUS_VALUES)}")
    return str(RunStatus(status))


def _check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str):
        raise TypeError(f"run id must be a str, not {type(run_id).__name__}")
    if not run_id:
        raise ValueError("run id must be a non-empty string")
    return run_id


def _run_at_ms(run_at: datetime | float | None) -> int:
    if run_at is None:
        return 0
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None or run_at.tzinfo.utcoffset(run_at) is None:
            raise ValueError(
                "run_at is a naive datetime; pass an aware one (e.g. datetime.now(timezone.utc))"
            )
        return int(run_at.timestamp() * 1000)
    if isinstance(run_at, bool) or not isinstance(run_at, int | float):
        raise TypeError("run_at must be an aware datetime or epoch seconds")
    if not math.isfinite(run_at) or run_at < 0:
        raise ValueError("run_at must be a finite, non-negative epoch time in seconds")
    return int(run_at * 1000)


def _idempotency(key: str | None, ttl: float | None) -> tuple[str, int]:
    if key is not None:
        if not isinstance(key, str):
            raise TypeError("idempotency_key must be a str or None")
        if not key:
            raise ValueError("idempotency_key must be non-empty when given")
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValueError(
                f"idempotency_key is {len(key)} characters; the limit is "
                f"{MAX_IDEMPOTENCY_KEY_LENGTH}"
            )
    ttl_s = check_timeout(ttl, "idempotency_ttl")
    return key or "", int((ttl_s if ttl_s is not None else DEFAULT_IDEMPOTENCY_TTL) * 1000)


class RunHandle:
    """A reference to one run: wait for it, read it, cancel it."""

    __slots__ = ("_client", "id")

    def __init__(self, client: Client, run_id: str) -> None:
        self._client = client
        self.id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end and return its output.

        Raises:
            RunFailedError: the run failed (``.error`` holds type, message, traceback).
            RunCanceledError: the run was canceled.
            ResultTimeoutError: ``timeout`` seconds passed first (the run goes on).
        """
        return self._client.wait_result(self.id, timeout)

    def state(self) -> RunState | None:
        """The run's current state, or None if it no longer exists."""
        return self._client.get_run(self.id)

    def cancel(self, reason: str | None = None) -> bool:
        """Request cancellation; see :meth:`Client.cancel_run`."""
        return self._client.cancel_run(self.id, reason)


class _Waiter(threading.local):
    """Per-thread pub/sub connection used by result waits."""

    conn: Any = None
    pid: int = -1


class Client:
    """Access to one redflow namespace (``prefix``) on one Redis."""

    def __init__(
        self,
        transport: Transport,
        *,
        prefix: str = DEFAULT_PREFIX,
        registry: Registry | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.transport = transport
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.scripts = Scripts(transport, self.keys)
        self.registry = registry if registry is not None else get_default_registry()
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int):
            raise TypeError("max_payload_bytes must be an int")
        if max_payload_bytes < 1024:
            raise ValueError("max_payload_bytes must be at least 1024")
        self.max_payload_bytes = max_payload_bytes
        self._waiter = _Waiter()

    @property
    def redis(self) -> redis.Redis:
        """The underlying redis-py client (bytes replies)."""
        return self.transport.redis

    def __repr__(self) -> str:
        return f"<Client {self.transport.describe()} prefix={self.prefix!r}>"

    def close(self) -> None:
        """Close this process's connections; the client can no longer be used."""
        if self._waiter.pid == os.getpid():
            self._drop_waiter()
        self._waiter = _Waiter()
        self.transport.close()
        global _default_client
        if _default_client is self:
            _default_client = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ runs

    def encode_payload(self, value: Any, what: str) -> bytes:
        """Encode a payload as JSON within ``max_payload_bytes`` (clear errors)."""
        try:
            data = codec.encode_json(value)
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise TypeError(f"{what} is not JSON-encodable: {exc}") from None
        if len(data) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"{what} is {len(data)} bytes encoded; the limit is {self.max_payload_bytes} "
                "bytes (max_payload_bytes)"
            )
        return data

    def enqueue_workflow(
        self,
        workflow: Workflow[Any, Any],
        input: Any = None,
        *,
        run_at: datetime | float | None = None,
        queue_override: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        timeout: float | None = None,
        parent_run_id: str | None = None,
    ) -> RunHandle:
        """Enqueue a run of a known :class:`Workflow` (what ``Workflow.run`` calls)."""
        return self._enqueue(
            workflow.name,
            workflow.queue if queue_override is None else check_name(queue_override, "queue"),
            input,
            max_attempts=workflow.retries.max_attempts,
            max_concurrency=workflow.max_concurrency,
            timeout=timeout if timeout is not None else workflow.timeout,
            run_at=run_at,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            parent_run_id=parent_run_id,
        )

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
        parent_run_id: str | None = None,
    ) -> RunHandle:
        """Enqueue a run of the workflow called ``name``.

        The workflow's queue and attempts come from this client's registry, else
        from metadata synced to Redis. A name known to neither is enqueued on
        ``queue_override`` or ``"default"``; the worker that picks it up fails it
        with ``UnknownWorkflowError`` (not retried).
        """
        check_name(name, "workflow name")
        wf = self.registry.get(name)
        if wf is not None:
            return self.enqueue_workflow(
                wf,
                input,
                run_at=run_at,
                queue_override=queue_override,
                idempotency_key=idempotency_key,
                idempotency_ttl=idempotency_ttl,
                timeout=timeout,
                parent_run_id=parent_run_id,
            )
        meta = self.get_workflow_meta(name)
        if meta is None:
            log.warning(
                "workflow %r is neither registered in this process nor synced to Redis; "
                "enqueuing on queue %r anyway",
                name,
                queue_override or "default",
            )
        max_attempts = 1
        if meta is not None and meta.retries is not None:
            max_attempts = meta.retries.max_attempts
        queue = (
            queue_override
            if queue_override is not None
            else (meta.queue if meta is not None else "default")
        )
        return self._enqueue(
            name,
            check_name(queue, "queue"),
            input,
            max_attempts=max_attempts,
            max_concurrency=meta.max_concurrency if meta is not None else None,
            timeout=timeout,
            run_at=run_at,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            parent_run_id=parent_run_id,
        )

    def _enqueue(
        self,
        name: str,
        queue: str,
        input: Any,
        *,
        max_attempts: int,
        max_concurrency: int | None,
        timeout: float | None,
        run_at: datetime | float | None,
        idempotency_key: str | None,
        idempotency_ttl: float | None,
        parent_run_id: str | None,
    ) -> RunHandle:
        at_ms = _run_at_ms(run_at)
        key, ttl_ms = _idempotency(idempotency_key, idempotency_ttl)
        timeout_s = check_timeout(timeout, "timeout")
        data = self.encode_payload(input, "input")
        run_id, _created = self.scripts.enqueue(
            new_run_id(),
            name,
            queue,
            data,
            max_attempts,
            at_ms,
            key,
            ttl_ms,
            parent_run_id or "",
            "",
            max_concurrency,
            int(timeout_s * 1000) if timeout_s is not None else None,
        )
        return RunHandle(self, run_id)

    def handle(self, run_id: str) -> RunHandle:
        """A handle for an existing run id (no round trip)."""
        return RunHandle(self, _check_run_id(run_id))

    def get_run(self, run_id: str) -> RunState | None:
        """The run's state, or None for an unknown id."""
        raw = self.redis.hgetall(self.keys.run(_check_run_id(run_id)))
        if not raw:
            return None
        state = codec.run_state_from_hash(raw)
        if not state.id:
            state.id = run_id
        return state

    def get_run_steps(self, run_id: str) -> list[StepState] | None:
        """The run's recorded steps in execution order, or None for an unknown id."""
        _check_run_id(run_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.run(run_id))
            pipe.hgetall(self.keys.run_steps(run_id))
            exists, raw = pipe.execute()
        if not exists:
            return None
        out: list[tuple[int, int, StepState]] = []
        for name_b, data in raw.items():
            name = name_b.decode("utf-8", "replace")
            try:
                stored = codec.decode_step(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                out.append(
                    (
                        0,
                        0,
                        StepState(
                            name=name,
                            status=codec.StepStatus.FAILED,
                            error=ErrorInfo(type="CorruptRecord", message="unreadable step record"),
                        ),
                    )
                )
                continue
            out.append((stored.started_at, stored.seq, codec.step_state(name, stored)))
        out.sort(key=lambda item: (item[1], item[0]))  # seq: Redis's per-run step counter
        return [item[2] for item in out]

    def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunState]:
        """Runs, newest first, optionally of one workflow and/or one status."""
        status = _check_list_args(workflow, status, limit, offset)
        if limit == 0:
            return []
        ids = self._select_run_ids(workflow, status, limit, offset)
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(self.keys.run(run_id))
            raws = pipe.execute()
        out = []
        for run_id, raw in zip(ids, raws, strict=True):
            if raw:
                state = codec.run_state_from_hash(raw)
                if not state.id:
                    state.id = run_id
                out.append(state)
        return out

    def _select_run_ids(
        self, workflow: str | None, status: str | None, limit: int, offset: int
    ) -> list[str]:
        created = self.keys.runs_created
        indexes = [created]
        if workflow is not None:
            indexes.append(self.keys.workflow_runs(workflow))
        if status is not None:
            indexes.append(self.keys.runs_status(status))
        if len(indexes) == 1:
            raw = self.redis.zrevrange(created, offset, offset + limit - 1)
            return [_dec(x) for x in raw]
        with self.redis.pipeline(transaction=False) as pipe:
            for key in indexes:
                pipe.zcard(key)
            sizes = pipe.execute()
        smallest_size, smallest = min(zip(sizes, indexes, strict=True))
        if smallest_size == 0:
            return []
        others = [k for k in indexes if k != smallest and k != created]
        if smallest_size <= _SCAN_LIMIT:
            members = self.redis.zrange(smallest, 0, -1)
            return self._filter_sorted(members, others, limit, offset)
        # Large indexes: walk an index scored by createdAt newest first, in chunks,
        # keeping members present in the others. Never walk runs:status:<s>: it
        # is scored by the time a run entered that status, so walking it would
        # list runs in finishing order instead of newest-created first (and page
        # differently from the small path above).
        walk = self.keys.workflow_runs(workflow) if workflow is not None else created
        required = [k for k in indexes if k != walk]
        out: list[str] = []
        skipped = 0
        start = 0
        chunk = 1000
        while len(out) < limit:
            members = self.redis.zrevrange(walk, start, start + chunk - 1)
            if not members:
                break
            start += chunk
            for run_id in self._members_of_all(members, required):
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(run_id)
                if len(out) >= limit:
                    break
        return out

    def _members_of_all(self, members: list[Any], others: list[str]) -> list[str]:
        if not others:
            return [_dec(m) for m in members]
        with self.redis.pipeline(transaction=False) as pipe:
            for key in others:
                pipe.zmscore(key, members)
            scores = pipe.execute()
        return [_dec(m) for i, m in enumerate(members) if all(col[i] is not None for col in scores)]

    def _filter_sorted(
        self, members: list[Any], others: list[str], limit: int, offset: int
    ) -> list[str]:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zmscore(self.keys.runs_created, members)
            for key in others:
                pipe.zmscore(key, members)
            results = pipe.execute()
        created_scores = results[0]
        keep: list[tuple[float, str]] = []
        for i, member in enumerate(members):
            created_at = created_scores[i]
            if created_at is None:
                continue
            if all(col[i] is not None for col in results[1:]):
                keep.append((created_at, _dec(member)))
        keep.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [run_id for _, run_id in keep[offset : offset + limit]]

    def cancel_run(self, run_id: str, reason: str | None = None) -> bool:
        """Cancel a run.

        A queued or scheduled run ends ``canceled`` at once; a running run is
        asked to stop (``ctx.cancelled``), raises ``RunCanceledError`` at its next
        step, and is stopped by the supervisor after ``cancel_grace`` if it
        ignores the request. Returns True if the run is canceled or will be,
        False if it does not exist or had already finished.
        """
        _check_run_id(run_id)
        if reason is not None and not isinstance(reason, str):
            raise TypeError("reason must be a str or None")
        status = self.scripts.cancel(run_id, reason or "")
        return status in ("canceled", "running") if status is not None else False

    # ------------------------------------------------------------- results

    def wait_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Block until the run ends; return its output or raise its error."""
        _check_run_id(run_id)
        timeout = check_timeout(timeout, "timeout") if timeout != 0 else 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self.keys.run_done(run_id).encode()
        while True:
            pubsub = self._pubsub()
            try:
                # Subscribe first, then read: a finish between the two is seen by
                # the read, a later one by the message. No polling.
                self._subscribe(pubsub, channel, deadline)
                state = self._terminal_state(run_id)
                if state is None:
                    message = self._wait_message(pubsub, channel, deadline)
                    if message is not None and message.startswith(b"succeeded\n"):
                        return self._decode_output(run_id, message[10:])
                    if message is not None:
                        state = self._terminal_state(run_id)
                if state is not None:
                    return self._outcome(run_id, state)
                if deadline is not None and time.monotonic() >= deadline:
                    raise ResultTimeoutError(
                        f"run {run_id} did not finish within {timeout} s (it keeps running)"
                    )
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._drop_waiter()
                if deadline is not None and time.monotonic() >= deadline:
                    raise ResultTimeoutError(
                        f"run {run_id} did not finish within {timeout} s (it keeps running)"
                    ) from None
                time.sleep(0.05)
            finally:
                self._unsubscribe(channel)

    def _terminal_state(self, run_id: str) -> list[bytes | None] | None:
        fields = self.transport.call(
            "HMGET", self.keys.run(run_id), "status", "outputJson", "errorJson", "cancelReason"
        )
        status = fields[0]
        if status is None:
            raise RedflowError(f"run {run_id} does not exist (unknown id, or removed by retention)")
        if status in (b"succeeded", b"failed", b"canceled"):
            return list(fields)
        return None

    @staticmethod
    def _decode_output(run_id: str, data: bytes) -> Any:
        try:
            return codec.decode_json(data)
        except msgspec.DecodeError as exc:
            raise RedflowError(
                f"run {run_id} succeeded but its stored output is not valid JSON: {exc}"
            ) from None

    def _outcome(self, run_id: str, fields: list[bytes | None]) -> Any:
        status = fields[0]
        if status == b"succeeded":
            return self._decode_output(run_id, fields[1]) if fields[1] else None
        error = codec.decode_error(fields[2])
        if status == b"canceled":
            reason = fields[3].decode("utf-8", "replace") if fields[3] else None
            raise RunCanceledError(run_id, error, reason)
        raise run_failed(run_id, error)

    def _pubsub(self) -> Any:
        waiter = self._waiter
        if waiter.conn is None or waiter.pid != os.getpid():
            waiter.conn = self.redis.pubsub()  # type: ignore[no-untyped-call]
            waiter.pid = os.getpid()
        return waiter.conn

    @staticmethod
    def _subscribe(pubsub: Any, channel: bytes, deadline: float | None) -> None:
        """Subscribe and wait for the server's confirmation (so no publish is missed)."""
        pubsub.subscribe(channel)
        while True:
            remaining = None if deadline is None else max(0.05, deadline - time.monotonic())
            msg = pubsub.get_message(timeout=remaining if remaining is not None else 3600.0)
            if msg is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                continue
            if msg["type"] == "subscribe" and msg["channel"] == channel:
                return

    def _unsubscribe(self, channel: bytes) -> None:
        pubsub = self._waiter.conn
        if pubsub is None:
            return
        try:
            pubsub.unsubscribe(channel)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._drop_waiter()

    def _drop_waiter(self) -> None:
        pubsub = self._waiter.conn
        self._waiter.conn = None
        if pubsub is not None:
            with contextlib.suppress(Exception):  # best effort on a broken socket
                pubsub.close()

    @staticmethod
    def _wait_message(pubsub: Any, channel: bytes, deadline: float | None) -> bytes | None:
        """Block until a message on ``channel`` arrives (its data); None at the deadline."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            msg = pubsub.get_message(timeout=remaining if remaining is not None else 3600.0)
            if msg is not None and msg["type"] == "message" and msg["channel"] == channel:
                data = msg["data"]
                return data if isinstance(data, bytes) else str(data).encode()

    # ------------------------------------------------------------ workflows

    def list_workflows(self) -> list[WorkflowMeta]:
        """Metadata of every synced workflow, by name."""
        names = sorted(_dec(n) for n in self.redis.smembers(self.keys.workflows))
        if not names:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.workflow(name))
            raws = pipe.execute()
        return [codec.workflow_meta_from_hash(raw) for raw in raws if raw]

    def get_workflow_meta(self, name: str) -> WorkflowMeta | None:
        """Synced metadata of one workflow, or None."""
        check_name(name, "workflow name")
        raw = self.redis.hgetall(self.keys.workflow(name))
        if not raw:
            return None
        return codec.workflow_meta_from_hash(raw)

    def server_time_ms(self) -> int:
        """Redis server time in epoch ms (the clock every time that matters uses)."""
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def sync_registry(self, registry: Registry | None = None, *, app: str) -> None:
        """Write workflow metadata and cron entries of ``registry`` for ``app``.

        Metadata (never runs) of workflows that are gone from the registry, were
        last synced by the same ``app`` and are older than 30 s is removed.
        """
        if not isinstance(app, str):
            raise TypeError("app must be a str")
        if not app.strip():
            raise ValueError("sync_registry requires a non-empty app")
        app = check_name(app.strip(), "app")
        reg = registry if registry is not None else self.registry
        if not isinstance(reg, Registry):
            raise TypeError("registry must be a Registry")
        now = self.server_time_ms()
        defs = reg.list()
        self._remove_stale_workflows({wf.name for wf in defs}, app, now)
        for wf in defs:
            self._sync_workflow(wf, app, now)

    def _remove_stale_workflows(self, registered: set[str], app: str, now: int) -> None:
        existing = [_dec(n) for n in self.redis.smembers(self.keys.workflows)]
        for name in existing:
            if name in registered:
                continue
            key = self.keys.workflow(name)
            owner, updated, cron_ids = self.redis.hmget(key, "app", "updatedAt", "cronIdsJson")
            if not owner or _dec(owner) != app:
                continue
            try:
                updated_ms = int(updated) if updated else 0
            except ValueError:
                # Age unknown: keep it (another host may still serve it) rather than
                # failing the whole sync, which would stop a supervisor from starting.
                log.warning("workflow %r has an unreadable updatedAt %r; kept", name, updated)
                continue
            if now - updated_ms < STALE_WORKFLOW_GRACE_MS:
                continue
            ids = _json_list(cron_ids)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.srem(self.keys.workflows, name)
                if ids:
                    pipe.hdel(self.keys.cron_def, *ids)
                    pipe.zrem(self.keys.cron_next, *ids)
                pipe.execute()
            log.info("removed stale workflow metadata %r (app %r)", name, app)

    def _sync_workflow(self, wf: Workflow[Any, Any], app: str, now: int) -> None:
        key = self.keys.workflow(wf.name)
        old_ids = set(_json_list(self.redis.hget(key, "cronIdsJson")))
        cron_ids: list[str] = []
        cron_defs: list[tuple[str, bytes, int]] = []
        for trigger in wf.cron:
            cid = cron_id_for(wf.name, trigger)
            if cid in cron_ids:
                continue
            cron_ids.append(cid)
            record = CronDef(
                id=cid,
                workflow=wf.name,
                queue=wf.queue,
                expression=trigger.expression,
                timezone=trigger.timezone,
                input_json=codec.encode_json(trigger.input).decode(),
                max_concurrency=wf.max_concurrency,
                max_attempts=wf.retries.max_attempts,
                timeout_ms=int(wf.timeout * 1000) if wf.timeout else 0,
            )
            cron_defs.append(
                (
                    cid,
                    msgspec.json.encode(record),
                    next_fire_ms(trigger.expression, trigger.timezone, now),
                )
            )
        cron_json = msgspec.json.encode(
            [
                {
                    "expression": c.expression,
                    "timezone": c.timezone,
                    "input": c.input,
                    **({"id": c.id} if c.id else {}),
                }
                for c in wf.cron
            ]
        )
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "name": wf.name,
                    "queue": wf.queue,
                    "maxConcurrency": wf.max_concurrency,
                    "app": app,
                    "updatedAt": now,
                    "cronJson": cron_json,
                    "retriesJson": msgspec.json.encode(wf.retries),
                    "cronIdsJson": msgspec.json.encode(cron_ids),
                    "timeoutMs": int(wf.timeout * 1000) if wf.timeout else 0,
                },
            )
            pipe.sadd(self.keys.workflows, wf.name)
            pipe.sadd(self.keys.queues, wf.queue)
            gone = sorted(old_ids - set(cron_ids))
            if gone:
                pipe.hdel(self.keys.cron_def, *gone)
                pipe.zrem(self.keys.cron_next, *gone)
            for cid, record_json, first_fire in cron_defs:
                pipe.hset(self.keys.cron_def, cid, record_json)
                pipe.zadd(self.keys.cron_next, {cid: first_fire}, nx=True)
            pipe.execute()


def _json_list(raw: Any) -> list[str]:
    if not raw:
        return []
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


_default_client: Client | None = None


def create_client(
    url: str | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    redis: redis.Redis | None = None,
    default: bool = True,
    registry: Registry | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Client:
    """Create a client for ``url`` (default ``redis://localhost:6379/0``) and ``prefix``.

    ``rediss://`` URLs use TLS; ``redis://user:password@host`` authenticates
    (ACL users included). Passing ``redis=`` reuses that client's connection
    settings (the client opens its own connections, with bytes replies). Unless
    ``default=False`` the new client becomes the process's default client.
    """
    if url is not None and redis is not None:
        raise ValueError("pass either url or redis, not both")
    transport = Transport(url, redis)
    client = Client(
        transport, prefix=prefix, registry=registry, max_payload_bytes=max_payload_bytes
    )
    if default:
        set_default_client(client)
    return client


def set_default_client(client: Client | None) -> None:
    """Make ``client`` the process's default (used by ``Workflow.run()``)."""
    global _default_client
    _default_client = client


def get_default_client() -> Client | None:
    """The process's default client, if one was created."""
    return _default_client


def client_or_default(client: Client | None) -> Client:
    if client is not None:
        if not isinstance(client, Client):
            raise TypeError("client must be a redflow_mp Client")
        return client
    if _default_client is None:
        raise RedflowError(
            "no client: call create_client(...) first (it becomes the default client) "
            "or pass client=... to run()"
        )
    return _default_client
