"""Importing redis-py without the OpenTelemetry modules it would import for nothing.

redis-py 8 imports ``opentelemetry.sdk.metrics`` and ``opentelemetry.metrics``
(the SDK's metrics, ``psutil`` through its resources, about 120 modules) at
``import redis`` whenever the ``otel`` extra is installed, for its own opt-in
metrics (``redis.observability``), which nothing here turns on. That import was
about 25 ms of CPU, some 15 % of a supervisor's start-up before its first
claim (``docs/benchmarks.md``, "Start-up, round 2"), and it put
``opentelemetry.trace`` in ``sys.modules``, which made ``tracing.py``'s hooks
look for a tracer provider on every execution and enqueue.

:func:`import_redis` (run when ``redflow_mp/__init__.py`` imports this module,
before any other) imports
``redis`` while an import of ``opentelemetry`` *from this thread* fails as if
the extra were not installed; redis-py's optional imports expect that
(``try: ... except ImportError``). Afterwards it gives redis-py's two
availability flags (``OTEL_AVAILABLE`` of ``redis.observability.metrics`` and
``.providers``) the value they would have had, so that an application that
turns redis-py's metrics on later still can: those modules use the names they
failed to import only in annotations, and import what they call at the call.
Nothing happens when ``redis`` or ``opentelemetry`` was imported already (an
application that uses OpenTelemetry imports it before it builds a client).

Invariant: this module imports only the standard library (it runs before
redis-py is imported).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["import_redis"]

_OTEL = "opentelemetry"
# redis-py's flags set by its optional imports of OpenTelemetry.
_FLAGGED = ("redis.observability.metrics", "redis.observability.providers")


class _NoOtel:
    """A meta-path finder that makes ``import opentelemetry...`` fail in one thread
    (another thread importing it meanwhile is not affected)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if threading.get_ident() == self.thread and (name == _OTEL or name.startswith(_OTEL + ".")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def import_redis() -> None:
    """Import ``redis`` without OpenTelemetry, unless either is imported already.
    Called once, when this module is imported."""
    if "redis" in sys.modules or _OTEL in sys.modules:
        return
    finder = _NoOtel()
    sys.meta_path.insert(0, finder)
    try:
        import redis  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
    spec = importlib.util.find_spec(_OTEL)  # a top-level name: found without importing it
    if spec is None:
        return
    places = spec.submodule_search_locations or ()
    sdk = any(os.path.isdir(os.path.join(place, "sdk")) for place in places)
    # metrics: the API (opentelemetry.metrics); providers: the SDK's MeterProvider
    for name, available in zip(_FLAGGED, (True, sdk), strict=True):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "OTEL_AVAILABLE", None) is False:
            module.__dict__["OTEL_AVAILABLE"] = available


import_redis()  # at the first import of redflow_mp (its __init__ imports this module first)
