"""``python -m redflow_supervisor``: the same as the ``redflow-supervisor`` command."""

from .entry import supervisor

raise SystemExit(supervisor())
