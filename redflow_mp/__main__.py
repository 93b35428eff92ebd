"""``python -m redflow_mp`` runs a standalone worker (see ``redflow_mp.worker.main``)."""

from .worker import main

raise SystemExit(main())
