"""``python -m redflow_supervisor``: the same as the ``redflow-supervisor`` command."""

from .cli import main

raise SystemExit(main())
