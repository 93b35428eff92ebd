"""The supervisor's first connection builds the scripts before any child is forked.

``redflow_supervisor.startup.connect`` configures its client's scripts: the
sources are built in the parent (every child inherits them instead of reading
and cutting ``lua/*.lua`` itself) and the server's script cache is filled (a
child's first claim finds every script loaded).
"""

from __future__ import annotations

from typing import Any

from redflow_mp import scripts
from redflow_mp.registry import Registry
from redflow_supervisor.settings import load
from redflow_supervisor.startup import connect


def test_connect_builds_and_loads_the_scripts(
    redis_url: str, prefix: str, registry: Registry, raw: Any
) -> None:
    settings = load(
        {"app": "startup", "url": redis_url, "prefix": prefix, "modules": ("unused",)},
        environ={},
    )
    scripts._sources.cache_clear()
    client = connect(settings, registry, ("q",))
    try:
        assert scripts._sources.cache_info().currsize == 1  # built here, before any fork
        shas = list(client.scripts._shas.values())
        assert len(shas) == len(scripts._SCRIPT_NAMES)
        assert all(raw.script_exists(*shas))
    finally:
        client.close()
