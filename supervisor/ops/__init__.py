"""Operator tools over a redflow namespace: the ``redflow`` command and its dashboard.

``cli`` parses the command line; ``session`` connects and holds what every
command shares; ``runs`` and ``commands`` are the commands, which talk to Redis
through a :class:`redflow_mp.Client`, the views in :mod:`redflow_mp.admin` and the
supervisor status records of :mod:`redflow_supervisor.status`; ``render``
turns what they return into tables (for people) or JSON (for scripts);
``dashboard`` serves the same views as server-rendered HTML: ``make_app`` (the
WSGI application of ``webapp``, for mounting in a host application) and the
stand-alone server around it on the standard library's ``wsgiref``. Nothing here
adds a run-time dependency.
"""

from __future__ import annotations
