"""An evicting Redis (``maxmemory-policy`` other than ``noeviction``) is warned
about at start where it matters most: managed services, which default to
``volatile-lru`` and disable or rename ``CONFIG``, and deployments with the
documented ACL user, which has no ``CONFIG``. The warning read the policy with
``CONFIG GET`` (and did not ask at all as a named user), so there it said
nothing; ``INFO memory`` (which every user needs anyway) names the policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process.conftest import Supervisor, wait_until
from tests.process.test_acl import _user, documented
from tests.redis_server import RedisServer

pytestmark = pytest.mark.process


@pytest.fixture()
def managed() -> Iterator[RedisServer]:
    """A server like a managed service's: volatile-lru, CONFIG renamed away."""
    srv = RedisServer(["--maxmemory-policy", "volatile-lru", "--rename-command", "CONFIG", ""])
    srv.start()
    yield srv
    srv.cleanup()


def _warned(sup: Supervisor) -> None:
    sup.wait_workers(1)
    wait_until(lambda: "maxmemory-policy" in sup.log(), 10, message="the eviction warning")
    assert "volatile-lru" in sup.log() and "noeviction" in sup.log()


def test_an_evicting_redis_without_config_is_warned_about(
    managed: RedisServer, tmp_path: Path
) -> None:
    sup = Supervisor(managed.url, "ev", tmp_path / "sup.log", procs=1).start()
    try:
        _warned(sup)
    finally:
        sup.stop()


def test_an_evicting_redis_is_warned_about_to_the_documented_acl_user(
    managed: RedisServer, tmp_path: Path
) -> None:
    prefix = "evacl"
    admin = managed.client()
    try:
        url = _user(admin, "etl", documented("etl", prefix))
        admin.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
        sup = Supervisor(url, prefix, tmp_path / "sup.log", procs=1).start()
        try:
            _warned(sup)
        finally:
            sup.stop()
        # and nothing refused to ask (a refused command lands in the ACL LOG)
        assert admin.execute_command("ACL", "LOG") == []  # type: ignore[no-untyped-call]
    finally:
        admin.close()
