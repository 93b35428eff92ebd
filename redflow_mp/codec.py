"""Stored records and the public state types, as msgspec Structs; JSON only.

Owns how runs, steps, workflow metadata and errors are encoded in Redis and
decoded back, and the public state types (``RunState``, ``StepState``,
``WorkflowMeta``, ``RunInfo``; ``ErrorInfo`` comes from ``errors``). Payloads
(inputs, outputs) are msgspec JSON: readable with ``redis-cli``, never pickled.
One Encoder and one Decoder per record type, built once at import.

Invariant: a value stored under a ``...Json`` field is a complete JSON document;
a field that is absent or empty means "not set".

Nesting: msgspec encodes and decodes containers recursively, so a value nested
about a thousand levels deep raises ``RecursionError`` (how deep depends on the
caller's stack). :func:`encode_json` refuses anything nested deeper than
:data:`MAX_NESTING` (256) levels of arrays and objects with a
:class:`NestingError` (a ``TypeError``: "not encodable"), so every payload
redflow-mp writes decodes anywhere; :func:`decode_json` turns a stack overflow
on a document written by something else into a :class:`NestingDecodeError` (a
``msgspec.DecodeError``), which every reader already handles as an unreadable
payload. No ``RecursionError`` leaves this module.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import msgspec

from .cron import Cron
from .errors import ErrorInfo
from .finite import non_finite_path
from .retry import Retries

__all__ = [
    "CHILD_OUTPUTS",
    "MAX_NESTING",
    "AttemptState",
    "ErrorInfo",
    "NestingDecodeError",
    "NestingError",
    "RunInfo",
    "RunState",
    "RunStatus",
    "RunWait",
    "StepState",
    "StepStatus",
    "StoredStep",
    "WorkflowMeta",
    "decode_json",
    "decode_wait",
    "encode_json",
    "encode_json_unchecked",
    "encode_wait",
    "non_finite_path",
    "run_status",
    "text",
    "whole_number",
]


class RunStatus(enum.StrEnum):
    """Lifecycle of a run. ``succeeded``, ``failed`` and ``canceled`` are terminal.

    A run read from Redis whose ``status`` field holds a value this version does
    not know (a newer version's status, a neighbour's write) gets a status outside
    the members, named ``UNKNOWN``, whose value is the stored text (:func:`run_status`):
    ``known`` and ``terminal`` are False, and nothing acts on it as on a member
    (``retry_run``, ``resume_run`` refuse it; ``result()`` raises instead of waiting).
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def known(self) -> bool:
        """Whether this version of redflow-mp knows the status (see the class doc)."""
        return self in _KNOWN


_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED})
_KNOWN = frozenset(RunStatus)


def run_status(text: str) -> RunStatus:
    """The status stored as ``text``: a member, or for a value this version does
    not know a status outside the members that keeps the text as its value (it
    was read as ``failed``, and ``redflow runs retry`` retried the run)."""
    try:
        return RunStatus(text)
    except ValueError:
        unknown = str.__new__(RunStatus, text)
        unknown._name_ = "UNKNOWN"
        unknown._value_ = text
        return unknown


class StepStatus(enum.StrEnum):
    """Outcome of one recorded step execution (``running``: started, not finished;
    a replay treats it as not done and runs the step again)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WAITING = "waiting"  # a durable wait step reached, not finished yet
    RUNNING = "running"


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Facts about the run being executed (times are epoch milliseconds)."""

    id: str
    workflow: str
    queue: str
    attempt: int
    max_attempts: int
    created_at: int
    parent_run_id: str | None = None
    cron_id: str | None = None


class RunWait(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """What a suspended run waits for (its ``wait`` field): the wait steps that
    suspended it and their kinds (``children``, ``sleep``, ``event``), the awaited
    child run ids (all must finish), the awaited event names (any one wakes it) and
    the wake-up time (a sleep's end or the earliest wait deadline, epoch ms).

    A paged wait (more than ``SUSPEND_PAGE`` children, wait_scripts.py) is stored
    without its ``children`` (200,000 ids were 6 MB written at the final suspend):
    ``children_awaited`` says how many it awaited, and ``run:<id>:awaits`` holds
    those still unfinished."""

    steps: list[str] = []
    kinds: list[str] = []
    children: list[str] = []
    events: list[str] = []
    wake_at: int | None = None
    children_awaited: int = 0


_wait_decoder = msgspec.json.Decoder(RunWait)
_wait_encoder = msgspec.json.Encoder()


def encode_wait(wait: RunWait) -> bytes:
    return _wait_encoder.encode(wait)


def decode_wait(data: bytes | str | None) -> RunWait | None:
    """The ``wait`` field, or None when absent or unreadable."""
    if not data:
        return None
    try:
        return _wait_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class AttemptState(msgspec.Struct, kw_only=True):
    """One execution of a run that ended, from ``run:<id>:attempts`` (times in epoch ms).

    ``outcome`` is ``succeeded``, ``failed``, ``canceled``, ``retried`` (failed,
    another attempt follows) or ``requeued`` (its worker was lost or stopped: the
    same attempt runs again; ``cause`` says why). ``error`` is the attempt's error.
    """

    attempt: int
    outcome: str
    started_at: int | None = None
    finished_at: int | None = None
    error: ErrorInfo | None = None
    cause: str | None = None


class StoredAttempt(msgspec.Struct, kw_only=True, rename="camel"):
    """An entry of ``run:<id>:attempts`` as the scripts write it (``_lib.lua``)."""

    attempt: int = 1
    outcome: str = ""
    started_at: int | None = None
    finished_at: int | None = None
    error_json: str | None = None
    cause: str | None = None


class RunState(msgspec.Struct, kw_only=True):
    """A run as stored in ``run:<id>`` (times are epoch milliseconds)."""

    id: str
    workflow: str
    queue: str
    status: RunStatus
    input: Any = None
    output: Any = None
    error: ErrorInfo | None = None
    attempt: int = 1
    max_attempts: int = 1
    created_at: int = 0
    available_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int | None = None
    cancel_requested_at: int | None = None
    cancel_reason: str | None = None
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    cron_id: str | None = None
    timeout: float | None = None
    crash_count: int = 0
    last_crash: str | None = None
    retry_of: str | None = None
    priority: int = 0
    wait: RunWait | None = None
    attempt_started_at: int | None = None
    attempts: list[AttemptState] = msgspec.field(default_factory=list)


class StepState(msgspec.Struct, kw_only=True):
    """One step of a run, as returned by ``Client.get_run_steps``."""

    name: str
    status: StepStatus
    output: Any = None
    error: ErrorInfo | None = None
    started_at: int | None = None
    finished_at: int | None = None
    attempt: int = 1
    # A children wait recorded by reference (its children's outputs add up past
    # max_payload_bytes): their run ids, whose outputs are the step's; ``output``
    # is then CHILD_OUTPUTS. None otherwise: a step whose output is the string
    # "@child-outputs" showed the same as one, with nothing to tell them apart.
    children: list[str] | None = None


#: The ``outputJson`` of a children wait's record whose children's outputs add
#: up past ``max_payload_bytes`` (its ``children`` name them; a replay reads
#: their outputs from them). Not JSON: a reader that does not know it fails
#: loudly instead of taking it for the step's value.
CHILD_OUTPUTS = "@child-outputs"


class StoredStep(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The JSON stored per step in ``run:<id>:steps`` (field names as in SPEC §4).

    ``seq`` comes first and is written as 0 by the client: ``write_step.lua``
    replaces it with the run's step counter (execution order by Redis, not by
    host clocks). It has no default, so it is always encoded.
    """

    seq: int
    status: str
    started_at: int
    finished_at: int
    attempt: int
    output_json: str | None = None
    error_json: str | None = None
    # A children wait whose outputs add up past max_payload_bytes: its child runs,
    # whose outputs are the step's (output_json is then CHILD_OUTPUTS, waitbase.py)
    children: list[str] | None = None


class WorkflowMeta(msgspec.Struct, kw_only=True):
    """Workflow metadata as synced by ``Client.sync_registry``."""

    name: str
    queue: str
    max_concurrency: int
    app: str
    updated_at: int
    cron: list[Cron] = msgspec.field(default_factory=list)
    retries: Retries | None = None
    cron_ids: list[str] = msgspec.field(default_factory=list)
    priority: int = 0
    rate_limit: str | None = None


_json_encoder = msgspec.json.Encoder()
#: msgspec's encoding of a user payload, without :func:`encode_json`'s checks: a
#: fast path's first step (``runs.encode_input``), which defers to the checked
#: functions whenever the result needs a closer look.
encode_json_unchecked = _json_encoder.encode
_json_decoder = msgspec.json.Decoder()
_error_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorInfo)
_step_encoder = msgspec.json.Encoder()
_step_decoder = msgspec.json.Decoder(StoredStep)
_attempt_decoder = msgspec.json.Decoder(StoredAttempt)


MAX_NESTING = 256
_TOO_DEEP = f"is nested too deeply (more than {MAX_NESTING} levels of lists/dicts)"
_TO_OPEN = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


class NestingError(TypeError):
    """A payload nests lists/dicts deeper than :data:`MAX_NESTING` levels."""


class NestingDecodeError(msgspec.DecodeError):
    """A stored document is nested too deeply to decode here."""


def _deeper_than(data: bytes, limit: int) -> bool:
    """True when the JSON document ``data`` nests arrays/objects more than ``limit`` deep.

    Runs in C-level passes: drop escaped backslashes and quotes, cut the string
    literals out (msgspec escapes every quote inside them), keep the brackets,
    then peel the innermost ``[]`` pairs once per level (at most ``limit`` passes,
    each shorter than the last).
    """
    outside = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in outside:
        outside = b"".join(outside.split(b'"')[::2])
    brackets = outside.translate(_TO_OPEN, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def encode_json(value: Any) -> bytes:
    """Encode a user payload; raises ``TypeError``/``msgspec.EncodeError`` if it cannot
    (:class:`NestingError` when it is nested deeper than :data:`MAX_NESTING`)."""
    try:
        data = _json_encoder.encode(value)
    except RecursionError:
        raise NestingError(_TOO_DEEP) from None
    # Fewer opening brackets than the limit cannot nest past it: the common case
    # costs two byte counts (none when the data is shorter than the limit).
    if (
        len(data) > MAX_NESTING
        and data.count(b"[") + data.count(b"{") > MAX_NESTING
        and _deeper_than(data, MAX_NESTING)
    ):
        raise NestingError(_TOO_DEEP)
    return data


def decode_json(data: bytes | str) -> Any:
    """Decode a user payload stored by :func:`encode_json`.

    Raises ``msgspec.DecodeError`` for malformed JSON, and its subclass
    :class:`NestingDecodeError` for a document nested too deeply to decode.
    """
    try:
        return _json_decoder.decode(data)
    except RecursionError:
        raise NestingDecodeError(
            "payload is nested too deeply to decode (redflow-mp writes at most "
            f"{MAX_NESTING} levels of lists/dicts)"
        ) from None


def encode_error(error: ErrorInfo) -> bytes:
    return _error_encoder.encode(error)


def decode_error(data: bytes | str | None) -> ErrorInfo | None:
    """Decode a stored ``errorJson``; a malformed one becomes a readable ErrorInfo."""
    if not data:
        return None
    try:
        return _error_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return ErrorInfo(type="CorruptRecord", message=f"unreadable errorJson: {text[:200]}")


def encode_step(step: StoredStep) -> bytes:
    return _step_encoder.encode(step)


def decode_step(data: bytes | str) -> StoredStep:
    return _step_decoder.decode(data)


def _text(raw: Mapping[Any, Any], field: bytes) -> str | None:
    value = raw.get(field)
    if value is None or value == b"":
        return None
    return bytes(value).decode("utf-8", "replace")


def _int(raw: Mapping[Any, Any], field: bytes) -> int | None:
    value = raw.get(field)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _payload(raw: Mapping[Any, Any], field: bytes) -> Any:
    value = raw.get(field)
    if not value:
        return None
    try:
        return decode_json(value)
    except NestingDecodeError:
        # The raw text would be thousands of brackets: say what it is instead.
        return f"<unreadable: {len(value)} bytes of JSON nested too deeply to decode>"
    except msgspec.DecodeError:
        # Inspection must survive a corrupted record: hand back the raw text.
        return value.decode("utf-8", "replace")


def _priority(raw: Mapping[Any, Any]) -> int:
    """The ``priority`` field (absent = 0; a value out of 0..9 is read as the scripts
    read it: 0)."""
    value = _int(raw, b"priority") or 0
    return value if 0 <= value <= 9 else 0


def run_state_from_hash(raw: Mapping[Any, Any]) -> RunState:
    """Build a :class:`RunState` from ``HGETALL run:<id>`` (bytes keys and values)."""
    status = run_status(_text(raw, b"status") or "queued")
    timeout_ms = _int(raw, b"timeoutMs")
    return RunState(
        id=_text(raw, b"id") or "",
        workflow=_text(raw, b"workflow") or "",
        queue=_text(raw, b"queue") or "",
        status=status,
        input=_payload(raw, b"inputJson"),
        output=_payload(raw, b"outputJson"),
        error=decode_error(raw.get(b"errorJson")),
        attempt=_int(raw, b"attempt") or 1,
        max_attempts=_int(raw, b"maxAttempts") or 1,
        created_at=_int(raw, b"createdAt") or 0,
        available_at=_int(raw, b"availableAt"),
        started_at=_int(raw, b"startedAt"),
        finished_at=_int(raw, b"finishedAt"),
        updated_at=_int(raw, b"updatedAt"),
        cancel_requested_at=_int(raw, b"cancelRequestedAt"),
        cancel_reason=_text(raw, b"cancelReason"),
        idempotency_key=_text(raw, b"idempotencyKey"),
        parent_run_id=_text(raw, b"parentRunId"),
        cron_id=_text(raw, b"cronId"),
        timeout=timeout_ms / 1000.0 if timeout_ms else None,
        crash_count=_int(raw, b"crashCount") or 0,
        last_crash=_text(raw, b"lastCrash"),
        retry_of=_text(raw, b"retryOf"),
        priority=_priority(raw),
        wait=decode_wait(raw.get(b"wait")),
        attempt_started_at=_int(raw, b"attemptStartedAt"),
    )


def attempt_states(entries: list[Any]) -> list[AttemptState]:
    """The entries of ``LRANGE run:<id>:attempts``, oldest first; an unreadable one
    is shown as such instead of failing the read."""
    out: list[AttemptState] = []
    for data in entries:
        try:
            a = _attempt_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            out.append(
                AttemptState(
                    attempt=0,
                    outcome="unknown",
                    error=ErrorInfo(type="CorruptRecord", message="unreadable attempt entry"),
                )
            )
            continue
        out.append(
            AttemptState(
                attempt=a.attempt,
                outcome=a.outcome,
                started_at=a.started_at,
                finished_at=a.finished_at,
                error=decode_error(a.error_json),
                cause=a.cause,
            )
        )
    return out


def final_attempt(raw: Mapping[Any, Any]) -> AttemptState | None:
    """The execution a finish ended, implied by the finished run's hash ``raw``
    (its ``finalAttempt`` mark: ``e`` with its ``errorJson``, ``1`` without; see
    ``ATTEMPTS_CAP`` in ``lua/_lib.lua``), or None when the run holds none."""
    mark = raw.get(b"finalAttempt")
    if mark is None:
        return None
    finished = _int(raw, b"finishedAt")
    started = _int(raw, b"attemptStartedAt")
    return AttemptState(
        attempt=_int(raw, b"attempt") or 1,
        outcome=_text(raw, b"status") or "unknown",
        started_at=started if started is not None else _int(raw, b"startedAt"),
        finished_at=finished,
        error=decode_error(raw.get(b"errorJson")) if mark == b"e" else None,
    )


def step_state(name: str, stored: StoredStep) -> StepState:
    """Turn a stored step record into the public :class:`StepState`."""
    try:
        status = StepStatus(stored.status)
    except ValueError:
        status = StepStatus.FAILED
    output = None
    if stored.output_json is not None:
        try:
            output = _json_decoder.decode(stored.output_json)
        except msgspec.DecodeError:
            output = stored.output_json
    return StepState(
        name=name,
        status=status,
        output=output,
        error=decode_error(stored.error_json),
        started_at=stored.started_at,
        finished_at=stored.finished_at if status is not StepStatus.RUNNING else None,
        attempt=stored.attempt,
        children=stored.children if stored.output_json == CHILD_OUTPUTS else None,
    )


def _crons(value: Any) -> list[Cron]:
    """The synced cron triggers; an entry that no longer validates is left out."""
    out: list[Cron] = []
    for item in value if isinstance(value, list) else []:
        try:
            out.append(msgspec.convert(item, Cron))
        except (msgspec.ValidationError, ValueError, TypeError):
            continue
    return out


def _retries(value: Any) -> Retries | None:
    if not isinstance(value, dict):
        return None
    try:
        return msgspec.convert(value, Retries)
    except (msgspec.ValidationError, ValueError, TypeError):
        return None


def workflow_meta_from_hash(raw: Mapping[Any, Any], name: str = "") -> WorkflowMeta:
    """Build a :class:`WorkflowMeta` from ``HGETALL workflow:<name>``; ``name`` (the
    key's) when the hash has no ``name`` field (as a run is named by its key)."""
    cron = _payload(raw, b"cronJson")
    retries = _payload(raw, b"retriesJson")
    cron_ids = _payload(raw, b"cronIdsJson")
    return WorkflowMeta(
        name=_text(raw, b"name") or name,
        queue=_text(raw, b"queue") or "default",
        max_concurrency=max(1, _int(raw, b"maxConcurrency") or 1),
        app=_text(raw, b"app") or "",
        updated_at=_int(raw, b"updatedAt") or 0,
        cron=_crons(cron),
        retries=_retries(retries),
        cron_ids=[str(c) for c in cron_ids] if isinstance(cron_ids, list) else [],
        priority=_priority(raw),
        rate_limit=_text(raw, b"rateLimit"),
    )


def text(value: Any) -> str:
    """A redis-py reply item as ``str``: bytes decoded (UTF-8, bad bytes replaced),
    ``None`` as ``""``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def whole_number(value: Any, max_digits: int = 19) -> int | None:
    """A redis-py reply item (or a request's text) holding ASCII decimal digits
    only, at most ``max_digits`` of them, as an ``int``; None for anything else.

    ``str.isdigit()`` alone lets through what ``int()`` refuses ("²", "①": a
    neighbour's write into our hashes, a hand-typed URL), which was a
    ``ValueError`` traceback in the readers that trusted it."""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    if not isinstance(value, bytes) or not value or len(value) > max_digits:
        return None
    return int(value) if value.isdigit() else None  # bytes.isdigit(): ASCII only
