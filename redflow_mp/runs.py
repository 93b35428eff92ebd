"""The run store: the internal layer every part of the library goes through to
enqueue a run, read one, encode a payload or wait for an end.

:class:`Runs` binds one :class:`~redflow_mp.transport.Transport` (its own
connections), one key namespace, its scripts and a registry. The public
:class:`~redflow_mp.client.Client` is a ``Runs`` with the public API on top;
steps, the executor, maintenance and recovery need only this layer, so they
never import the client.

Enqueue rules (SPEC §2): a run of a known :class:`Workflow` takes its queue,
attempts, concurrency, timeout and priority from the definition; a run started
by name takes them from this process's registry, else from metadata synced to
Redis, else defaults (queue ``default`` or ``queue_override``, one attempt; a
worker then fails it with ``UnknownWorkflowError``). Every payload is msgspec
JSON within ``max_payload_bytes``. When the definition is at hand and has a
``schema``, the input is validated before anything is written (the stored
input stays as given); a run started by a name this process does not define
is validated by the worker.

Fork safety: connections are per process (see ``transport.py``); a forked
child that keeps using an inherited store opens fresh sockets.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, overload

import msgspec
import redis

from . import codec, queries, tracing, xshard
from .cascade import (
    Pager,
    cancel_children,
    forget,
    gen_text,
    positions_by_shard,
    send_cancels,
)
from .codec import RunState, WorkflowMeta
from .connection import NotReplicatedError
from .errors import NETWORK_ERRORS, InputValidationError, PayloadTooLargeError
from .finite import non_finite_path
from .ids import new_run_id
from .keys import Keys
from .options import (
    NO_OPTIONS,
    RunOptions,
    cannot_be_run_id,
    check_idempotency_key,
    check_name,
    check_run_id,
    spec_run_id,
    timeout_to_ms,
)
from .packed import PlainEnqueues
from .refusals import doing
from .registry import Registry, Workflow, get_default_registry
from .results import ResultWaiter
from .scripts import Scripts, ScriptSet, cancel_reply, enqueue_reply
from .shards import SHARD_SEPARATOR
from .shardset import Shard, ShardSet
from .transport import Transport

__all__ = [
    "DEFAULT_MAX_EVENTS_PER_RUN",
    "DEFAULT_MAX_EVENT_BYTES_PER_RUN",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_PREFIX",
    "MAX_PAYLOAD_BYTES",
    "EnqueueTarget",
    "Runs",
    "cancel_accepted",
    "check_max_events_per_run",
    "check_max_payload_bytes",
    "encode_input",
    "encode_payload",
    "enqueue_call",
    "event_payload",
    "item_error",
    "run_state",
    "target_of_definition",
    "target_of_name",
    "workflow_meta",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "redflow"
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
#: The largest ``max_payload_bytes``: 512 MiB, Redis's largest argument
#: (``proto-max-bulk-len``'s default; a payload is one argument of a script call),
#: as the supervisor's setting (``supervisor/settings.py``).
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
#: The smallest max_payload_bytes (the supervisor's setting has the same bound).
MIN_PAYLOAD_BYTES = 1024
DEFAULT_MAX_EVENTS_PER_RUN = 10_000
#: Bytes the unconsumed event payloads of one run may hold (eight payloads of
#: the default max_payload_bytes): the count limit alone let one run hold
#: 10,000 x 8 MiB.
DEFAULT_MAX_EVENT_BYTES_PER_RUN = 64 * 1024 * 1024


def check_max_events_per_run(value: object, name: str = "max_events_per_run") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def event_payload(event: object, payload: Any, limit: int) -> tuple[str, bytes]:
    """A checked event name and its encoded payload (``max_payload_bytes``)."""
    name = check_name(event, "event name")
    return name, encode_payload(payload, f"payload of event {name!r}", limit, finite=True)


# ---------------------------------------------------------------------------
# Pure: what an enqueue writes and how a read decodes. The sync store below and
# the asyncio client (``aio.py``) both use these, so they cannot drift apart.


class EnqueueTarget(NamedTuple):
    """Where and how the runs of one workflow are enqueued (from its definition,
    its synced metadata, or defaults)."""

    workflow: str
    queue: str
    max_attempts: int
    max_concurrency: int | None
    timeout_ms: int | None
    priority: int
    definition: Workflow[Any, Any] | None  # validates the input, when this process has it
    #: on ``default`` for want of the workflow's metadata (no queue_override): the
    #: run says so (``queueFallback``) and a registration moves it (adopt_runs.lua)
    fallback: bool = False


def target_of_definition(wf: Workflow[Any, Any], options: RunOptions) -> EnqueueTarget:
    """A run of a definition this process has: its queue, attempts, concurrency,
    timeout and priority (the run's options win)."""
    timeout = options.timeout if options.timeout is not None else wf.timeout
    # tuple.__new__: the NamedTuple's own __new__ is a Python function (a frame
    # more, about 1,000 CPU instructions an enqueue)
    return tuple.__new__(
        EnqueueTarget,
        (
            wf.name,
            wf.queue if options.queue_override is None else options.queue_override,
            wf.retries.max_attempts,
            wf.max_concurrency,
            timeout_to_ms(timeout) if timeout is not None else None,
            wf.priority if options.priority is None else options.priority,
            wf,
            False,
        ),
    )


def target_of_name(name: str, meta: WorkflowMeta | None, options: RunOptions) -> EnqueueTarget:
    """A run of a workflow known only by name: from its synced metadata, else defaults
    (queue ``queue_override`` or ``default``, one attempt, priority 0; a warning is
    logged). The run's options win."""
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
    return EnqueueTarget(
        name,
        check_name(queue, "queue"),
        max_attempts,
        meta.max_concurrency if meta is not None else None,
        timeout_to_ms(options.timeout) if options.timeout is not None else None,
        options.priority
        if options.priority is not None
        else (meta.priority if meta is not None else 0),
        None,
        meta is None and options.queue_override is None,
    )


def check_max_payload_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("max_payload_bytes must be an int")
    if value < MIN_PAYLOAD_BYTES:
        raise ValueError(f"max_payload_bytes must be at least {MIN_PAYLOAD_BYTES}")
    if value > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"max_payload_bytes must be at most {MAX_PAYLOAD_BYTES} (512 MiB, Redis's "
            "largest argument by default), not " + (str(value) if value < 10**12 else "more")
        )
    return value


def encode_payload(value: Any, what: str, limit: int, *, finite: bool = False) -> bytes:
    """Encode a payload as JSON within ``limit`` bytes (clear errors).

    ``finite``: refuse NaN and infinite floats (a ``ValueError`` naming where they
    sit) instead of storing them as ``null``, as msgspec writes them. Inputs and
    event payloads are checked (a caller's argument is never silently changed);
    outputs keep JSON's ``null`` (docs/guide.md, "Payloads")."""
    try:
        data = codec.encode_json(value)
    except codec.NestingError as exc:
        raise codec.NestingError(f"{what} {exc}") from None
    except UnicodeEncodeError:  # was raised as is: a worker storing an output died of it
        raise TypeError(
            f"{what} is not JSON-encodable: it holds text that is not valid Unicode (a lone "
            "surrogate, e.g. a file name that was not UTF-8, from os.listdir or "
            "os.fsdecode); decode such bytes with errors='replace' or keep them as bytes "
            "in base64"
        ) from None
    except (TypeError, ValueError, msgspec.EncodeError, OverflowError) as exc:
        # ValueError: an int of more than 4,300 digits (sys.get_int_max_str_digits),
        # raised as is before: a worker storing such an output died of it.
        raise TypeError(f"{what} is not JSON-encodable: {exc}") from None
    if finite:
        path = non_finite_path(value, data)
        if path is not None:
            raise ValueError(
                f"{what}{path} is NaN or infinite: JSON has no such number (msgspec would "
                "store null); pass None or a string instead"
            )
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"{what} is {len(data)} bytes encoded; the limit is {limit} bytes (max_payload_bytes)"
        )
    return data


def item_error(index: int, exc: Exception) -> Exception:
    """``exc`` with the index of the bad item in front of its message (same type):
    ``inputs[1]: ...`` from ``run_many`` and ``step.run_workflows`` alike."""
    try:
        return type(exc)(f"inputs[{index}]: {exc}")
    except Exception:  # an exception type whose constructor takes other arguments
        return InputValidationError(f"inputs[{index}]: {exc}")


def encode_input(target: EnqueueTarget, input: Any, limit: int) -> bytes:
    """A run's input as stored: its JSON as given, checked before anything is written.

    Too deep a nesting, or (when the definition is at hand) input that does not
    convert to its ``schema``, is an :class:`InputValidationError`. The check is
    the worker's own: ``msgspec.convert`` of the JSON round trip, so what passes
    here passes there.
    """
    # The common input passes every check of encode_payload on the encoder's
    # bytes alone (no ``null`` that could be a NaN, few brackets, within the
    # limit): about 5,000 CPU instructions an enqueue fewer than the checked
    # path (benchmarks.enqueue_instr), which anything else takes (the same bytes,
    # or the same clear error).
    try:
        data: bytes | None = codec.encode_json_unchecked(input)
    except Exception:
        data = None
    # ``find``, not ``in``: ``bytes.__contains__`` first tries its argument as an
    # int and formats the TypeError it catches (about 2,000 CPU instructions an
    # enqueue). Brackets are counted only in data long enough to hold too many.
    if (
        data is None
        or len(data) > limit
        or data.find(b"null") >= 0
        or (
            len(data) > codec.MAX_NESTING
            and data.count(b"[") + data.count(b"{") > codec.MAX_NESTING
        )
    ):
        try:
            data = encode_payload(input, "input", limit, finite=True)
        except codec.NestingError as exc:
            raise InputValidationError(str(exc)) from None
    wf = target.definition
    if wf is not None and wf.schema is not None:
        try:
            msgspec.convert(codec.decode_json(data), wf.schema)
        except (msgspec.ValidationError, TypeError) as exc:
            raise InputValidationError(
                f"input does not match the schema of {wf.name!r}: {exc}"
            ) from None
    return data


def enqueue_call(
    scripts: ScriptSet, target: EnqueueTarget, input_json: bytes, options: RunOptions
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """Keys and arguments of the ``enqueue_run`` call for a new run (a fresh id), with
    the caller's trace context when it has one (``tracing.trace_args``)."""
    return scripts.enqueue_call(
        new_run_id() + scripts.id_suffix,
        target.workflow,
        target.queue,
        input_json,
        target.max_attempts,
        options.run_at_ms,
        options.idempotency_key,
        options.idempotency_ttl_ms,
        options.parent_run_id or "",
        "",
        target.max_concurrency,
        target.timeout_ms,
        target.priority,
        options.linked,
        tracing.trace_args(),
        target.fallback,
    )


def cancel_accepted(status: str | None) -> bool:
    """``cancel_run``'s answer: True when the run is canceled or will be."""
    return status in ("canceled", "running") if status is not None else False


def run_state(run_id: str, raw: Any) -> RunState | None:
    """The run from ``HGETALL run:<id>``, or None for an unknown id."""
    if not raw:
        return None
    state = codec.run_state_from_hash(raw)
    if not state.id:
        state.id = run_id
    return state


def workflow_meta(raw: Any, name: str = "") -> WorkflowMeta | None:
    """The metadata from ``HGETALL workflow:<name>`` (of ``name``), or None."""
    return codec.workflow_meta_from_hash(raw, name) if raw else None


# ---------------------------------------------------------------------------


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
        max_events_per_run: int = DEFAULT_MAX_EVENTS_PER_RUN,
        shards: int = 1,
        max_event_bytes_per_run: int = DEFAULT_MAX_EVENT_BYTES_PER_RUN,
    ) -> None:
        self.transport = transport
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.scripts = Scripts(transport, self.keys, functions=bool(redis_functions))
        self.registry = registry if registry is not None else get_default_registry()
        self.max_payload_bytes = check_max_payload_bytes(max_payload_bytes)
        self.max_events_per_run = check_max_events_per_run(max_events_per_run)
        self.max_event_bytes_per_run = check_max_events_per_run(
            max_event_bytes_per_run, "max_event_bytes_per_run"
        )
        self.waiter = ResultWaiter(transport, self.keys, self.scripts.confirm_result)
        self._plain = PlainEnqueues()  # packed enqueues of runs with no option
        self.shard_set = ShardSet(
            transport,
            prefix,
            shards,
            scripts=self.scripts,
            waiter=self.waiter,
            functions=bool(redis_functions),
        )

    # --------------------------------------------------------------- shards

    @property
    def shards(self) -> tuple[Shard, ...]:
        """The namespace's shards (``shards`` setting; ``shards.py``); shard 0 is
        :attr:`keys` / :attr:`redis`."""
        return self.shard_set.shards

    @property
    def shard_count(self) -> int:
        return self.shard_set.count

    def shard_of_workflow(self, name: str) -> Shard:
        """The shard holding workflow ``name``'s keys and runs."""
        return self.shard_set.of_workflow(name)

    def shard_of_run(self, run_id: str) -> Shard:
        """The shard a run id names (``ValueError`` for a malformed id)."""
        return self.shard_set.of_run(check_run_id(run_id))

    @property
    def redis(self) -> redis.Redis:
        """The underlying redis-py client (bytes replies)."""
        return self.transport.redis

    def close(self) -> None:
        """Close this process's connections; any later use raises ``RedflowError``.

        The transports first: their gates refuse to open a connection again
        (``closing.py``) before any waiter's connection is cut. Cut first, a
        ``result()`` wait in another thread reconnected: its new socket took a
        descriptor number just freed, while another waiter's poll was about to
        watch that number (redis-py reads it before polling), and that wait slept
        its whole 15 s recheck period instead of raising the closed error."""
        self.transport.close()
        self.shard_set.close()
        self.waiter.close()

    # ------------------------------------------------------------- payloads

    def encode_payload(self, value: Any, what: str) -> bytes:
        """Encode a payload as JSON within ``max_payload_bytes`` (clear errors)."""
        return encode_payload(value, what, self.max_payload_bytes)

    # -------------------------------------------------------------- enqueue

    def enqueue(self, workflow: Workflow[Any, Any] | str, input: Any, options: RunOptions) -> str:
        """Enqueue a run of ``workflow`` (a definition, or a name); return its id."""
        if isinstance(workflow, Workflow):
            target = target_of_definition(workflow, options)
        else:
            name = check_name(workflow, "workflow name")
            wf = self.registry.get(name)
            if wf is not None:
                target = target_of_definition(wf, options)
            else:
                target = target_of_name(name, self.get_workflow_meta(name), options)
        data = encode_input(target, input, self.max_payload_bytes)
        if self.shard_set.count == 1:
            if (
                options is NO_OPTIONS
                and target.timeout_ms is None
                and not target.priority
                and not target.fallback
                and self.transport.plain
                and not tracing.trace_args()
            ):
                return self.scripts.send_plain_enqueue(self._plain, target, data)
            return self.scripts.send_enqueue(*enqueue_call(self.scripts, target, data, options))[0]
        shard = self.shard_set.of_workflow(target.workflow)
        cross = xshard.crosses(self, options, shard)
        if cross:  # the children record lives in the parent's shard: written below
            options = msgspec.structs.replace(options, linked=False)
        run_id, created = shard.scripts.send_enqueue(
            *enqueue_call(shard.scripts, target, data, options)
        )
        if cross:
            xshard.record_children(self, options.parent_run_id or "", [run_id])
            if not created:  # found by its key: this parent awaits it too
                xshard.link_sharer(shard, options.parent_run_id or "", [run_id])
        return run_id

    def enqueue_each(
        self, workflow: Workflow[Any, Any] | str, inputs: list[Any], options: list[RunOptions]
    ) -> list[str]:
        """Enqueue one run per input (with its options), in one pipelined round trip;
        return their ids in order. Every input is encoded and validated before
        anything is written. A resend is safe when each option carries an
        idempotency key (``step.run_workflows`` does). With ``durability`` the
        pipeline ends with its WAIT: unconfirmed, :class:`NotReplicatedError`."""
        if isinstance(workflow, Workflow):
            targets = [target_of_definition(workflow, o) for o in options]
        else:
            name = check_name(workflow, "workflow name")
            wf = self.registry.get(name)
            meta = None if wf is not None else self.get_workflow_meta(name)
            targets = [
                target_of_definition(wf, o) if wf is not None else target_of_name(name, meta, o)
                for o in options
            ]
        if not targets:
            return []
        # one workflow, so one shard; children of a parent in another shard are
        # linked by a separate write to the parent's shard (xshard.py)
        shard = self.shard_set.of_workflow(targets[0].workflow)
        scripts = shard.scripts
        cross = [xshard.crosses(self, o, shard) for o in options]
        options = [
            msgspec.structs.replace(o, linked=False) if c else o
            for o, c in zip(options, cross, strict=True)
        ]
        calls = []
        for index, (t, value, o) in enumerate(zip(targets, inputs, options, strict=True)):
            try:
                data = encode_input(t, value, self.max_payload_bytes)
            except (TypeError, ValueError, InputValidationError) as exc:  # as run_many
                raise item_error(index, exc) from None
            calls.append(enqueue_call(scripts, t, data, o))
        scripts.ensure_loaded()
        commands = [scripts.command("enqueue_run", keys, args) for keys, args in calls]
        if shard.transport.wait_args is not None:
            # durability: acknowledged once a replica has them; the WAIT may take
            # durability_wait_ms plus the socket timeout, and nothing is resent here
            # (NotReplicatedError: the caller resends, its idempotency keys find the runs)
            replies = shard.transport.call_waited(commands)
        else:
            pipe = shard.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            replies = pipe.execute(raise_on_error=False)
        made: list[tuple[str, bool]] = [
            scripts.send_enqueue(keys, args)  # e.g. NOSCRIPT after a flush: one by one
            if isinstance(reply, Exception)
            else enqueue_reply(reply)
            for (keys, args), reply in zip(calls, replies, strict=True)
        ]
        ids = [run_id for run_id, _ in made]
        linked = [i for i, c, o in zip(ids, cross, options, strict=True) if c and o.parent_run_id]
        if linked:
            parent = options[0].parent_run_id or ""
            xshard.record_children(self, parent, linked)
            cross_ids = set(linked)
            found = [i for i, c in made if not c and i in cross_ids]  # found by key: shared
            xshard.link_sharer(shard, parent, found)
        return ids

    # ---------------------------------------------------------------- reads

    @overload
    def get_run(self, run_id: str) -> RunState | None: ...
    @overload
    def get_run(self, *, id: str) -> RunState | None: ...
    def get_run(self, run_id: str | None = None, *, id: str | None = None) -> RunState | None:
        """The run's state with its attempts' history, or None for an unknown id
        (the id also as ``id=``, SPEC's spelling)."""
        run_id = spec_run_id(run_id, id, "get_run")
        shard = self.shard_of_run(run_id)
        return queries.drive(shard.redis, queries.get_run(shard.keys, run_id))

    def get_workflow_meta(self, name: str) -> WorkflowMeta | None:
        """Synced metadata of one workflow, or None."""
        shard = self.shard_set.of_workflow(check_name(name, "workflow name"))
        return workflow_meta(
            queries.drive(shard.redis, queries.one("hgetall", shard.keys.workflow(name))), name
        )

    def server_time_ms(self) -> int:
        """Redis server time in epoch ms (the clock every time that matters uses).
        A refusal (``BUSY`` while another program's script runs) is the
        library's error naming the read (``refusals.doing``)."""
        with doing("reading the server's time (TIME)", self.transport.describe()):
            seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def send_event(
        self, run_id: str, event: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> bool:
        """Record ``event`` for the run and wake it if it waits for that event.

        Returns False (nothing stored) for an unknown or finished run. The payload
        is msgspec JSON within ``max_payload_bytes``; at most
        ``max_events_per_run`` events, of at most ``max_event_bytes_per_run``
        payload bytes in all (64 MiB by default), may wait unconsumed per run
        (beyond: :class:`~redflow_mp.wait_scripts.EventLimitError`, nothing
        stored; a consumed event frees its place and bytes).

        With an ``idempotency_key`` (a str of at most 4,096 characters) the run
        stores at most one event per key: a later send with a key it has seen
        returns True and stores nothing, even once the run has finished, so
        the call is safe to repeat (the client resends it itself after a
        network error). Without one it is never resent: a network error (a
        connection cut, or no reply within the socket timeout) is raised, and
        the event may or may not have been stored; sending it again may
        deliver it twice."""
        name, data = event_payload(event, payload, self.max_payload_bytes)
        key = check_idempotency_key(idempotency_key)
        if cannot_be_run_id(check_run_id(run_id)):
            return False
        scripts = self.scripts_for(run_id)
        return scripts.send_event(
            run_id, name, data, self.max_events_per_run, key, self.max_event_bytes_per_run
        )

    def cancel_children(
        self, run_id: str, reason: str | None = None, limit: int | None = None
    ) -> int:
        """Cancel the unfinished run_workflow children of ``run_id``, recursively
        (at most ``limit`` cancels: ``cascade.cancel_children``)."""

        def scan(parent: str) -> tuple[str, str, Pager]:
            shard = self.shard_of_run(parent)
            children = shard.keys.run_children(parent)
            # The generation first: a cascade recorded after this read (resumed,
            # canceled again) is not this walk's.
            gen, at = shard.redis.hmget(shard.keys.run(parent), "cascadeGen", "cascadeAt")

            def pager(cursor: int) -> tuple[int, list[bytes], int]:
                pipe = shard.redis.pipeline(transaction=False)
                pipe.sscan(children, cursor, count=500)
                pipe.scard(children)
                (after, listed), card = pipe.execute()
                return int(after), list(listed), int(card)

            return gen_text(gen), gen_text(at), pager

        def done(parents: list[tuple[str, str]]) -> None:  # their cascade is no longer owed
            for positions in positions_by_shard([p for p, _ in parents], self.shard_of_run):
                shard = self.shard_of_run(parents[positions[0]][0])
                forget(shard, [parents[i] for i in positions])

        def mark(parent: str, gen: str, last: str) -> None:  # where a cut walk stopped
            shard = self.shard_of_run(parent)
            shard.scripts.run("cascade_at", (shard.keys.run(parent),), (gen, last), retry=True)

        return cancel_children(scan, self._cancel_many, run_id, reason, done, mark, limit)

    def _cancel_many(
        self, ids: list[str], why: str, parent: str = ""
    ) -> list[tuple[str | None, bool]]:
        """``cancel_run`` for each of ``ids``, one pipeline per shard, each followed by
        the SCARD of the run's children (and by the WAIT of ``durability``:
        ``cascade.send_cancels``); per id (status after, has children). A script
        error (NOSCRIPT after a flush) or a lost connection: that shard's ids one
        by one through ``Scripts.cancel`` (a cancel sent twice is harmless). A WAIT
        not confirmed raises :class:`NotReplicatedError` (the walk stops). With
        ``parent``, a run that is not that parent's child is left as it is (None)."""
        out: list[tuple[str | None, bool]] = [(None, False)] * len(ids)
        for positions in positions_by_shard(ids, self.shard_of_run):
            shard = self.shard_of_run(ids[positions[0]])
            scripts = shard.scripts
            scripts.ensure_loaded()
            commands: list[tuple[Any, ...]] = []
            for i in positions:
                keys, args = scripts.cancel_call(ids[i], why, parent)
                commands.append(scripts.command("cancel_run", keys, args))
                commands.append(("SCARD", shard.keys.run_children(ids[i])))
            try:
                replies = send_cancels(shard.transport, shard.redis, commands)
            except NotReplicatedError:
                raise  # every reply read: one by one would wait again, each (see send_cancels)
            except NETWORK_ERRORS:  # one by one (a cancel sent twice is harmless)
                replies = [RuntimeError("resend")] * (2 * len(positions))
            for j, i in enumerate(positions):
                reply, children = replies[2 * j], replies[2 * j + 1]
                if isinstance(reply, Exception):
                    status = scripts.cancel(ids[i], why, parent)
                else:
                    status = cancel_reply(reply)
                out[i] = (status, isinstance(children, Exception) or int(children) > 0)
        return out

    def wait_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Block until the run ends; return its output or raise its error."""
        if self.shard_set.count == 1 and SHARD_SEPARATOR not in run_id:
            return self.waiter.wait(run_id, timeout)
        return self.shard_of_run(run_id).waiter.wait(run_id, timeout)

    # -------------------------------------------------------- by run shard

    def scripts_for(self, run_id: str) -> Scripts:
        """The scripts of the shard ``run_id`` lives in."""
        if self.shard_set.count == 1 and SHARD_SEPARATOR not in run_id:
            return self.scripts
        # (with one shard, an id with a suffix: of_run refuses a malformed one)
        return self.shard_set.of_run(run_id).scripts

    def keys_for(self, run_id: str) -> Keys:
        if self.shard_set.count == 1 and SHARD_SEPARATOR not in run_id:
            return self.keys
        return self.shard_set.of_run(run_id).keys

    def renew(self, lease_ms: int, pairs: list[tuple[str, str]]) -> list[tuple[bool, bool]]:
        """Renew leases (``renew_lease``), one call per shard holding some; per pair:
        (still held, cancellation requested)."""
        if self.shard_set.count == 1:
            return self.scripts.renew(lease_ms, pairs)
        groups: dict[int, list[int]] = {}
        for i, (run_id, _token) in enumerate(pairs):
            groups.setdefault(self.shard_set.of_run(run_id).index, []).append(i)
        out: list[tuple[bool, bool]] = [(False, False)] * len(pairs)
        for index, positions in groups.items():
            replies = self.shards[index].scripts.renew(lease_ms, [pairs[i] for i in positions])
            for i, reply in zip(positions, replies, strict=True):
                out[i] = reply
        return out
