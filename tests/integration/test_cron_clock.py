"""Cron entries after the Redis clock went back (NTP setting a clock that ran
ahead right, a failover to a server whose clock is behind): an entry that fired
while the clock was ahead holds a next fire time computed from that clock, and
fired nothing until the real time caught up with it."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp import Client, Context, Cron, Registry, define_workflow
from redflow_mp.cron import cron_id_for, next_fire_ms
from redflow_mp.keys import cron_key
from supervisor.duties.cron import CronDuty
from supervisor.duties.leader import LeaderDuty
from tests.helpers import cpu_ms_of, run_keys, server_cpu_ms

pytestmark = pytest.mark.timeout(60)

EVERY_MINUTE = Cron("* * * * *", input={"tick": True})
DAY_MS = 86_400_000


def _setup(client: Client, registry: Registry, cron: Cron = EVERY_MINUTE) -> str:
    @define_workflow("ticker", cron=[cron], registry=registry, max_concurrency=10)
    def ticker(ctx: Context[Any]) -> Any:
        return None

    client.sync_registry(registry, app="cron-clock-test")
    return cron_id_for("ticker", cron)


def _ahead(raw: redis.Redis, client: Client, cid: str, expression: str, by_ms: int) -> int:
    """cron:next as a fire at a clock ``by_ms`` ahead left it; returns that score."""
    score = next_fire_ms(expression, "UTC", client.server_time_ms() + by_ms)
    raw.zadd(client.keys.cron_next, {cid: score})
    return score


def _next(raw: redis.Redis, client: Client, cid: str) -> int:
    score = raw.zscore(client.keys.cron_next, cid)
    assert score is not None
    return int(score)


def _leading(client: Client) -> tuple[LeaderDuty, CronDuty]:
    leader = LeaderDuty(client, 10_000)
    leader.tick(0.0)
    assert leader.is_leader
    return leader, CronDuty(client, leader)


def test_a_new_leader_moves_back_a_fire_time_set_by_a_clock_that_was_ahead(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A per-minute cron whose last fire ran at a Redis clock a day ahead: its next
    fire time stayed a day away after the clock was set right, and the leader
    (and every one after it) fired nothing for a day. Now the first tick of a
    new leader moves it back to the schedule's next fire time."""
    cid = _setup(client, registry)
    skewed = _ahead(raw, client, cid, EVERY_MINUTE.expression, DAY_MS)
    _, duty = _leading(client)
    duty.tick(100.0)
    now = client.server_time_ms()
    assert _next(raw, client, cid) <= now + 60_000, (
        f"cron:next is {(_next(raw, client, cid) - now) / 1000:.0f} s ahead; "
        f"the schedule fires every minute (stored {skewed})"
    )
    assert duty.rewound == 1


def test_a_leader_moves_fire_times_back_when_the_redis_clock_goes_back(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The same, on a leader that stays the leader: its ticks compare the Redis
    clock with its own monotonic one; a Redis clock that ran a day less than it
    (here: the monotonic time handed to the tick jumps a day) means the clock
    went back, and the entries are looked at again."""
    cid = _setup(client, registry)
    _, duty = _leading(client)
    duty.tick(100.0)  # the pass of a new leader: nothing to move
    duty.tick(101.0)
    _ahead(raw, client, cid, EVERY_MINUTE.expression, DAY_MS)
    duty.tick(102.0)  # the clocks agree: nothing looked at
    assert _next(raw, client, cid) > client.server_time_ms() + DAY_MS - 60_000
    duty.tick(102.0 + DAY_MS / 1000)  # a day on our clock, a second on Redis's
    assert _next(raw, client, cid) <= client.server_time_ms() + 60_000
    assert duty.rewound == 1


def test_a_fire_time_on_schedule_is_left_where_it_is(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    cid = _setup(client, registry)
    before = _next(raw, client, cid)
    _, duty = _leading(client)
    duty.tick(100.0)
    assert _next(raw, client, cid) == before
    assert duty.rewound == 0


def test_a_fire_time_already_fired_is_not_fired_again(raw: redis.Redis, client: Client) -> None:
    """A daily cron that fired its next fire time F while the clock was a day
    ahead: its entry holds F + 1 day, and the schedule's next fire time from now
    is F itself. Moved back to F, it would fire F a second time (its run's
    idempotency key long expired): it stays."""
    cid = "daily:x"
    now = client.server_time_ms()
    fire = next_fire_ms("0 0 * * *", "UTC", now)
    raw.set(client.keys.lock_cron, "token", px=10_000)
    raw.hset(client.keys.run("r1"), mapping={"idempotencyKey": cron_key(cid, fire)})
    raw.hset(client.keys.tag + ":cron:last", cid, "r1")
    raw.zadd(client.keys.cron_next, {cid: fire + DAY_MS})
    assert client.scripts.rewind_crons("token", [(cid, fire)]) == []
    assert _next(raw, client, cid) == fire + DAY_MS
    assert client.scripts.rewind_crons("other", [(cid, fire)]) is None  # not the leader
    raw.hdel(client.keys.tag + ":cron:last", cid)
    assert client.scripts.rewind_crons("token", [(cid, fire)]) == [cid]
    assert _next(raw, client, cid) == fire


def test_a_cron_that_fired_while_the_clock_was_ahead_is_moved_back(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The case the rewind is for, as a fire leaves it: a per-minute cron that
    fired at a Redis clock a day ahead holds, besides its next fire time, a latest
    run (cron:last) created at that clock, whose idempotency key ends with a fire
    time a day ahead. Every fire time of its schedule from the real time on lies
    before that one, and none of them was fired (the fires while the clock was
    ahead were a day later): the entry must move back, not wait a day."""
    cid = _setup(client, registry)
    now = client.server_time_ms()
    fired = next_fire_ms(EVERY_MINUTE.expression, "UTC", now + DAY_MS)  # at the clock ahead
    raw.hset(
        client.keys.run("ahead1"),
        mapping={
            "idempotencyKey": cron_key(cid, fired),
            "createdAt": fired + 3,
            "workflow": "ticker",
        },
    )
    raw.zadd(client.keys.workflow_runs("ticker"), {"ahead1": fired + 3})
    raw.hset(client.keys.tag + ":cron:last", cid, "ahead1")
    raw.zadd(client.keys.cron_next, {cid: fired + 60_000})
    _, duty = _leading(client)
    duty.tick(100.0)
    now = client.server_time_ms()
    assert _next(raw, client, cid) <= now + 60_000, (
        f"cron:next is {(_next(raw, client, cid) - now) / 1000:.0f} s ahead; its latest run "
        "fired at the clock that was ahead, no fire time from now on was fired"
    )
    assert duty.rewound == 1


def test_the_stale_fire_at_the_jump_does_not_keep_the_entry_ahead(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The fires at a clock that jumped a day ahead begin with the fire time the
    entry was due at when it jumped (minutes ago, before now), then go on from
    the clock ahead. The oldest run created at that clock is that stale one's:
    read as "the fires while it was ahead began here", the fire times from now
    on counted as fired, and the entry stayed silent for the day."""
    cid = _setup(client, registry)
    now = client.server_time_ms()
    stale = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 300_000)
    ahead = now + DAY_MS
    later = next_fire_ms(EVERY_MINUTE.expression, "UTC", ahead)
    for k, (fire, created) in enumerate([(stale, ahead), (later, later + 3)]):
        raw.hset(
            client.keys.run(f"ahead{k}"),
            mapping={"idempotencyKey": cron_key(cid, fire), "createdAt": created},
        )
        raw.zadd(client.keys.workflow_runs("ticker"), {f"ahead{k}": created})
    raw.hset(client.keys.tag + ":cron:last", cid, "ahead1")
    raw.zadd(client.keys.cron_next, {cid: later + 60_000})
    _, duty = _leading(client)
    duty.tick(100.0)
    now = client.server_time_ms()
    # before: assert 1796710980000 <= (1796624465654 + 60000)
    assert _next(raw, client, cid) <= now + 60_000
    assert duty.rewound == 1


def test_a_fire_time_fired_while_the_clock_was_ahead_is_still_not_fired_again(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A clock only minutes ahead: the fires at that clock covered the schedule's
    next fire times from the real time on; the entry stays where it is."""
    cid = _setup(client, registry)
    now = client.server_time_ms()
    first = next_fire_ms(EVERY_MINUTE.expression, "UTC", now)  # fired at a clock 5 min ahead
    for k in range(6):
        fire = first + k * 60_000
        raw.hset(
            client.keys.run(f"ahead{k}"),
            mapping={"idempotencyKey": cron_key(cid, fire), "createdAt": fire + 3},
        )
        raw.zadd(client.keys.workflow_runs("ticker"), {f"ahead{k}": fire + 3})
    raw.hset(client.keys.tag + ":cron:last", cid, "ahead5")
    raw.zadd(client.keys.cron_next, {cid: first + 6 * 60_000})
    _, duty = _leading(client)
    duty.tick(100.0)
    assert _next(raw, client, cid) == first + 6 * 60_000
    assert duty.rewound == 0


def test_a_fire_time_that_passed_while_the_page_was_read_is_still_moved_back(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The rewind computes each entry's first fire time after the server time it
    read, then calls the script; for an every-second cron that time has often
    passed when the script runs (a loaded leader, a slow page). The script left
    such an entry where the clock that was ahead put it, and nothing looked again
    until the next leader change or jump: the cron stayed silent (a flaky
    ``test_cron_leader`` run showed it). A fire time not fired yet is moved back
    even when it passed meanwhile: the tick fires it at once."""
    cid = _setup(client, registry)
    _ahead(raw, client, cid, EVERY_MINUTE.expression, DAY_MS)
    leader, duty = _leading(client)
    now = client.server_time_ms()
    passed = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 60_000)
    assert passed <= now
    moved = client.scripts.rewind_crons(leader.token, [(cid, passed, "ticker")])
    # before: assert [] == ['<cron id>']
    assert moved == [cid]
    assert _next(raw, client, cid) == passed
    duty.tick(100.0)
    assert [r.workflow for r in client.list_runs(workflow="ticker")] == ["ticker"]


def test_a_fire_time_that_passed_and_fired_meanwhile_is_not_fired_again(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The same race the other way: the entry fired at that time between the read
    and the script (its next fire time is on schedule again): it stays."""
    cid = _setup(client, registry)
    leader, duty = _leading(client)
    now = client.server_time_ms()
    passed = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 60_000)
    raw.zadd(client.keys.cron_next, {cid: passed})
    duty.tick(100.0)  # fires it: cron:last names the run of `passed`
    (run,) = client.list_runs(workflow="ticker")
    after = _next(raw, client, cid)
    assert after > now
    assert client.scripts.rewind_crons(leader.token, [(cid, passed, "ticker")]) == []
    assert _next(raw, client, cid) == after
    duty.tick(101.0)
    assert [r.id for r in client.list_runs(workflow="ticker")] == [run.id]


def test_a_fire_time_skipped_at_max_concurrency_is_not_fired_after_the_clock_goes_back(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A per-minute cron whose fire time F was skipped (its workflow at
    max_concurrency: 10 runs hold its slots), then the Redis clock goes back a
    minute (an NTP step, a failover to a server whose clock is behind): the
    rewind's first fire time after the clock is F again, and F left no run
    (cron:last names an older one), so the entry moves back to F and F is fired
    once, late, although the skip policy (SPEC 4) skipped it."""
    cid = _setup(client, registry)
    leader, duty = _leading(client)
    now = client.server_time_ms()
    passed = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 60_000)
    raw.sadd(client.keys.wf_running("ticker"), *[f"holder{i}" for i in range(10)])
    raw.zadd(client.keys.cron_next, {cid: passed})
    duty.tick(100.0)  # skipped: at max_concurrency
    assert client.list_runs(workflow="ticker") == []
    after = _next(raw, client, cid)
    assert after > now
    raw.delete(client.keys.wf_running("ticker"))  # the slots free again
    # the clock went back before `passed`: its first fire time from there is `passed`
    moved = client.scripts.rewind_crons(leader.token, [(cid, passed, "ticker")])
    assert moved == []
    assert _next(raw, client, cid) == after


# Runs of a workflow created while the clock ran ahead, none of them a fire of
# the entries rewound (enqueued by hand, another cron): as the library writes
# them (a hash with its idempotency key, workflow-runs:<wf> scored by createdAt).
_AHEAD_RUNS = """
local tag, wf, n, base = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, n do
  local id = 'AHEAD' .. i
  redis.call('HSET', tag .. ':run:' .. id, 'id', id, 'workflow', wf, 'status', 'succeeded',
    'createdAt', base + i, 'idempotencyKey', 'order-' .. i)
  redis.call('ZADD', tag .. ':workflow-runs:' .. wf, base + i, id)
end
return n
"""

_READ_AHEAD = """
local reads = 0
for _ = 1, tonumber(ARGV[2]) do
  local runs = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, 200)
  for _, id in ipairs(runs) do
    redis.call('HGET', ARGV[3] .. ':run:' .. id, 'idempotencyKey')
    reads = reads + 1
  end
end
return reads
"""


def test_a_rewind_page_reads_a_bounded_number_of_runs_per_call(
    raw: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of 200 entries of one busy workflow (1,000 runs created while the
    clock was ahead, none a fire of theirs), each fired after the time it would
    move to: each entry read 200 of those runs, 40,000 reads in one script call
    (62 ms of Redis). A call now reads at most its budget, the caller sends the
    entries left in the next one; the outcome is the same (none moves: no fire
    of theirs found, each kept as a time that may have fired)."""
    tag = client.keys.tag
    now = client.server_time_ms()
    raw.eval(_AHEAD_RUNS, 0, tag, "busy", 1_000, now + 3_600_000)
    leader = LeaderDuty(client, 10_000)
    leader.tick(0.0)
    assert leader.is_leader
    pairs: list[tuple[str, int, str]] = []
    far = now + 10 * 3_600_000
    for i in range(200):
        cid = f"busy-cron-{i}"
        raw.zadd(client.keys.cron_next, {cid: far})
        last = f"LAST{i}"  # its latest run: fired at the clock that was ahead
        raw.hset(f"{tag}:run:{last}", "idempotencyKey", cron_key(cid, now + 7_200_000))
        raw.hset(f"{tag}:cron:last", cid, last)
        pairs.append((cid, now + 60_000, "busy"))
    # Redis CPU time against the reads of the old single call on this server now.
    sha = raw.script_load(_READ_AHEAD)
    index = client.keys.workflow_runs("busy")
    raw.evalsha(sha, 1, index, now, 1, tag)  # loaded and warm
    one = min(cpu_ms_of(raw, lambda: raw.evalsha(sha, 1, index, now, 200, tag)) for _ in range(3))
    cpu: list[float] = []
    run = client.scripts.run

    def measured(name: str, keys: tuple[str, ...], args: tuple[Any, ...], *, retry: bool) -> Any:
        if name != "rewind_crons":
            return run(name, keys, args, retry=retry)
        before = server_cpu_ms(raw)
        try:
            return run(name, keys, args, retry=retry)
        finally:
            cpu.append(server_cpu_ms(raw) - before)

    assert client.scripts.rewind_crons(leader.token, [("none", now, "")]) == []  # loaded
    monkeypatch.setattr(client.scripts, "run", measured)
    assert client.scripts.rewind_crons(leader.token, pairs) == []
    assert all(_next(raw, client, cid) == far for cid, _, _ in pairs)
    # before: one call of about `one` (62 ms here)
    assert max(cpu) < one / 3, (
        f"a rewind call used {max(cpu):.1f} ms of Redis CPU; the 40,000 reads: {one:.1f} ms "
        f"({len(cpu)} calls)"
    )


def test_a_fire_time_skipped_behind_a_run_not_started_is_not_fired_after_the_clock_goes_back(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """The other skip (SPEC 4 and the README: the entry's previous run is still
    queued): its fire time is kept too, and the rewind does not move back to it."""
    cid = _setup(client, registry)
    leader, duty = _leading(client)
    now = client.server_time_ms()
    earlier = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 120_000)
    passed = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 60_000)
    raw.zadd(client.keys.cron_next, {cid: earlier})
    duty.tick(100.0)  # fires `earlier`: its run waits in the queue (no worker)
    assert len(client.list_runs(workflow="ticker")) == 1
    raw.zadd(client.keys.cron_next, {cid: passed})
    duty.tick(101.0)  # skipped: the previous run has not started
    assert len(client.list_runs(workflow="ticker")) == 1
    assert raw.hget(client.keys.cron_skipped, cid) == str(passed).encode()
    after = _next(raw, client, cid)
    assert client.scripts.rewind_crons(leader.token, [(cid, passed, "ticker")]) == []
    assert _next(raw, client, cid) == after


def test_a_skip_at_a_clock_that_was_ahead_does_not_hold_the_entry_back(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A fire time is skipped only once due: a skipped fire time after now was
    skipped at a clock that was ahead, and says nothing of the fire times from now
    on. The entry still moves back to the schedule's next fire time (kept there it
    fired nothing for as long as the clock had been ahead: a day)."""
    cid = _setup(client, registry)
    now = client.server_time_ms()
    skipped = next_fire_ms(EVERY_MINUTE.expression, "UTC", now + DAY_MS)
    raw.hset(client.keys.cron_skipped, cid, skipped)
    raw.zadd(client.keys.cron_next, {cid: skipped + 60_000})
    _, duty = _leading(client)
    duty.tick(100.0)
    assert _next(raw, client, cid) <= client.server_time_ms() + 60_000
    assert duty.rewound == 1


def test_a_fire_time_before_a_skip_at_a_clock_not_ahead_is_not_moved_back_to(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """A fire time that passed between the rewind's read and its script, while a
    later one was skipped (at the clock of now, not ahead): the entry handled the
    later one, and stays."""
    cid = _setup(client, registry)
    leader, _ = _leading(client)
    now = client.server_time_ms()
    older = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 120_000)
    skipped = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 60_000)
    raw.hset(client.keys.cron_skipped, cid, skipped)
    raw.zadd(client.keys.cron_next, {cid: skipped + 60_000})
    assert client.scripts.rewind_crons(leader.token, [(cid, older, "ticker")]) == []
    assert _next(raw, client, cid) == skipped + 60_000


def _own_keys(raw: redis.Redis, client: Client) -> list[str]:
    """The keys of the test's prefix: the xdist worker's server is shared, and keys
    other tests left with a TTL expire meanwhile (DBSIZE read 13 fewer once, under
    load: ``assert 273659 == 273672``)."""
    tag = client.keys.tag.replace("{", "[{]").replace("}", "[}]")
    return run_keys(raw, tag + "*")


def test_the_record_of_skipped_fire_times_stays_one_field_per_entry(
    raw: redis.Redis, client: Client, registry: Registry
) -> None:
    """Many skipped fires (a per-minute cron at max_concurrency for hours) keep
    one field for the entry, holding the latest skipped fire time, and add no key;
    the field goes with the entry when the registry no longer has it."""
    cid = _setup(client, registry)
    _, duty = _leading(client)
    raw.sadd(client.keys.wf_running("ticker"), *[f"holder{i}" for i in range(10)])
    now = client.server_time_ms()
    first = next_fire_ms(EVERY_MINUTE.expression, "UTC", now - 300 * 60_000)
    keys_before = None
    for k in range(300):
        fire = first + k * 60_000
        raw.zadd(client.keys.cron_next, {cid: fire})
        duty.tick(100.0 + k)
        if k == 0:
            keys_before = _own_keys(raw, client)
    assert duty.skipped == 300
    assert client.list_runs(workflow="ticker") == []
    assert raw.hlen(client.keys.cron_skipped) == 1
    assert raw.hget(client.keys.cron_skipped, cid) == str(first + 299 * 60_000).encode()
    assert _own_keys(raw, client) == keys_before
    memory = raw.memory_usage(client.keys.cron_skipped)
    assert memory is not None and memory < 512
    plain = Registry()  # the workflow without its cron: the sync removes the entry

    @define_workflow("ticker", registry=plain, max_concurrency=10)
    def ticker(ctx: Context[Any]) -> Any:
        return None

    client.sync_registry(plain, app="cron-clock-test")
    assert raw.hlen(client.keys.cron_def) == 0
    assert raw.hlen(client.keys.cron_skipped) == 0
