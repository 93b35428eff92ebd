"""The slot probe (``luafiles.SLOT_PROBE``) is sent to a Redis Cluster only.

Off a cluster slots never move, so a standalone or Sentinel server gets the
texts and the function library exactly as they were before the probe existed
(same SHA1s, same library name: issue 13 counts every Redis command a run
costs); a cluster gets each script with the probe as its first statement, and
a library of another name.
"""

from __future__ import annotations

import hashlib

import pytest
import redis

from redflow_mp import Client, create_client
from redflow_mp.ids import new_run_id, new_token
from redflow_mp.luafiles import (
    SCRIPT_NAMES,
    SLOT_PROBE,
    build_library,
    library_name,
    load_sources,
    read_lua,
    script_flags,
)
from redflow_mp.luasrc import inline_constants, inline_helpers, needed_lib
from tests.helpers import command_counts

pytestmark = pytest.mark.timeout(60)

_VERSIONS = [(6, 2, 14), (7, 0, 15)]


def _without_probe(server_version: tuple[int, ...]) -> dict[str, str]:
    """Each script's EVAL text as built before the probe existed (luafiles on main)."""
    raw, bodies = read_lua()
    lib = inline_constants(raw, inline_helpers(raw, raw))
    out = {}
    for name in SCRIPT_NAMES:
        body = inline_constants(raw, inline_helpers(raw, bodies[name]))
        text = needed_lib(lib, body) + "\n" + body
        if server_version >= (7, 0):
            flags = ",".join(script_flags(body))
            text = ("#!lua flags=" + flags if flags else "#!lua") + "\n" + text
        out[name] = text
    return out


@pytest.mark.parametrize("version", _VERSIONS)
def test_standalone_texts_are_byte_identical_to_those_without_the_probe(
    version: tuple[int, ...],
) -> None:
    plain = load_sources(version)
    assert plain == _without_probe(version)
    assert plain == load_sources(version, probe=False)
    probed = load_sources(version, probe=True)
    for name, text in plain.items():
        assert SLOT_PROBE not in text
        assert probed[name].count(SLOT_PROBE) == 1, name
        assert probed[name].replace(SLOT_PROBE, "") == text
        # on the line of the body's first line: error line numbers unchanged
        assert len(probed[name].splitlines()) == len(text.splitlines())


def test_the_library_without_the_probe_keeps_its_name_the_cluster_one_differs() -> None:
    lib, bodies = read_lua()
    digest = hashlib.sha1(
        (lib + "".join(bodies[n] for n in SCRIPT_NAMES)).encode("utf-8"), usedforsecurity=False
    ).hexdigest()[:12]
    plain, plain_names = build_library(lib, bodies)
    probed, probed_names = build_library(lib, bodies, probe=True)
    name = library_name(lib, bodies)
    assert name == f"redflow_{digest}"  # as derived before the probe existed
    assert SLOT_PROBE not in plain
    assert plain.startswith(f"#!lua name={name}\n")
    cluster_name = library_name(lib, bodies, probe=True)
    assert cluster_name != name
    assert probed.count(SLOT_PROBE) == len(SCRIPT_NAMES)
    assert probed.replace(SLOT_PROBE, "").replace(cluster_name, name) == plain
    assert set(plain_names) == set(probed_names) == set(SCRIPT_NAMES)


@pytest.mark.parametrize("probe", [False, True])
def test_both_variants_compile(raw: redis.Redis, probe: bool) -> None:
    info = raw.info("server")
    server = tuple(int(x) for x in str(info["redis_version"]).split(".")[:3])
    for name, text in load_sources(server, probe=probe).items():
        try:
            raw.script_load(text)
        except redis.ResponseError as exc:  # pragma: no cover - shows which script
            pytest.fail(f"{name} (probe={probe}) does not compile: {exc}")


@pytest.mark.parametrize("functions", [False, True])
def test_a_run_on_a_standalone_server_sends_no_probe(
    raw: redis.Redis, redis_url: str, prefix: str, functions: bool
) -> None:
    """Enqueue, claim and finish: not one TYPE (the probe) off a cluster; the
    scripts and library are those without it. On slots13 (every script probed):
    ``assert 3 == 0`` (one TYPE per script call)."""
    client: Client = create_client(
        redis_url, prefix=prefix, default=False, redis_functions=functions
    )
    try:
        client.scripts.ensure_loaded()
        version = client.transport.server_version()
        clustered = client.transport.clustered
        assert client.scripts._sources == load_sources(version, probe=clustered)
        if client.scripts._functions is not None:
            lib, bodies = read_lua()
            assert client.scripts._library_name == library_name(lib, bodies, probe=clustered)

        def one_run() -> None:
            rid, _ = client.scripts.enqueue(
                new_run_id(), "wf", "q", b"{}", 1, 0, "", 60_000, "", "", None, None
            )
            _, claimed = client.scripts.claim(("q",), 60_000, new_token())
            assert claimed is not None and claimed.id == rid
            assert client.scripts.finalize(rid, claimed.token, "succeeded", b"1") == "succeeded"

        counts = command_counts(raw, one_run)
        assert counts.get("type", 0) == (3 if clustered else 0), counts
    finally:
        client.close()
