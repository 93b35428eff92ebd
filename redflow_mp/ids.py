"""Run ids and lease tokens (pure apart from a per-process monotonic counter).

Run ids are 26-character, time-ordered, Crockford base32 strings (a ULID
layout: 48 bits of milliseconds, 80 random bits), so ``runs:created`` ties and
log lines sort sensibly and two hosts never collide. Within one process ids are
monotonic (the ULID "monotonic" variant): an id made in the same millisecond as
the previous one takes the previous random part plus one. ``runs:created``
orders ties by member, so without this, runs enqueued in one millisecond would
be listed in random order instead of newest first. Lease tokens are random;
they only need to be unguessable and unique per claim.

Fork safety: the monotonic state is reset in a forked child (``os.register_at_fork``),
so parent and child never continue the same sequence and collide.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_run_id", "new_token"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_LIMIT = 1 << _RANDOM_BITS
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 10 bits -> 2 digits
_SHIFTS = tuple(range(120, -1, -10))


class _Monotonic:
    __slots__ = ("last_ms", "last_rand", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_ms = -1
        self.last_rand = 0

    def next(self) -> tuple[int, int]:
        with self.lock:
            ms = int(time.time() * 1000)
            if ms <= self.last_ms:
                ms = self.last_ms
                rand = self.last_rand + 1
                if rand >= _RANDOM_LIMIT:  # 2**80 ids in one ms: borrow the next ms
                    ms += 1
                    rand = _random()
            else:
                rand = _random()
            self.last_ms, self.last_rand = ms, rand
            return ms, rand


def _random() -> int:
    return int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")


_state = _Monotonic()


def _reset_after_fork() -> None:
    global _state
    _state = _Monotonic()


os.register_at_fork(after_in_child=_reset_after_fork)


def new_run_id(now_ms: int | None = None) -> str:
    """A new time-ordered run id (monotonic within the process unless ``now_ms`` is given)."""
    if now_ms is None:
        ms, rand = _state.next()
    else:
        ms, rand = now_ms, _random()
    value = (ms << _RANDOM_BITS) | rand
    # 26 base32 digits = 13 pairs of 10 bits, most significant first.
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def new_token() -> str:
    """A new random lease token."""
    return os.urandom(12).hex()
