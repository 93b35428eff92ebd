"""Script loading: every script compiles in its Redis 6.2 form (no shebang) and
its 7.x form (shebang, no-writes flag where declared); NOSCRIPT reloads;
an out-of-memory refusal is a clear error that changed nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redflow_mp import Client, RedflowError
from redflow_mp.scripts import _SCRIPT_NAMES, load_sources

pytestmark = pytest.mark.timeout(30)


def test_sources_for_redis_6_2_have_no_shebang() -> None:
    sources = load_sources((6, 2, 14))
    assert set(sources) == set(_SCRIPT_NAMES)
    assert not [name for name, text in sources.items() if text.startswith("#!")]


def test_sources_for_redis_7_have_shebang_and_flags() -> None:
    sources = load_sources((7, 0, 15))
    assert all(text.startswith("#!lua") for text in sources.values())
    assert sources["due_crons"].splitlines()[0] == "#!lua flags=no-writes"
    assert sources["enqueue_run"].splitlines()[0] == "#!lua"


@pytest.mark.parametrize("version", [(6, 2, 0), (7, 0, 0)])
def test_every_script_compiles(raw: redis.Redis, version: tuple[int, int, int]) -> None:
    for name, text in load_sources(version).items():
        try:
            raw.script_load(text)
        except redis.ResponseError as exc:  # pragma: no cover - shows which script
            pytest.fail(f"{name} does not compile for {version}: {exc}")


def test_scripts_reload_after_script_flush(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    enq()
    raw.script_flush()
    second = enq()
    assert raw.exists(client.keys.run(second))


def test_out_of_memory_is_a_clear_error_and_changes_nothing(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    enq()  # scripts loaded while memory is fine
    before = raw.dbsize()
    raw.config_set("maxmemory", 1)
    try:
        with pytest.raises(RedflowError, match="out of memory"):
            enq()
        # read-only scripts still run
        assert client.scripts.due_crons(10)[2] == []
    finally:
        raw.config_set("maxmemory", 0)
    assert raw.dbsize() == before
