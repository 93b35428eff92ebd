""":class:`LazyEvent`: a ``threading.Event`` that is cheap to make.

Every execution of a run makes two events (``ctx.cancelled`` and the lease-lost
flag) that are almost never set or waited on. A plain ``threading.Event``
builds a ``Condition`` and a ``Lock`` when it is made: about 10 µs of CPU per
event on a 2-core VM, 20 µs per run, more than the rest of the run's Python.
A ``LazyEvent`` builds them on the first ``set``, ``wait`` or ``clear``;
``is_set`` reads the flag as ``Event`` does. It *is* a ``threading.Event``
(a subclass), so ``ctx.cancelled.wait(timeout)`` and ``isinstance`` keep working.
"""

from __future__ import annotations

import threading

__all__ = ["LazyEvent"]

# Guards the first creation of any LazyEvent's condition (rare: a set or a wait).
_make = threading.Lock()


class LazyEvent(threading.Event):
    """A ``threading.Event`` whose condition is made when first needed."""

    # No Event.__init__ (its Condition and Lock are the cost saved), and no Python
    # __init__ at all: object's, in C, makes it (a Python call less, two a run).
    # The flag reads the class's False until a set or a clear writes the instance's.
    _flag = False
    __init__ = object.__init__

    @property
    def _cond(self) -> threading.Condition:
        cond: threading.Condition | None = self.__dict__.get("_lazy_cond")
        if cond is None:
            with _make:
                cond = self.__dict__.get("_lazy_cond")
                if cond is None:
                    cond = self.__dict__["_lazy_cond"] = threading.Condition(threading.Lock())
        return cond

    def __repr__(self) -> str:
        return f"<LazyEvent {'set' if self._flag else 'unset'}>"
