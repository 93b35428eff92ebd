"""Registry of the benchmarked systems (redflow and the five peers)."""

from __future__ import annotations

from benchmarks.systems.arq import ArqSystem
from benchmarks.systems.base import Client, NotAvailable, System, Timed
from benchmarks.systems.celery import CelerySystem
from benchmarks.systems.dramatiq import DramatiqSystem
from benchmarks.systems.huey import HueyFireSystem, HueySystem
from benchmarks.systems.redflow import RedflowSystem
from benchmarks.systems.rq import RQSimpleSystem, RQSystem

SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (
        RedflowSystem,
        CelerySystem,
        RQSystem,
        RQSimpleSystem,
        DramatiqSystem,
        ArqSystem,
        HueySystem,
        HueyFireSystem,
    )
}

BASELINE = "redflow"
PEERS = tuple(name for name in SYSTEMS if name != BASELINE)


def get_system(name: str) -> System:
    try:
        return SYSTEMS[name]()
    except KeyError:
        known = ", ".join(SYSTEMS)
        raise ValueError(f"unknown system {name!r} (known: {known})") from None


__all__ = [
    "BASELINE",
    "PEERS",
    "SYSTEMS",
    "Client",
    "NotAvailable",
    "System",
    "Timed",
    "get_system",
]
