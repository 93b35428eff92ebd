"""``supervisor/duties/shards.py``: a duty's pass over its shards stops at the
first network error and the next pass starts after that shard; other Redis
trouble on one shard does not stop the others; no shard is starved."""

from __future__ import annotations

import pytest
import redis

from supervisor.duties.shards import ShardTurn

N = 6


def _pass(turn: ShardTurn, failing: dict[int, Exception], served: list[int]) -> list[Exception]:
    def step(i: int) -> None:
        served.append(i)
        if i in failing:
            raise failing[i]

    return turn.run(N, step)


@pytest.mark.parametrize("bad", [0, 3, N - 1])
@pytest.mark.parametrize("rotate", [False, True])
def test_one_shard_down_every_other_is_served_each_pass_and_it_is_tried_again(
    bad: int, rotate: bool
) -> None:
    turn = ShardTurn(rotate=rotate)
    tried_bad = 0
    for tick in range(3 * N):
        served: list[int] = []
        errors = _pass(turn, {bad: redis.TimeoutError("stalled")}, served)
        assert turn.stopped
        assert len(errors) == 1 and isinstance(errors[0], redis.TimeoutError)
        if tick > 0:  # the first pass may stop before the others; then the bad one is last
            assert sorted(served) == list(range(N)), (tick, served)
            assert served[-1] == bad, (tick, served)
        assert served.count(bad) == 1  # one blocking call a pass, never more
        tried_bad += 1
    assert tried_bad == 3 * N


def test_a_network_error_stops_the_pass_a_refusal_does_not() -> None:
    turn = ShardTurn()
    served: list[int] = []
    errors = _pass(turn, {1: redis.ReadOnlyError("READONLY"), 3: redis.ConnectionError()}, served)
    assert served == [0, 1, 2, 3]  # the refusal on 1 went on, the network error on 3 stopped
    assert [type(e) for e in errors] == [redis.ReadOnlyError, redis.ConnectionError]
    served.clear()
    _pass(turn, {}, served)
    assert served == [4, 5, 0, 1, 2, 3]  # after the shard that stopped it
    served.clear()
    _pass(turn, {}, served)
    assert served == [4, 5, 0, 1, 2, 3] and not turn.stopped


def test_other_errors_propagate_and_false_ends_the_pass() -> None:
    turn = ShardTurn()
    with pytest.raises(ValueError):
        _pass(turn, {2: ValueError("a bug")}, [])
    seen: list[int] = []

    def step(i: int) -> bool:
        seen.append(i)
        return i < 2  # a budget spent at shard 2

    assert turn.run(N, step) == [] and seen == [0, 1, 2]


def test_rotate_starts_each_pass_one_shard_later() -> None:
    turn = ShardTurn(rotate=True)
    firsts = []
    for _ in range(N):
        served: list[int] = []
        _pass(turn, {}, served)
        assert sorted(served) == list(range(N))
        firsts.append(served[0])
    assert sorted(firsts) == list(range(N))
