"""A worker's claim never checks its connection for readability first
(``Wire.freshen``, one ``poll`` and about 3.7 us a call): a claim is sent once
(``retry=False``) but recovers a lost reply itself (``LostClaim`` resends it
with its token, and the pending finish with it), so the check bought nothing
on the hot path. The claims that go through ``Transport.call`` are those of a
worker past ``MANY_QUEUES`` queues, and every claim under Sentinel, a cluster
or ``durability``; an unkeyed ``send_event`` still checks
(``test_send_event_after_restart.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redflow_mp import Client
from redflow_mp.ids import new_token
from redflow_mp.queueset import MANY_QUEUES
from redflow_mp.wire import Wire

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def freshened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    real = Wire.freshen

    def counted(self: Wire) -> None:
        calls.append(1)
        real(self)

    monkeypatch.setattr(Wire, "freshen", counted)
    yield calls


def test_a_claim_over_many_queues_sends_no_readability_check(
    client: Client, freshened: list[int]
) -> None:
    queues = tuple(f"q{i}" for i in range(MANY_QUEUES + 1))
    for _ in range(5):
        assert client.scripts.claim(queues, 5_000, new_token()) == ("", None)
    # before: assert 5 == 0 (a poll before each claim_run)
    assert len(freshened) == 0


def test_a_finish_only_call_sends_no_readability_check(
    client: Client, freshened: list[int]
) -> None:
    assert client.scripts.claim(("q",), 5_000, "") == ("", None)
    assert len(freshened) == 0


def test_an_unkeyed_send_event_still_checks(client: Client, freshened: list[int]) -> None:
    assert client.send_event("01M96WZRKMCE89ZAPC8350FCQ4", "go") is False
    assert len(freshened) == 1
