"""Script loading: every script compiles in its Redis 6.2 form (no shebang) and
its 7.x form (shebang, no-writes flag where declared); NOSCRIPT reloads;
an out-of-memory refusal is a clear error that changed nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError

from redflow_mp import Client, RedflowError
from redflow_mp.ids import new_run_id
from redflow_mp.luafiles import SCRIPT_NAMES as _SCRIPT_NAMES
from redflow_mp.luafiles import load_sources
from redflow_mp.scripts import enqueue_reply
from tests.helpers import command
from tests.redis_server import RedisServer

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
    info: Any = raw.info("server")
    server = tuple(int(x) for x in str(info["redis_version"]).split(".")[:3])
    # A 6.2 server cannot load the 7.x form (shebang); it compiles its own form.
    for name, text in load_sources(min(version, server)).items():
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


def _library_names(raw: redis.Redis) -> list[str]:
    listed: Any = command(raw, "FUNCTION", "LIST")
    names = []
    for entry in listed:
        fields: dict[Any, Any] = (
            dict(entry)
            if isinstance(entry, dict)
            else dict(zip(entry[::2], entry[1::2], strict=True))
        )
        name = fields.get(b"library_name") or fields.get("library_name")
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def test_scripts_run_through_evalsha_by_default(server: RedisServer) -> None:
    # A server of the test's own: on the session's server another test may have
    # loaded the library with redis_functions=True (the CI's Valkey 9 step failed
    # 'assert not ['redflow_e40d853da7aa']' when one had run before it on its worker).
    from redflow_mp import create_client

    client = create_client(server.url, prefix="evalsha", default=False)
    raw = redis.Redis.from_url(server.url)
    try:
        client.scripts.enqueue(
            "01FN00000000000000000000AB", "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
        )
        assert client.scripts._functions is None
        assert raw.exists(client.keys.run("01FN00000000000000000000AB"))
        if client.transport.server_version() >= (7, 0):
            # No function library is loaded: a library is found by name, which another
            # user of the server could replace (tests/lua/test_library_tampering.py).
            assert not [n for n in _library_names(raw) if n.startswith("redflow_")]
    finally:
        client.close()
        raw.close()


def test_redis_7_uses_one_function_library_and_reloads_it(
    raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    from redflow_mp import create_client

    client = create_client(redis_url, prefix=prefix, default=False, redis_functions=True)
    try:
        client.scripts.enqueue(
            "01FN00000000000000000000AA", "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
        )
        if client.transport.server_version() < (7, 0):
            # Redis 6.2 has no functions: every script goes through EVALSHA.
            assert client.scripts._functions is None
            return
        libraries = [n for n in _library_names(raw) if n.startswith("redflow_")]
        assert len(libraries) == 1
        command(raw, "FUNCTION", "FLUSH")  # as a server restarted without persistence
        client.scripts.enqueue(
            "01FN00000000000000000000AB", "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
        )
        assert [n for n in _library_names(raw) if n.startswith("redflow_")] == libraries
    finally:
        client.close()
        if client.transport.server_version() >= (7, 0):
            command(raw, "FUNCTION", "FLUSH")


def test_a_noscript_reply_is_recovered_after_functions_were_configured(
    raw: redis.Redis, client: Client, enq: Callable[..., str]
) -> None:
    """A thread (or task) that built an EVALSHA while another was still configuring
    the scripts (functions not loaded yet) gets NOSCRIPT after the other finished:
    the recovery follows the error, not the state now (it used to re-raise it)."""
    enq()  # configured: functions on Redis >= 7
    rid = new_run_id()
    keys, args = client.scripts.enqueue_call(
        rid, "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
    )
    command(raw, "SCRIPT", "FLUSH")
    lost = NoScriptError("No matching script. Please use EVAL.")
    reply = client.scripts.drive(
        client.scripts.recover("enqueue_run", keys, args, lost), retry=True
    )
    assert enqueue_reply(reply) == (rid, True)


def test_the_eval_path_works_where_functions_are_unavailable(
    raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    from redflow_mp import create_client
    from redflow_mp.ids import new_token

    client = create_client(redis_url, prefix=prefix + "-eval", default=False)
    try:
        client.scripts.use_functions = False
        run_id, created = client.scripts.enqueue(
            "01EVALPATH0000000000000000", "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
        )
        assert created
        _, claimed = client.scripts.claim(("q",), 1_000, new_token())
        assert claimed is not None and claimed.id == run_id
    finally:
        client.close()


def test_a_user_without_function_rights_falls_back_to_eval(
    raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    from redflow_mp import create_client
    from redflow_mp.ids import new_token

    user, password = f"nofn-{prefix}"[:60], "pw-nofn-1234"
    info: Any = raw.info("server")
    seven = int(str(info["redis_version"]).split(".")[0]) >= 7
    rules = ["-function"] if seven else []  # 6.2 has no functions to deny
    command(raw, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", *rules)
    try:
        url = redis_url.replace("redis://", f"redis://{user}:{password}@")
        client = create_client(url, prefix=prefix + "-acl", default=False, redis_functions=True)
        try:
            client.scripts.enqueue(
                "01NOFUNCTION00000000000000", "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
            )
            assert client.scripts._functions is None
            _, claimed = client.scripts.claim(("q",), 1_000, new_token())
            assert claimed is not None and claimed.id == "01NOFUNCTION00000000000000"
        finally:
            client.close()
    finally:
        command(raw, "ACL", "DELUSER", user)


class _FlushingNeighbour:
    """A transport through which another user of the server empties the script
    cache (and the function libraries) just before each of our script calls: the
    worst interleaving of a neighbour running SCRIPT FLUSH / FUNCTION FLUSH in a loop."""

    def __init__(self, inner: Any, raw: redis.Redis, functions: bool) -> None:
        self._inner = inner
        self._raw = raw
        self._functions = functions

    def call(self, *args: Any, retry: bool, fresh: bool = True) -> Any:
        if str(args[0]).upper() in ("EVALSHA", "FCALL"):
            self._raw.script_flush()
            if self._functions:
                command(self._raw, "FUNCTION", "FLUSH")
        return self._inner.call(*args, retry=retry, fresh=fresh)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("functions", [False, True], ids=["evalsha", "functions"])
def test_a_neighbour_flushing_scripts_between_our_commands_loses_no_call(
    raw: redis.Redis, redis_url: str, prefix: str, functions: bool
) -> None:
    """Another program on the server runs SCRIPT FLUSH (FUNCTION FLUSH) in a loop.
    The reload after NOSCRIPT used to be SCRIPT LOAD then EVALSHA (FUNCTION LOAD then
    FCALL): a flush between the two made the call raise NoScriptError (an enqueue
    failed, a worker's step write or finish failed). The reloaded call is one
    atomic command now."""
    from redflow_mp import create_client

    client = create_client(redis_url, prefix=prefix, default=False, redis_functions=functions)
    try:
        rid = new_run_id()
        keys, args = client.scripts.enqueue_call(
            rid, "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
        )
        client.scripts.ensure_loaded()
        client.scripts._t = _FlushingNeighbour(  # type: ignore[assignment]
            client.scripts._t, raw, functions and client.scripts._functions is not None
        )
        for _ in range(3):
            assert (
                enqueue_reply(client.scripts.run("enqueue_run", keys, args, retry=True))[0] == rid
            )
        assert raw.exists(client.keys.run(rid))
    finally:
        client.close()
        if client.transport.server_version() >= (7, 0):
            command(raw, "FUNCTION", "FLUSH")
