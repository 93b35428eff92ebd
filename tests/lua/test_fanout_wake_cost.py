"""A parent suspended on a large fan-out (``run_workflows`` of 200,000 children)
leaves its wait with most of its awaited set (``run:<id>:awaits``) still there
when a child fails, its deadline passes or it is canceled. That set goes with
the wake or the finish; freed by DEL in the script (a child's finish, the
promoter's timer call, a cancel) it held Redis ~44 ms at 200,000 members. It
goes by UNLINK now, freed off the main thread; the parent is woken (or
canceled) as before."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client
from redflow_mp.codec import RunWait
from redflow_mp.ids import new_token
from tests.helpers import cpu_ms_of, wait_until

pytestmark = pytest.mark.timeout(240)  # sets of 200,000: minutes on a loaded machine

N = 200_000

# The members suspend_run.lua adds (SADD of each awaited child), in short calls.
_FILL = """
local ids = {}
for i = tonumber(ARGV[2]), tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1 do
  ids[#ids + 1] = ARGV[1] .. i
  if #ids == 1000 then
    redis.call('SADD', KEYS[1], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then redis.call('SADD', KEYS[1], unpack(ids)) end
return 1
"""


def _fill(raw: redis.Redis, key: str) -> None:
    sha = raw.script_load(_FILL)
    for first in range(1, N + 1, 10_000):
        raw.evalsha(sha, 1, key, "01J0000000000000000000K", first, min(10_000, N + 1 - first))


def _freed(raw: redis.Redis) -> None:
    """Wait until the server's lazy-free thread has nothing pending (an earlier
    case's set of 200,000 freed by UNLINK): on a loaded machine (CI, 4 workers on
    2 cores) it was still freeing when the next case measured, and the main
    thread's allocations, contending with it, read 5-6 ms of main-thread CPU for
    a call that costs 0.2-0.3 ms alone (Valkey 9)."""
    wait_until(
        lambda: int(raw.info("memory").get("lazyfree_pending_objects", 0)) == 0,
        60,
        message="the lazy-free thread to finish",
    )


def _unlinks(raw: redis.Redis) -> tuple[int, int]:
    """Calls of UNLINK and DEL so far (``INFO commandstats``, scripts' included)."""
    stats = raw.info("commandstats")
    return (
        int(stats.get("cmdstat_unlink", {}).get("calls", 0)),
        int(stats.get("cmdstat_del", {}).get("calls", 0)),
    )


def _claim(client: Client, queue: str) -> tuple[str, str]:
    tok = new_token()
    _, got = client.scripts.claim((queue,), 600_000, tok)
    assert got is not None
    return got.id, tok


def _del_cpu_ms(raw: redis.Redis, client: Client) -> float:
    """Calibration: the Redis CPU time of a DEL of such a set on this server now
    (the least of three), freed on the main thread: Valkey 8+ frees a DEL's value
    lazily by default (lazyfree-lazy-user-del yes), where the calibration read
    0.0 ms; Redis does not."""
    key = f"{client.keys.tag}:calibration"
    lazy = str(raw.config_get("lazyfree-lazy-user-del").get("lazyfree-lazy-user-del", "no"))
    raw.config_set("lazyfree-lazy-user-del", "no")
    costs = []
    try:
        for _ in range(3):
            _fill(raw, key)
            _freed(raw)
            costs.append(cpu_ms_of(raw, lambda: raw.delete(key)))
    finally:
        raw.config_set("lazyfree-lazy-user-del", lazy)
    return min(costs)


@pytest.mark.parametrize("how", ["child-failed", "deadline", "canceled"])
def test_the_awaited_set_of_a_large_fan_out_goes_off_the_main_thread(
    raw: redis.Redis, client: Client, enq: Callable[..., str], how: str
) -> None:
    parent = enq(workflow="p", queue="pq")
    pid, ptok = _claim(client, "pq")
    assert pid == parent
    kid = enq(workflow="k", queue="kq", parent=parent)
    deadline = client.server_time_ms() + 3_600_000
    wait = RunWait(steps=["fan"], kinds=["children"], children=[kid], wake_at=deadline)
    assert client.scripts.suspend(parent, ptok, wait) == "suspended"
    awaits = client.keys.run_awaits(parent)
    _fill(raw, awaits)  # the fan-out's other children, unfinished
    assert raw.scard(awaits) == N + 1
    one = _del_cpu_ms(raw, client)
    if how == "child-failed":
        kid_id, ktok = _claim(client, "kq")
        assert kid_id == kid

        def act() -> object:
            return client.scripts.finalize(kid, ktok, "failed", b'{"type":"E"}')

        expected = b"queued"
    elif how == "deadline":
        raw.zadd(client.keys.timers, {parent: 1})  # due

        def act() -> object:
            return client.scripts.wake_timers(100)

        expected = b"queued"
    else:

        def act() -> object:
            return client.scripts.cancel(parent, "")

        expected = b"canceled"
    _freed(raw)
    unlink0, del0 = _unlinks(raw)
    cpu = cpu_ms_of(raw, act)
    unlink1, del1 = _unlinks(raw)
    assert raw.hget(client.keys.run(parent), "status") == expected
    assert not raw.exists(awaits)
    # Before: the call freed the set itself by DEL (about `one` of CPU). The
    # commands say it for certain; the CPU bound has room for the main thread's
    # allocations contending with the lazy-free thread that starts freeing the
    # set during the call (2.9 ms of 11.3 on a loaded machine, Valkey 9).
    assert unlink1 > unlink0, "the call unlinked nothing"
    assert del1 == del0, f"the call used DEL {del1 - del0} time(s)"
    assert cpu < one / 2, f"the call used {cpu:.1f} ms of Redis CPU; a DEL of the set: {one:.1f} ms"
