"""The claim pass over shards (shardpass.py), with the claim calls given as a
plain function: which shard is sent what, in which order, and what a failure
does. (The lost reply itself, over a real connection reset:
tests/integration/test_lost_replies.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from redflow_mp.scripts import Claimed
from redflow_mp.shardpass import SHARD_DOWN_RETRY, ShardPass
from redflow_mp.shardset import Shard

RUN = cast(Claimed, object())  # the pass only tells a run from none


@dataclass(eq=False)
class _Shard:
    index: int


def _unanswered(passer: ShardPass) -> bool:
    return passer.unanswered


def _shards(n: int) -> list[Shard]:
    return [cast(Shard, _Shard(i)) for i in range(n)]


class _Calls:
    """Answers per shard index: a run, none, or an error, in turn; records
    every call as (index, resend)."""

    def __init__(self, answers: dict[int, list[object]]) -> None:
        self.answers = answers
        self.sent: list[tuple[int, bool]] = []

    def __call__(self, shard: Shard, resend: bool) -> tuple[str, Claimed | None]:
        self.sent.append((shard.index, resend))
        answer = self.answers[shard.index].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return cast(tuple[str, Claimed | None], answer)


def test_a_shard_that_answered_until_now_is_resent_its_claim_at_once() -> None:
    s = _shards(2)
    calls = _Calls({0: [RedisConnectionError("reset"), ("", RUN)], 1: [("", None)]})
    passer = ShardPass()
    assert passer.run(s, None, False, calls) == ("", RUN)
    assert calls.sent == [(0, False), (0, True)]  # shard 1 never asked: one run held
    assert not passer.unanswered and passer.down == {}


def test_a_shard_failing_its_resend_too_is_down_and_skipped_without_a_resend() -> None:
    s = _shards(2)
    lost = RedisConnectionError("down")
    calls = _Calls({0: [lost, lost], 1: [("", None), ("", None)]})
    passer = ShardPass()
    assert passer.run(s, None, False, calls) == ("", None)
    assert calls.sent == [(0, False), (0, True), (1, False)]
    assert _unanswered(passer) and 0 in passer.down
    calls.sent.clear()
    assert passer.run(s, None, False, calls) == ("", None)  # within SHARD_DOWN_RETRY
    assert calls.sent == [(1, False)] and not _unanswered(passer)
    passer.down[0] = 0.0  # its retry time has come: tried once, no resend
    calls.answers[0] = [lost]
    calls.answers[1] = [("", None)]
    calls.sent.clear()
    assert passer.run(s, None, False, calls) == ("", None)
    assert calls.sent == [(1, False), (0, False)]  # a shard down is tried last
    assert passer.down[0] > 0.0 and SHARD_DOWN_RETRY > 0


def test_the_finish_carrying_shard_is_not_resent_and_its_result_is_kept() -> None:
    s = _shards(2)
    passer = ShardPass()
    calls = _Calls({0: [RedisConnectionError("reset")]})
    with pytest.raises(RedisConnectionError):
        passer.run(s, s[0], False, calls)  # the caller resends the whole claim
    assert calls.sent == [(0, False)]
    calls = _Calls({0: [("succeeded", None)], 1: [("", RUN)]})
    assert passer.run(s, s[0], False, calls) == ("succeeded", RUN)


def test_no_shard_answering_raises_the_first_error() -> None:
    s = _shards(2)
    first, second = RedisConnectionError("a"), RedisConnectionError("b")
    calls = _Calls({0: [first, first], 1: [second, second]})
    with pytest.raises(RedisConnectionError) as raised:
        ShardPass().run(s, None, False, calls)
    assert raised.value is first
