"""The one-by-one enqueue of a plain run, packed ahead.

A run enqueued with no option (no ``run_at``, idempotency key, parent, priority,
timeout, trace context), the common call and W2 of the benchmarks, sends
``enqueue_run`` the same eleven items every time but three: its key, its id and
its input. Packing the call (RESP) with ``hiredis.pack_command`` costs about
3,200 CPU instructions plus 1,200 per item, some 16,000 a call; here the
constant items are packed once per workflow into a ``bytes`` format and a call
formats only the three that change (``benchmarks.enqueue_instr``). The bytes
sent are the same as ``hiredis.pack_command`` of the whole call
(``tests/unit/test_packed.py``).
"""

from __future__ import annotations

from typing import Any

import hiredis

__all__ = ["PlainEnqueues"]

#: Formats kept per :class:`PlainEnqueues` (one per workflow, queue and call
#: head seen); past this the cache is cleared: a process that enqueues runs of
#: ever new workflow names does not grow without bound.
MAX_FORMATS = 1024


def _items(values: tuple[Any, ...]) -> bytes:
    """RESP bulk strings of ``values`` as hiredis packs them, without the array
    header, with ``%`` doubled (the result is a ``bytes`` format)."""
    packed: bytes = hiredis.pack_command(values)
    return packed[packed.index(b"\r\n") + 2 :].replace(b"%", b"%%")


_BULK = b"$%d\r\n%b\r\n"


class PlainEnqueues:
    """Packed ``enqueue_run`` calls of plain runs, formats cached per workflow.

    The argument order is ``enqueue_run``'s (``ScriptSet.enqueue_call`` without
    its optional tail): head (``EVALSHA sha 1`` or ``FCALL name 1``), the run's
    key, tag, run id, workflow, queue, input, max attempts, max concurrency. A
    format is found by the workflow's shape (name, queue, attempts, concurrency,
    head, tag) and fills in the key's and the id's digits and the input.
    """

    __slots__ = ("_formats",)

    def __init__(self) -> None:
        self._formats: dict[tuple[Any, ...], tuple[bytes, int]] = {}

    def pack(
        self,
        head: tuple[str, str],
        tag: str,
        workflow: str,
        queue: str,
        max_attempts: int,
        max_concurrency: int | None,
        run_id: str,
        input_json: bytes,
    ) -> bytes:
        """The call of run ``run_id`` (its key, ``<tag>:run:<id>``, is written by the
        format: no key string is made per call)."""
        shape = (workflow, queue, max_attempts, max_concurrency, head, tag)
        got = self._formats.get(shape)
        if got is None:
            got = self._format(shape)
        fmt, key_base = got
        i = run_id.encode()
        n = len(i)
        return fmt % (key_base + n, i, n, i, len(input_json), input_json)

    def _format(self, shape: tuple[Any, ...]) -> tuple[bytes, int]:
        workflow, queue, max_attempts, max_concurrency, head, tag = shape
        key_head = f"{tag}:run:".encode()
        fmt = b"".join(
            (
                b"*11\r\n",
                _items((*head, 1)),
                b"$%d\r\n",  # key: <tag>:run:<id>
                key_head.replace(b"%", b"%%"),
                b"%b\r\n",
                _items((tag,)),
                _BULK,  # run id
                _items((workflow, queue)),
                _BULK,  # input
                _items((max_attempts, "" if max_concurrency is None else max_concurrency)),
            )
        )
        if len(self._formats) >= MAX_FORMATS:
            self._formats.clear()
        self._formats[shape] = got = (fmt, len(key_head))
        return got
