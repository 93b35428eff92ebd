"""The run store: the internal layer every part of the library goes through to
enqueue a run, read one, encode a payload or wait for an end.

:class:`Runs` binds one :class:`~redflow_mp.transport.Transport` (its own
connections), one key namespace, its scripts and a registry. The public
:class:`~redflow_mp.client.Client` is a ``Runs`` with the public API on top;
steps, the executor, maintenance and recovery need only this layer, so they
never import the client.

Enqueue rules (SPEC §2): a run of a known :class:`Workflow` takes its queue,
attempts, concurrency and timeout from the definition; a run started by name
takes them from this process's registry, else from metadata synced to Redis,
else defaults (queue ``default`` or ``queue_override``, one attempt; a worker
then fails it with ``UnknownWorkflowError``). Every payload is msgspec JSON
within ``max_payload_bytes``.

Fork safety: connections are per process (see ``transport.py``); a forked
child that keeps using an inherited store opens fresh sockets.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import redis

from . import codec
from .codec import RunState, WorkflowMeta
from .errors import InputValidationError, PayloadTooLargeError
from .ids import new_run_id
from .keys import Keys
from .options import RunOptions, check_name, check_run_id
from .registry import Registry, Workflow, get_default_registry
from .results import ResultWaiter
from .scripts import Scripts
from .transport import Transport

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "DEFAULT_PREFIX", "Runs"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "redflow"
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024


class Runs:
    """Enqueue, read and wait for the runs of one namespace (``prefix``) on one Redis."""

    def __init__(
        self,
        transport: Transport,
        *,
        prefix: str = DEFAULT_PREFIX,
        registry: Registry | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        redis_functions: bool = False,
    ) -> None:
        self.transport = transport
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.scripts = Scripts(transport, self.keys, functions=bool(redis_functions))
        self.registry = registry if registry is not None else get_default_registry()
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int):
            raise TypeError("max_payload_bytes must be an int")
        if max_payload_bytes < 1024:
            raise ValueError("max_payload_bytes must be at least 1024")
        self.max_payload_bytes = max_payload_bytes
        self.waiter = ResultWaiter(transport, self.keys)

    @property
    def redis(self) -> redis.Redis:
        """The underlying redis-py client (bytes replies)."""
        return self.transport.redis

    def close(self) -> None:
        """Close this process's connections; the store can no longer be used."""
        self.waiter.close()
        self.transport.close()

    # ------------------------------------------------------------- payloads

    def encode_payload(self, value: Any, what: str) -> bytes:
        """Encode a payload as JSON within ``max_payload_bytes`` (clear errors)."""
        try:
            data = codec.encode_json(value)
        except codec.NestingError as exc:
            raise codec.NestingError(f"{what} {exc}") from None
        except (TypeError, msgspec.EncodeError, OverflowError) as exc:
            raise TypeError(f"{what} is not JSON-encodable: {exc}") from None
        if len(data) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"{what} is {len(data)} bytes encoded; the limit is {self.max_payload_bytes} "
                "bytes (max_payload_bytes)"
            )
        return data

    # -------------------------------------------------------------- enqueue

    def enqueue(self, workflow: Workflow[Any, Any] | str, input: Any, options: RunOptions) -> str:
        """Enqueue a run of ``workflow`` (a definition, or a name); return its id."""
        if isinstance(workflow, Workflow):
            return self._enqueue_definition(workflow, input, options)
        name = check_name(workflow, "workflow name")
        wf = self.registry.get(name)
        if wf is not None:
            return self._enqueue_definition(wf, input, options)
        meta = self.get_workflow_meta(name)
        if meta is None:
            log.warning(
                "workflow %r is neither registered in this process nor synced to Redis; "
                "enqueuing on queue %r anyway",
                name,
                options.queue_override or "default",
            )
        max_attempts = 1
        if meta is not None and meta.retries is not None:
            max_attempts = meta.retries.max_attempts
        queue = (
            options.queue_override
            if options.queue_override is not None
            else (meta.queue if meta is not None else "default")
        )
        return self._send(
            name,
            check_name(queue, "queue"),
            input,
            options,
            max_attempts=max_attempts,
            max_concurrency=meta.max_concurrency if meta is not None else None,
            timeout=options.timeout,
        )

    def _enqueue_definition(self, wf: Workflow[Any, Any], input: Any, options: RunOptions) -> str:
        return self._send(
            wf.name,
            wf.queue if options.queue_override is None else options.queue_override,
            input,
            options,
            max_attempts=wf.retries.max_attempts,
            max_concurrency=wf.max_concurrency,
            timeout=options.timeout if options.timeout is not None else wf.timeout,
        )

    def _send(
        self,
        name: str,
        queue: str,
        input: Any,
        options: RunOptions,
        *,
        max_attempts: int,
        max_concurrency: int | None,
        timeout: float | None,
    ) -> str:
        try:
            data = self.encode_payload(input, "input")
        except codec.NestingError as exc:
            raise InputValidationError(str(exc)) from None
        run_id, _created = self.scripts.enqueue(
            new_run_id(),
            name,
            queue,
            data,
            max_attempts,
            options.run_at_ms,
            options.idempotency_key,
            options.idempotency_ttl_ms,
            options.parent_run_id or "",
            "",
            max_concurrency,
            int(timeout * 1000) if timeout is not None else None,
        )
        return run_id

    # ---------------------------------------------------------------- reads

    def get_run(self, run_id: str) -> RunState | None:
        """The run's state, or None for an unknown id."""
        raw = self.redis.hgetall(self.keys.run(check_run_id(run_id)))
        if not raw:
            return None
        state = codec.run_state_from_hash(raw)
        if not state.id:
            state.id = run_id
        return state

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

    def wait_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Block until the run ends; return its output or raise its error."""
        return self.waiter.wait(run_id, timeout)
