"""A tenant cannot swap the code other prefixes run (issue 10, defect 5).

Redis function libraries are server-global and found by name: any user allowed
``FUNCTION LOAD`` (ACL ``@scripting``) can ``REPLACE`` a library of any name.
So redflow-mp runs its scripts through content-addressed EVALSHA by default, and
with ``redis_functions=True`` refuses a library of its name whose code is not its
own. The attacker here is an ACL user confined to its own prefix's keys, as a
tenant of a shared server would be.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redflow_mp import Registry, create_client, define_workflow
from redflow_mp.luafiles import SCRIPT_NAMES as _SCRIPT_NAMES
from redflow_mp.luafiles import build_library
from redflow_mp.luafiles import read_lua as _read_lua
from redflow_mp.scripts import enqueue_reply
from tests.helpers import command

pytestmark = pytest.mark.timeout(30)

_TAMPER = "-- tampered: every run's input is rewritten\nARGV[5] = '{\"pwned\":true}'\n"


def _name_of(lib: str, bodies: dict[str, str]) -> str:
    """The library name redflow-mp derives from its source (public: anyone can)."""
    source = lib + "".join(bodies[n] for n in _SCRIPT_NAMES)
    return "redflow_" + hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()[:12]


def _tampered_library() -> str:
    lib, bodies = _read_lua()
    genuine_name = _name_of(lib, bodies)
    tampered_bodies = dict(bodies)
    tampered_bodies["enqueue_run"] = _TAMPER + bodies["enqueue_run"]
    tampered, _ = build_library(lib, tampered_bodies)
    # The attacker publishes its code under the genuine library's (and functions')
    # names: they derive from the public source, so anyone can compute them.
    return tampered.replace(_name_of(lib, tampered_bodies), genuine_name)


@pytest.fixture()
def tenant(raw: redis.Redis, redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A Redis connection of an ACL user confined to the keys of another prefix."""
    user, password = f"tenant-{prefix}"[:60], "pw-tenant-1234"
    tag = "{" + prefix + "-tenant}"
    command(
        raw,
        "ACL", "SETUSER", user, "on", f">{password}", "resetkeys", f"~{tag}:*",
        "resetchannels", f"&{tag}:*", "-@all", "+@read", "+@write", "+@scripting",
        "+@connection", "+@fast", "+@slow", "-@dangerous",
    )  # fmt: skip
    conn = redis.Redis.from_url(redis_url.replace("redis://", f"redis://{user}:{password}@"))
    try:
        yield conn
    finally:
        conn.close()
        command(raw, "ACL", "DELUSER", user)
        if _has_functions(raw):
            command(raw, "FUNCTION", "FLUSH")


def _has_functions(raw: redis.Redis) -> bool:
    info: Any = raw.info("server")
    return int(str(info["redis_version"]).split(".")[0]) >= 7


def _tamper(tenant: redis.Redis, raw: redis.Redis) -> None:
    """The tenant loads its library; on Redis 6.2 there are no libraries to load."""
    if _has_functions(raw):
        command(tenant, "FUNCTION", "LOAD", "REPLACE", _tampered_library())
    else:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            command(tenant, "FUNCTION", "LOAD", "REPLACE", _tampered_library())


def _victim_run(redis_url: str, prefix: str, **options: Any) -> tuple[Any, Any]:
    registry = Registry()

    @define_workflow("victim", registry=registry)
    def victim(ctx: Any) -> None:
        return None

    client = create_client(
        redis_url, prefix=prefix + "-victim", registry=registry, default=False, **options
    )
    try:
        handle = victim.run({"amount": 10}, client=client)
        state = handle.state()
        assert state is not None
        return state.input, client.scripts._functions
    finally:
        client.close()


def test_a_tenant_replacing_the_library_changes_nothing_for_others(
    tenant: redis.Redis, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    # The tenant is confined to its keys, yet may load any function library.
    _tamper(tenant, raw)
    stored_input, functions = _victim_run(redis_url, prefix)
    assert stored_input == {"amount": 10}
    assert functions is None  # EVALSHA: content-addressed, nothing to swap


def test_opted_in_functions_refuse_a_library_that_is_not_ours(
    tenant: redis.Redis,
    raw: redis.Redis,
    redis_url: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _tamper(tenant, raw)
    with caplog.at_level(logging.ERROR, logger="redflow_mp.scripts"):
        stored_input, functions = _victim_run(redis_url, prefix, redis_functions=True)
    assert stored_input == {"amount": 10}
    assert functions is None  # the impostor was detected (6.2: no functions); EVALSHA
    if _has_functions(raw):
        assert "does not hold redflow-mp's code" in caplog.text


def test_opted_in_functions_use_the_genuine_library(
    raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    seven = _has_functions(raw)
    try:
        stored_input, functions = _victim_run(redis_url, prefix, redis_functions=True)
        assert stored_input == {"amount": 10}
        assert (functions is not None) is seven  # Redis 6.2: EVALSHA, nothing to opt into
        # A second client finds the same library already loaded and verifies it.
        stored_input, functions = _victim_run(redis_url, prefix, redis_functions=True)
        assert (functions is not None) is seven
    finally:
        if seven:
            command(raw, "FUNCTION", "FLUSH")


class _Interleaved:
    """A transport whose commands are preceded by what others do on the server:
    ``before[command]`` runs just before each of our commands of that name."""

    def __init__(self, inner: Any, before: dict[str, Any]) -> None:
        self._inner = inner
        self._before = before

    def call(self, *args: Any, retry: bool, fresh: bool = True) -> Any:
        name = " ".join(str(a).upper() for a in args[:2] if isinstance(a, str))
        for key, hook in self._before.items():
            if name.startswith(key):
                hook()
        return self._inner.call(*args, retry=retry, fresh=fresh)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _opted_in_client(redis_url: str, prefix: str) -> Any:
    client = create_client(redis_url, prefix=prefix + "-fn", default=False, redis_functions=True)
    client.scripts.ensure_loaded()
    return client


def _enqueue(client: Any, run_id: str) -> Any:
    keys, args = client.scripts.enqueue_call(
        run_id, "wf", "q", b"{}", 1, 0, "", 1000, "", "", None, None
    )
    return enqueue_reply(client.scripts.run("enqueue_run", keys, args, retry=True))


def test_a_library_flushed_while_a_sibling_reloads_it_is_no_tampering(
    raw: redis.Redis, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Opted-in functions, a neighbour running FUNCTION FLUSH in a loop: our FCALL
    finds no function, another process of ours has just loaded the library again
    (our FUNCTION LOAD: "already exists"), and the neighbour flushes it before our
    FUNCTION LIST. The library was absent, not replaced: it used to be reported as
    tampering (ERROR) and the call raised "Function not found", which crashed a
    supervisor's child (its claim) or failed its arbiter's cron duty."""
    if not _has_functions(raw):
        pytest.skip("Redis 6.2 has no functions")
    client = _opted_in_client(redis_url, prefix)
    try:
        assert client.scripts._functions is not None
        library = client.scripts._library
        flush = lambda: command(raw, "FUNCTION", "FLUSH")  # noqa: E731
        sibling = lambda: command(raw, "FUNCTION", "LOAD", library)  # noqa: E731
        client.scripts._t = _Interleaved(
            client.scripts._t, {"FCALL": flush, "FUNCTION LOAD": sibling, "FUNCTION LIST": flush}
        )
        with caplog.at_level(logging.INFO, logger="redflow_mp.scripts"):
            for i in range(3):
                assert _enqueue(client, f"01FLUSHED00000000000000000{i}")[1] is True
        assert "does not hold redflow-mp's code" not in caplog.text
    finally:
        client.close()
        command(raw, "FUNCTION", "FLUSH")


def test_a_library_replaced_after_start_fails_no_call(
    tenant: redis.Redis, raw: redis.Redis, redis_url: str, prefix: str
) -> None:
    """A tenant replaces our library by other code after our client verified it:
    the next FCALL finds no function, the reload refuses the impostor, and the call
    used to raise "Function not found" (every call, forever: a crash loop of the
    children). Refused, it runs through EVALSHA from then on, as at start."""
    if not _has_functions(raw):
        pytest.skip("Redis 6.2 has no functions")
    client = _opted_in_client(redis_url, prefix)
    try:
        name = client.scripts._library_name
        impostor = f"#!lua name={name}\nredis.register_function('other', function() return 1 end)\n"
        command(tenant, "FUNCTION", "LOAD", "REPLACE", impostor)
        for i in range(3):
            assert _enqueue(client, f"01REPLACED0000000000000000{i}")[1] is True
        assert client.scripts._functions is None
    finally:
        client.close()
