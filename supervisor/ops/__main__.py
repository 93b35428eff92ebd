"""``python -m redflow_supervisor.ops`` is the ``redflow`` command."""

from __future__ import annotations

from ..entry import ops

raise SystemExit(ops())
