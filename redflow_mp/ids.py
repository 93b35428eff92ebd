"""Run ids and lease tokens (pure apart from a per-process monotonic counter).

Run ids are 26-character, time-ordered, Crockford base32 strings (a ULID
layout: 48 bits of milliseconds, 80 random bits), so ``runs:created`` ties and
log lines sort sensibly and two hosts never collide. Within one process ids are
monotonic (the ULID "monotonic" variant): an id made in the same millisecond as
the previous one takes the previous random part plus one. ``runs:created``
orders ties by member, so without this, runs enqueued in one millisecond would
be listed in random order instead of newest first. Lease tokens only need to be
unique per claim (they fence a lease; whoever could use one can read it in
Redis): 64 random bits drawn once per process, then a counter (32 bits; past
it, new random bits), with no ``os.urandom`` system call per claim.

Fork safety: the monotonic state and the token prefix are reset in a forked child
(``os.register_at_fork``), so parent and child never continue the same sequence
and collide.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

__all__ = ["new_run_id", "new_token"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_LIMIT = 1 << _RANDOM_BITS
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 10 bits -> 2 digits
# A random byte -> a random digit (its low 5 bits; 256 is a multiple of 32, so
# each digit is uniform): as written (_ALPHABET), and as int(..., 32) reads it.
_TO_DIGITS = bytes(_ALPHABET.encode()[b & 31] for b in range(256))
_TO_INT_DIGITS = bytes(b"0123456789abcdefghijklmnopqrstuv"[b & 31] for b in range(256))


class _Monotonic:
    """The last id's ms and random part, and its digits: the next id of the same ms
    (random part + 1) rewrites only the last pair of digits, unless it carries.

    An id written whole costs about 13,000 CPU instructions (new_run_id was about a
    tenth of a one-by-one enqueue's client work; benchmarks.enqueue_instr); a
    client enqueuing one by one makes several ids per ms."""

    __slots__ = ("digits", "last_ms", "last_rand", "lock", "ms_head", "ms_high")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = -1
        self.last_rand = 0
        self.digits = ""
        self.ms_high = -1  # ms >> 10 of ms_head
        self.ms_head = ""  # the first 8 digits of an id of that ms >> 10

    def next_id(self) -> str:
        # acquire/release rather than ``with``: about 1,100 CPU instructions fewer
        self.lock.acquire()
        try:
            ms = time.time_ns() // 1_000_000
            if ms <= self.last_ms:
                ms = self.last_ms
                rand = self.last_rand + 1
                low = rand & 1023
                if low:  # no carry out of the last pair: the same digits but those
                    self.last_rand = rand
                    self.digits = digits = self.digits[:-2] + _PAIRS[low]
                    return digits
                if rand >= _RANDOM_LIMIT:  # 2**80 ids in one ms: borrow the next ms
                    ms += 1
                    rand = _random()
            else:
                # A new ms (each call, for a caller slower than one a ms): the random
                # part drawn as its 16 digits (os.urandom's bytes mapped to digits in
                # C), and the time's first 8 digits kept for 1,024 ms: about 3,000 CPU
                # instructions fewer than _digits (benchmarks.enqueue_instr).
                raw = os.urandom(_RANDOM_BITS // 5)
                if ms >> 10 != self.ms_high:
                    self.ms_high, self.ms_head = ms >> 10, _digits(ms, 0)[:8]
                self.last_ms, self.last_rand = ms, int(raw.translate(_TO_INT_DIGITS), 32)
                self.digits = digits = "".join(
                    (self.ms_head, _PAIRS[ms & 1023], raw.translate(_TO_DIGITS).decode())
                )
                return digits
            self.last_ms, self.last_rand = ms, rand
            self.digits = digits = _digits(ms, rand)
            return digits
        finally:
            self.lock.release()


def _random() -> int:
    return int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")


_state = _Monotonic()


class _Tokens:
    """A process's token prefix (64 random bits, hex) and the counter after it."""

    __slots__ = ("count", "prefix")

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = itertools.count()  # next() is atomic under the GIL: no lock


_TOKEN_LIMIT = 1 << 32  # counter values after one prefix (8 hex digits)
_tokens = _Tokens()
_tokens_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _state, _tokens
    _state = _Monotonic()
    _tokens = _Tokens()


os.register_at_fork(after_in_child=_reset_after_fork)


def new_run_id(now_ms: int | None = None) -> str:
    """A new time-ordered run id (monotonic within the process unless ``now_ms`` is given)."""
    if now_ms is None:
        return _state.next_id()
    return _digits(now_ms, _random())


_M30 = (1 << 30) - 1


def _digits(ms: int, rand: int) -> str:
    """The 26 base32 digits of ``(ms << 80) | rand``: 13 pairs of 10 bits, most
    significant first (5 of ms, 8 of the random part), over parts of at most 30
    bits (CPython's one-digit ints)."""
    p = _PAIRS
    m1, m0 = (ms >> 30) & 1048575, ms & _M30
    r2, r1, r0 = rand >> 60, (rand >> 30) & _M30, rand & _M30
    return "".join(
        (
            p[m1 >> 10],
            p[m1 & 1023],
            p[m0 >> 20],
            p[(m0 >> 10) & 1023],
            p[m0 & 1023],
            p[(r2 >> 10) & 1023],
            p[r2 & 1023],
            p[r1 >> 20],
            p[(r1 >> 10) & 1023],
            p[r1 & 1023],
            p[r0 >> 20],
            p[(r0 >> 10) & 1023],
            p[r0 & 1023],
        )
    )


def new_token() -> str:
    """A new lease token, unique across processes and hosts: 24 hex digits, 16 of
    random bits drawn once per process (and again every 2**32 tokens), 8 of a
    counter."""
    tokens = _tokens
    n = next(tokens.count)
    if n >= _TOKEN_LIMIT:
        _new_prefix(tokens)
        return new_token()
    return f"{tokens.prefix}{n:08x}"


def _new_prefix(spent: _Tokens) -> None:
    """The counter after ``spent``'s prefix ran out: draw another (once, whichever
    thread comes first)."""
    global _tokens
    with _tokens_lock:
        if _tokens is spent:
            _tokens = _Tokens()
