"""``python -m redflow_supervisor.ops`` is the ``redflow`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
