"""The one-by-one enqueue of a plain run, packed ahead.

A run enqueued with no option (no ``run_at``, idempotency key, parent, priority,
timeout, trace context), the common call and W2 of the benchmarks, sends
``enqueue_run`` the same eleven items every time but three: its key, its id and
its input. Packing the call (RESP) with ``hiredis.pack_command`` costs about
3,200 CPU instructions plus 1,200 per item, some 16,000 a call; here the
constant items are packed once per workflow into a ``bytes`` format and a call
formats only the three that change, or joins them with the bytes around them
when the input is shorter than 1,024 bytes (``benchmarks.enqueue_instr``). The bytes
sent are the same as ``hiredis.pack_command`` of the whole call
(``tests/unit/test_packed.py``).
"""

from __future__ import annotations

from typing import Any

import hiredis

from .keys import Keys

__all__ = ["PackedClaims", "PlainEnqueues"]

#: Formats kept per :class:`PlainEnqueues` (one per workflow, queue and call
#: head seen); past this the cache is cleared: a process that enqueues runs of
#: ever new workflow names does not grow without bound.
MAX_FORMATS = 1024


def _items(values: tuple[Any, ...]) -> bytes:
    """RESP bulk strings of ``values`` as hiredis packs them, without the array
    header, with ``%`` doubled (the result is a ``bytes`` format)."""
    packed: bytes = hiredis.pack_command(values)
    return packed[packed.index(b"\r\n") + 2 :].replace(b"%", b"%%")


def _raw_items(values: tuple[Any, ...]) -> bytes:
    """RESP bulk strings of ``values`` as hiredis packs them, without the array
    header (bytes to send as they are)."""
    packed: bytes = hiredis.pack_command(values)
    return packed[packed.index(b"\r\n") + 2 :]


_BULK = b"$%d\r\n%b\r\n"

#: A claim shape's (format without a finish, format with one, bytes before the
#: token, bytes after the flags) (``PackedClaims._format``).
_Shape = tuple[bytes, bytes, bytes, bytes]

#: A plain enqueue's shape (``PlainEnqueues._format``).
_Plain = tuple[bytes, int, int, bytes, bytes, bytes, bytes, bytes]


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
        # shape -> (format, key's length before the id, id length n, the format
        # with the key's and the id's lengths for ids of n bytes written in, and
        # that call's bytes around the id, the id and the input: _Plain)
        self._formats: dict[tuple[Any, ...], _Plain] = {}

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
        i = run_id.encode()
        n = len(i)
        got = self._formats.get(shape)
        if got is None:
            got = self._format(shape, n)
        fmt, key_base, n_fixed, fixed, p0, p1, p2, p3 = got
        if n == n_fixed:  # the ids of a process have one length: no %d
            size = len(input_json)
            if size < _NHEADS:  # joined: the input's length header kept
                return b"".join((p0, i, p1, i, p2, _HEADS[size], input_json, p3))
            return fixed % (i, i, size, input_json)
        return fmt % (key_base + n, i, n, i, len(input_json), input_json)

    def _format(self, shape: tuple[Any, ...], n: int) -> _Plain:
        """The formats of ``shape``: the general one, and one with the key's and the
        id's lengths written in for ids of ``n`` bytes (formatting the two lengths
        costs about 1,500 CPU instructions a call, callgrind)."""
        workflow, queue, max_attempts, max_concurrency, head, tag = shape
        key_head = f"{tag}:run:".encode()
        before = b"*11\r\n" + _items((*head, 1))
        key = key_head.replace(b"%", b"%%") + b"%b\r\n"
        after = b"".join(
            (
                _items((workflow, queue)),
                _BULK,  # input
                _items((max_attempts, "" if max_concurrency is None else max_concurrency)),
            )
        )
        tag_item = _items((tag,))
        fmt = b"".join((before, b"$%d\r\n", key, tag_item, _BULK, after))
        fixed = b"".join(
            (before, b"$%d\r\n" % (len(key_head) + n), key, tag_item, b"$%d\r\n%%b\r\n" % n, after)
        )
        # the same call as bytes around the id (twice) and the input, to join
        p0 = b"*11\r\n" + _raw_items((*head, 1)) + b"$%d\r\n" % (len(key_head) + n) + key_head
        p1 = _CRLF + _raw_items((tag,)) + b"$%d\r\n" % n
        p2 = _CRLF + _raw_items((workflow, queue))
        limit = "" if max_concurrency is None else max_concurrency
        p3 = _CRLF + _raw_items((max_attempts, limit))
        if len(self._formats) >= MAX_FORMATS:
            self._formats.clear()
        self._formats[shape] = got = (fmt, len(key_head), n, fixed, p0, p1, p2, p3)
        return got


#: The RESP header of a bulk string of each length below 1,024 (``$<n>\r\n``):
#: a claim joins them with its items instead of formatting its lengths (``%d``).
_NHEADS = 1024
_HEADS = tuple(b"$%d\r\n" % n for n in range(_NHEADS))
_CRLF = b"\r\n"

#: ``claim_run``'s ARGV[10] packed, by woken + 2 * resend (``scripts._FLAGS``).
_FLAG_BULKS = tuple(b"$%d\r\n%b\r\n" % (len(f), f) for f in (b"", b"1", b"2", b"3"))
#: A claim with no finish: ARGV[4..8] ``'' '' '' '' 0``.
_NO_FINISH = b"$0\r\n\r\n" * 4 + b"$1\r\n0\r\n"
_DELAY_0 = b"$1\r\n0\r\n"


class PackedClaims:
    """Packed ``claim_run`` calls of a claimer's steady state, formats cached.

    A worker sends ``claim_run`` once a run with the same head (``EVALSHA sha 1``
    or ``FCALL name 1``), key, tag, lease and queue list every time; only the
    claim's token, the finish it carries (mode, run id, token, payload, delay),
    ``only_id`` and the flags change. Packing the whole call with
    ``hiredis.pack_command`` costs about 25,000 CPU instructions, most of them in
    ``sprintf`` of each item's length; here the constant items are packed once
    per shape (head, lease, queue list, its rotation) and a call formats the
    eight that change (``benchmarks.child_instr``), joined with their lengths'
    headers (:data:`_HEADS`; an item of 1,024 bytes or more is formatted). The
    bytes sent are the same as ``hiredis.pack_command`` of the whole call
    (``tests/unit/test_packed.py``).
    """

    __slots__ = ("_formats", "_last")

    def __init__(self) -> None:
        self._formats: dict[tuple[Any, ...], _Shape] = {}
        # the shape of the last call, found by identity first (a worker passes
        # the same queue tuple and the same head name each time)
        self._last: tuple[tuple[str, ...] | None, int, int, str, _Shape]
        self._last = (None, -1, -1, "", (b"", b"", b"", b""))

    def pack(
        self,
        head: tuple[str, str],
        keys: Keys,
        tag: str,
        lease_ms: int,
        queues: tuple[str, ...],
        turn: int,
        token: str,
        finish: tuple[Any, ...] | None,
        only_id: str,
        flags: int,
    ) -> bytes | None:
        """The call (``Scripts.claim``'s arguments), ARGV[11..] being ``n, *queues``
        rotated by ``turn`` (< n), ``flags`` ARGV[10] as an int. None when a value
        must be packed by hiredis itself (a lease or a delay not an int, a payload
        neither bytes nor str)."""
        if type(lease_ms) is not int:  # a shape is found by equality: 5000 == 5000.0
            return None
        last = self._last
        if last[0] is queues and last[1] == turn and last[2] == lease_ms and last[3] is head[1]:
            fmts = last[4]
        else:
            shape = (head, lease_ms, queues, turn)
            got = self._formats.get(shape)
            if got is None:
                key = keys.q_ready(queues[0]) if queues else keys.queues  # Scripts.claim's
                got = self._format(head, key, tag, lease_ms, queues, turn)
                if len(self._formats) >= MAX_FORMATS:
                    self._formats.clear()
                self._formats[shape] = got
            fmts = got
            self._last = (queues, turn, lease_ms, head[1], got)
        t = token.encode()
        o = only_id.encode()
        heads = _HEADS
        if finish is None:
            try:
                return b"".join(
                    (fmts[2], heads[len(t)], t, _CRLF, _NO_FINISH, heads[len(o)], o, _CRLF,
                     _FLAG_BULKS[flags], fmts[3])
                )  # fmt: skip
            except IndexError:  # an item of 1,024 bytes or more
                return fmts[0] % (len(t), t, len(o), o, _FLAG_BULKS[flags])
        mode, run_id, held, payload, delay = finish
        if type(payload) is not bytes:
            if type(payload) is not str:
                return None
            payload = payload.encode()
        if type(delay) is not int:
            return None
        m = mode.encode()
        r = run_id.encode()
        h = held.encode()
        d = _DELAY_0 if delay == 0 else _items((delay,)).replace(b"%%", b"%")  # a retry's
        try:
            return b"".join(
                (fmts[2], heads[len(t)], t, _CRLF, heads[len(m)], m, _CRLF, heads[len(r)], r,
                 _CRLF, heads[len(h)], h, _CRLF, heads[len(payload)], payload, _CRLF, d,
                 heads[len(o)], o, _CRLF, _FLAG_BULKS[flags], fmts[3])
            )  # fmt: skip
        except IndexError:  # an item of 1,024 bytes or more (a big output)
            pass
        return fmts[1] % (
            len(t), t, len(m), m, len(r), r, len(h), h, len(payload), payload, d,
            len(o), o, _FLAG_BULKS[flags],
        )  # fmt: skip

    @staticmethod
    def _format(
        head: tuple[str, str], key: str, tag: str, lease_ms: int, queues: tuple[str, ...], turn: int
    ) -> _Shape:
        """The formats of one shape (no finish, with a finish), and the bytes
        before the token and after the flags that a call joins its items with."""
        if turn:
            queues = queues[turn:] + queues[:turn]
        array = b"*%d\r\n" % (15 + len(queues))
        fixed = (*head, 1, key, tag, lease_ms)
        before = array + _items(fixed)
        tail = (len(queues), *queues)
        after = b"$%d\r\n%b\r\n%b" + _items(tail)  # only_id, flags, queues
        return (
            before + _BULK + _NO_FINISH + after,
            before + _BULK * 5 + b"%b" + after,  # token, finish (delay packed), ...
            array + _raw_items(fixed),
            _raw_items(tail),
        )
