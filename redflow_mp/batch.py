"""Batch enqueue (``Workflow.run_many``, ``Client.run_many_by_name``): what a batch
writes and how its replies read, without I/O.

A batch is cut into chunks of :data:`BATCH_CHUNK` runs (fewer when their inputs
pass :data:`BATCH_CHUNK_BYTES`); each chunk is one call
of ``enqueue_runs`` (one round trip), which writes every run of the chunk
exactly as ``enqueue_run`` writes one, atomically. Every item of the whole
batch is encoded and validated (JSON, ``max_payload_bytes``, the schema when
the definition is at hand, its idempotency key) *before the first chunk is
sent*, so a bad item raises at the call site, naming its index, and nothing of
the batch is written. An item whose idempotency key names an existing run
(also one made earlier in the same batch) gets that run's id in its place.

A chunk whose reply is lost to a network error is sent once more: the run ids
are generated here, so a resend finds the runs the first send made and returns
them. A failure after some chunks were written leaves those chunks' runs in
place (each chunk is atomic, the batch as a whole is not): the error raised
(:meth:`Progress.failed`, the failing chunk's own type) then says how many runs
were enqueued, and its ``enqueued`` attribute holds the run id of each input
written (None for the others), so a caller can enqueue exactly the rest.

The sync store (``runs.py``) and the asyncio client (``aio.py``) share these
functions, as they share ``enqueue_call``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .connection import NotReplicatedError
from .errors import NETWORK_ERRORS, InputValidationError
from .ids import new_run_id
from .keys import Keys
from .options import MAX_IDEMPOTENCY_KEY_LENGTH, RunOptions, check_text, check_user_key
from .runs import EnqueueTarget, encode_input, item_error

__all__ = [
    "BATCH_CHUNK",
    "BATCH_CHUNK_BYTES",
    "ChunkCall",
    "Progress",
    "chunk_calls",
    "encode_batch",
    "many_reply",
]

BATCH_CHUNK = 500
"""Runs per ``enqueue_runs`` call: large enough that the round trip and the call's
fixed cost vanish per run, small enough that one call blocks Redis for a few ms."""

BATCH_CHUNK_BYTES = 4 * 1024 * 1024
"""Bytes of inputs and idempotency keys per ``enqueue_runs`` call (a chunk ends
before the input that would pass it; an input larger than this goes alone): a
call is atomic, so Redis serves nobody else while it copies them (about 6 ms a
MB). Cut by count alone, 60 inputs of 8 MB, each within the default
``max_payload_bytes``, went in one call that held Redis for 3 s."""


def _check_key(key: object, index: int) -> str:
    if key is None:
        return ""
    if not isinstance(key, str):
        raise TypeError(f"idempotency_keys[{index}] must be a str or None")
    if not key:
        raise ValueError(f"idempotency_keys[{index}] must be non-empty when given")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(
            f"idempotency_keys[{index}] is {len(key)} characters; the limit is "
            f"{MAX_IDEMPOTENCY_KEY_LENGTH}"
        )
    return check_user_key(
        check_text(key, f"idempotency_keys[{index}]"), f"idempotency_keys[{index}]"
    )


def encode_batch(
    target: EnqueueTarget,
    inputs: Iterable[Any],
    idempotency_keys: Iterable[str | None] | None,
    limit: int,
) -> tuple[list[bytes], list[str] | None]:
    """Every item's stored input and idempotency key, checked before anything is
    written; the first bad item raises (its index in the message)."""
    if isinstance(inputs, str | bytes | Mapping) or not isinstance(inputs, Iterable):
        raise TypeError(
            "inputs must be a list (or other iterable) of inputs, one per run, "
            f"not {type(inputs).__name__}"
        )
    datas: list[bytes] = []
    for index, value in enumerate(inputs):
        try:
            datas.append(encode_input(target, value, limit))
        except (TypeError, ValueError, InputValidationError) as exc:
            raise item_error(index, exc) from None
    if idempotency_keys is None:
        return datas, None
    if isinstance(idempotency_keys, str | bytes) or not isinstance(idempotency_keys, Iterable):
        raise TypeError(
            "idempotency_keys must be a list of keys (or None), one per input, "
            f"not {type(idempotency_keys).__name__}"
        )
    keys = [_check_key(key, i) for i, key in enumerate(idempotency_keys)]
    if len(keys) != len(datas):
        raise ValueError(
            f"idempotency_keys has {len(keys)} items for {len(datas)} inputs; give one "
            "per input (None for an item without a key)"
        )
    return datas, keys


ChunkCall = tuple[list[str], tuple[str, ...], list[Any]]
"""One ``enqueue_runs`` call of a batch: the run ids sent, its keys, its arguments."""


def chunk_calls(
    keys: Keys,
    target: EnqueueTarget,
    datas: list[bytes],
    idempotency_keys: list[str] | None,
    options: RunOptions,
    chunk: int = BATCH_CHUNK,
    suffix: str = "",
    chunk_bytes: int = BATCH_CHUNK_BYTES,
) -> Iterator[ChunkCall]:
    """The run ids, keys and arguments of each ``enqueue_runs`` call of the batch,
    in order (at most ``chunk`` runs and ``chunk_bytes`` of inputs a call: see
    :data:`BATCH_CHUNK_BYTES`; fresh run ids, time-ordered, so runs of equal priority are claimed
    in the order given; ``suffix``: the shard's, ``shards.py``). Lazy: a chunk's ids
    are made when it is about to be sent."""
    head = [
        keys.tag,
        target.workflow,
        target.queue,
        target.max_attempts,
        options.run_at_ms,
        options.idempotency_ttl_ms,
        options.parent_run_id or "",
        "" if target.max_concurrency is None else target.max_concurrency,
        "" if target.timeout_ms is None else target.timeout_ms,
        target.priority,
    ]
    start, total = 0, len(datas)
    while start < total:
        end = _chunk_end(datas, idempotency_keys, start, chunk, chunk_bytes)
        part = datas[start:end]
        ids = [new_run_id() + suffix for _ in part]
        args = head.copy()
        if idempotency_keys is None:
            for run_id, data in zip(ids, part, strict=True):
                args += (run_id, data, "")
        else:
            for run_id, data, key in zip(ids, part, idempotency_keys[start:end], strict=True):
                args += (run_id, data, key)
        if target.fallback:  # on default for want of metadata (enqueue_runs.lua)
            args.append("1")
        yield ids, (keys.run(ids[0]),), args
        start = end


def _chunk_end(
    datas: list[bytes], keys: list[str] | None, start: int, chunk: int, chunk_bytes: int
) -> int:
    """The end of the chunk that starts at ``start``: at most ``chunk`` runs whose
    inputs and keys hold at most ``chunk_bytes`` (keys counted in characters), and
    at least one run."""
    limit = min(start + chunk, len(datas))
    end, size = start, 0
    while end < limit:
        size += len(datas[end]) + (len(keys[end]) if keys is not None else 0)
        if size > chunk_bytes and end > start:
            break
        end += 1
    return end


def many_reply(ids: list[str], reply: Any) -> list[str]:
    """The chunk's run ids after ``enqueue_runs``'s reply: ``ids`` (the ids sent), with
    the items whose idempotency key named another run replaced by that run's id."""
    for i in range(0, len(reply), 2):
        other = reply[i + 1]
        ids[int(reply[i])] = other.decode() if isinstance(other, bytes) else str(other)
    return ids


class Progress:
    """Which inputs of a batch are written, in input order, as its chunks are
    answered: for the error of a batch that fails part-way.

    A chunk's error reply ("refused and nothing was changed") is true of that
    chunk only; the chunks answered before it stay written. Read alone it sent a
    caller into enqueueing the whole batch again, and every run written before
    the failure ran twice.
    """

    def __init__(self, total: int) -> None:
        self.enqueued: list[str | None] = [None] * total
        self.at = 0  # the first input of the next chunk
        self.unknown: list[tuple[int, int]] = []  # inputs sent without a reply read

    def answered(self, ids: list[str]) -> None:
        """The next chunk was written: its run ids (``many_reply``)."""
        self.enqueued[self.at : self.at + len(ids)] = ids
        self.at += len(ids)

    def skipped(self, size: int, unknown: bool) -> None:
        """The next chunk (``size`` inputs) was refused, or (``unknown``) sent
        without a reply read: it may have been written."""
        if unknown:
            self.unknown.append((self.at, self.at + size))
        self.at += size

    def failed(
        self, exc: Exception, size: int, after: Iterable[tuple[list[str], Any]] = ()
    ) -> Exception:
        """The error to raise when the next chunk (``size`` inputs) failed for good
        with ``exc``. ``after``: the chunks sent after it whose replies were read
        (``(run ids sent, reply)``, the reply an exception when it was one). A network error
        leaves a chunk's outcome unknown; an error reply means nothing of it was
        written. The error is ``exc``'s type, with an ``enqueued`` attribute (the
        run id per input written, else None); when anything may have been written,
        a new one whose message says what."""
        first, network = self.at, isinstance(exc, NETWORK_ERRORS)
        self.skipped(size, network)
        for sent, reply in after:
            if isinstance(reply, BaseException):
                self.skipped(len(sent), isinstance(reply, NETWORK_ERRORS))
            else:
                self.answered(many_reply(sent, reply))
        written = sum(run_id is not None for run_id in self.enqueued)
        if not written and not self.unknown:
            exc.enqueued = self.enqueued  # type: ignore[attr-defined]
            return exc
        total = len(self.enqueued)
        text = (
            f"a chunk of the batch (inputs[{first}:{first + size}]) failed: {exc}; "
            f"{written:,} of the batch's {total:,} runs were enqueued (each chunk of at "
            f"most {BATCH_CHUNK} runs is atomic, the batch is not): this error's `enqueued` holds "
            "the run id of each input written, None for the others; enqueue only those "
            "again, or the whole batch with idempotency_keys"
        )
        if self.unknown:
            ranges = ", ".join(f"inputs[{a}:{b}]" for a, b in self.unknown)
            why = "sent, no reply came"
            if isinstance(exc, NotReplicatedError):  # durability: a network error too
                why = "written on the master, which no replica confirmed in time"
            text += (
                f"; {ranges} may have been enqueued too ({why}): only "
                "idempotency_keys make enqueueing them again safe"
            )
        try:
            out = type(exc)(text)
        except Exception:  # a type whose constructor takes other arguments
            out = exc
            out.add_note(text)
        out.enqueued = self.enqueued  # type: ignore[attr-defined]
        if out is not exc:
            out.__cause__ = exc
        return out
