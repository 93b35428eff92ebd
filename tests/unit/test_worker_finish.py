"""The worker's steady state builds a succeeded run's :class:`Finish` with
``tuple.__new__`` (what the NamedTuple's ``__new__`` calls, without its Python
frame): the same value, of the same type, as ``Finish(...)`` of the four fields it
names, as long as ``Finish`` keeps its five fields and defaults. A change of
``Finish``'s shape fails here before it can make the worker send a wrong finish."""

from __future__ import annotations

from redflow_mp.claimed import Finish
from redflow_mp.executor import OutcomeMode
from redflow_mp.worker import _new_tuple


def test_the_steady_states_finish_is_finishs_own() -> None:
    assert Finish._fields == ("mode", "run_id", "token", "payload", "delay_ms")
    assert Finish._field_defaults == {"payload": b"", "delay_ms": 0}
    for payload in (b"null", b'{"a": 1}', "text", b""):
        made = _new_tuple(Finish, (OutcomeMode.SUCCEEDED, "run-1", "tok", payload, 0))
        plain = Finish(OutcomeMode.SUCCEEDED, "run-1", "tok", payload)
        assert type(made) is Finish
        assert made == plain
        assert made._asdict() == plain._asdict()
        assert made.delay_ms == 0 and made.mode is OutcomeMode.SUCCEEDED
