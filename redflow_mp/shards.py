"""The ``shards`` setting: how one prefix's keyspace is split over several hash tags.

Pure math (no connections): which hash tag each shard uses, which shard a
workflow or a run lives in, and how a run id names its shard. The clients wire
it to connections (``runs.py``: :class:`Shard`, ``aio.py``).

- **Tags.** Shard 0's tag is ``{<prefix>}``: with ``shards = 1`` the keyspace is
  today's byte for byte. Shard ``k > 0`` has the tag ``{<prefix>~<s>}``, ``s``
  the smallest non-negative integer whose CRC16 slot lies in the ``k``-th of
  ``N`` equal windows ``[j * 16384 // N, (j + 1) * 16384 // N)`` of the slot
  ring (aligned at slot 0, one slot of margin at each edge) numbered from the
  window ``w0`` that holds the slot of ``<prefix>``: shard ``k`` takes window
  ``(w0 + k) % N``. A cluster of ``N`` masters whose slots were split evenly
  (``redis-cli --cluster create``) thus serves the ``N`` shards from ``N``
  different masters (shard 0's own slot is fixed by the prefix: if it lies within
  a slot of a window's edge it may share a master with a neighbour).
  (The first design counted windows from shard 0's slot rather than from slot 0;
  then each window straddles two masters' ranges and only about a third of
  prefixes got 3 distinct masters out of 3.)
  ``~`` is refused in a prefix (``keys.validate_prefix``), so no other app's
  prefix can name one of these tags.
- **Placement.** Every key named by a workflow or a run lives in the workflow's
  shard, ``zlib.crc32(name) % N``; the per-shard indexes (``runs:created``,
  ``runs:status:*``, ``leases``, ``timers``, ``due-queues``, ``queues``,
  ``parked``, the queues' ``ready``/``scheduled``/``bell``) exist once per
  shard; the singletons (``meta``, ``lock:cron``, ``supervisors``,
  ``supervisor:<id>``) and the ``workflows`` set stay in shard 0.
- **Run ids.** With ``N > 1`` a run id is the 26-character ULID followed by
  ``~<k>`` (its shard); with ``N = 1`` ids have no suffix. An id without a
  suffix is read as shard 0.
"""

from __future__ import annotations

import functools
import zlib

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = [
    "MAX_SHARDS",
    "SHARD_SEPARATOR",
    "check_shards",
    "run_id_for_shard",
    "shard_index_of_run",
    "shard_index_of_workflow",
    "shard_tag",
    "shard_tags",
    "slot_of_tag",
    "window_bounds",
    "window_of_slot",
]

#: Most shards a prefix may be split into.
MAX_SHARDS = 1024
#: Separates the prefix from a shard's salt in its tag, and a run id from its shard.
SHARD_SEPARATOR = "~"
_SLOTS = REDIS_CLUSTER_HASH_SLOTS  # 16384


def check_shards(shards: object) -> int:
    """``shards`` if it is an int from 1 to :data:`MAX_SHARDS`, else a clear error."""
    if isinstance(shards, bool) or not isinstance(shards, int):
        raise TypeError(f"shards must be an int from 1 to {MAX_SHARDS}, not {shards!r}")
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be from 1 to {MAX_SHARDS}, not {shards}")
    return shards


def _slot(text: str) -> int:
    return int(key_slot(text.encode("utf-8")))


def slot_of_tag(tag: str) -> int:
    """The cluster slot of every key carrying ``tag`` (``{...}``, braces included)."""
    assert tag.startswith("{") and tag.endswith("}"), tag
    return _slot(tag[1:-1])


def window_of_slot(slot: int, shards: int) -> int:
    """The window (of ``shards`` equal windows of the slot ring, aligned at slot 0)
    that holds ``slot``."""
    j = slot * shards // _SLOTS
    while (j + 1) * _SLOTS // shards <= slot:
        j += 1
    while j * _SLOTS // shards > slot:
        j -= 1
    return j


def window_bounds(window: int, shards: int) -> tuple[int, int]:
    """The slots a shard's tag may take in ``window``: inclusive bounds, one slot in
    from each edge of the window (so an even split that rounds its boundaries the
    other way, as ``redis-cli --cluster create`` may, still serves them from the
    window's master)."""
    lo = window * _SLOTS // shards
    hi = (window + 1) * _SLOTS // shards - 1
    if hi - lo >= 3:
        lo, hi = lo + 1, hi - 1
    return lo, hi


@functools.lru_cache(maxsize=64)
def shard_tags(prefix: str, shards: int) -> tuple[str, ...]:
    """The hash tags (braces included) of the ``shards`` shards of ``prefix``."""
    check_shards(shards)
    w0 = window_of_slot(_slot(prefix), shards)
    tags = ["{" + prefix + "}"]
    for k in range(1, shards):
        lo, hi = window_bounds((w0 + k) % shards, shards)
        salt = 0
        while not lo <= _slot(f"{prefix}{SHARD_SEPARATOR}{salt}") <= hi:
            salt += 1
        tags.append("{" + f"{prefix}{SHARD_SEPARATOR}{salt}" + "}")
    return tuple(tags)


def shard_tag(prefix: str, shards: int, index: int) -> str:
    """The hash tag of shard ``index`` of ``prefix`` split in ``shards``."""
    return shard_tags(prefix, shards)[index]


def shard_index_of_workflow(name: str, shards: int) -> int:
    """The shard every key of workflow ``name`` (and of its runs) lives in."""
    if shards == 1:
        return 0
    return zlib.crc32(name.encode("utf-8")) % shards


def run_id_for_shard(run_id: str, index: int, shards: int) -> str:
    """``run_id`` (a bare ULID) as the id of a run in shard ``index``: unchanged with
    one shard, else ``<ulid>~<index>``."""
    if shards == 1:
        return run_id
    return f"{run_id}{SHARD_SEPARATOR}{index}"


def shard_index_of_run(run_id: str, shards: int) -> int:
    """The shard a run id names: its ``~<k>`` suffix, 0 without one.

    An id naming shard ``k`` >= ``shards`` lives in shard ``k % shards``: a run
    keeps its id when ``redflow migrate --shards`` moves it to fewer shards.
    A suffix that is not a decimal shard number (no sign, no leading zero,
    below ``MAX_SHARDS``) raises ``ValueError``.
    """
    sep = run_id.rfind(SHARD_SEPARATOR)
    if sep < 0:
        return 0
    suffix = run_id[sep + 1 :]
    if not suffix.isascii() or not suffix.isdigit() or (len(suffix) > 1 and suffix[0] == "0"):
        raise ValueError(
            f"malformed run id {run_id!r}: after '~' a run id carries its shard number (<ulid>~<k>)"
        )
    index = int(suffix)
    if index >= MAX_SHARDS:
        raise ValueError(
            f"run id {run_id!r} names shard {index}: no prefix has more than {MAX_SHARDS} shards"
        )
    return index % shards
