"""Run ids and lease tokens (pure).

Run ids are 26-character, time-ordered, Crockford base32 strings (a ULID
layout: 48 bits of milliseconds, 80 random bits), so ``runs:created`` ties and
log lines sort sensibly and two hosts never collide. Lease tokens are random;
they only need to be unguessable and unique per claim.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_run_id", "new_token"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_run_id(now_ms: int | None = None) -> str:
    """A new time-ordered run id."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_token() -> str:
    """A new random lease token."""
    return os.urandom(12).hex()
