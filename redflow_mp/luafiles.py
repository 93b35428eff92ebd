"""The package's Lua files and the texts sent to Redis: each script with the part
of the helpers (``lua/_lib.lua``, ``_lib_retry.lua``, ``_lib_rate.lua``, then
``_lib_runs.lua``) it uses
(:mod:`redflow_mp.luasrc`), or all of them as one function library. Read and
built once per process (a supervisor does it before forking: its children find
them in memory)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from .luasrc import inline_constants, inline_helpers, needed_lib

__all__ = [
    "SCRIPT_NAMES",
    "build_library",
    "library_name",
    "load_sources",
    "read_lua",
    "script_names",
]

#: The helpers every script may use, in order (luasrc.needed_lib picks from them).
_LIB_FILES = ("_lib.lua", "_lib_retry.lua", "_lib_rate.lua", "_lib_runs.lua")

SCRIPT_NAMES = (
    "enqueue_run",
    "enqueue_runs",
    "claim_run",
    "renew_lease",
    "write_step",
    "finalize_run",
    "cancel_run",
    "promote_runs",
    "reap_runs",
    "fire_cron",
    "due_crons",
    "rewind_crons",
    "swap_crons",
    "sweep_runs",
    "reindex_runs",
    "requeue_claimed",
    "forget_queues",
    "suspend_run",
    "await_children",
    "wake_timers",
    "send_event",
    "consume_event",
    "resume_run",
    "kick_parent",
    "replan_rate",
    "recheck_waits",
    "rearm_leases",
    "confirm_result",
    "relist_runs",
    "forget_cascades",
    "cascade_at",
    "count_depths",
    "scan_queues",
    "take_hooks",
    "adopt_runs",
    "hook_started",
    "hook_done",
)


#: The script flags a script may declare (Redis >= 7), each on a line of its own
#: as ``-- flags: <flag>``: ``no-writes`` (reads only), ``allow-oom`` (runs under
#: OOM: only for writes that add no memory, renew_lease.lua's score updates).
KNOWN_FLAGS = ("no-writes", "allow-oom")

#: The first statement of every script (EVAL text and library function alike)
#: sent to a Redis Cluster (``probe=True``; off a cluster slots never move, and the
#: texts are those without it: same SHA1s, same library name): ``TYPE`` of a key
#: of the prefix's tag that is never written. On a cluster node whose slot is
#: being moved away (MIGRATING) a key the node lacks is not local, so the script
#: stops right here, before its first write ("Script attempted to access a non
#: local key"; the connection layer waits it out like TRYAGAIN until the move is
#: over) instead of at the first key already moved, keeping the writes made
#: before it (a run marked succeeded whose idempotency key never got its expiry:
#: tests/cluster/test_slot_move.py). The target of the move never runs our
#: scripts meanwhile: the client waits ``ASK`` out, it never sends ``ASKING``.
#: It costs one lookup of an absent key (about 0.7 µs a call). ``TYPE`` never
#: fails and copies no value, whatever a neighbour writes there (and is not the
#: ``EXISTS`` the claim tests count); should something have written the key, the
#: probe would pass on the source while it is still there, so then it probes a
#: key named after the server's clock (``TIME``) instead, which nothing wrote.
#: A ``KEYS[1]`` without a ``{tag}`` probes nothing. Written on one line, before
#: the script's first line: an error's line number stays that of the text
#: without it.
SLOT_PROBE = (
    "do local t = KEYS[1] and string.match(KEYS[1], '^{[^}]+}') if t then"
    " local p = t .. ':slot-probe' if redis.call('TYPE', p).ok ~= 'none' then"
    " local n = redis.call('TIME') redis.call('TYPE', p .. ':' .. n[1] .. n[2])"
    " end end end "
)


def script_flags(body: str) -> list[str]:
    """The flags ``body`` declares, in :data:`KNOWN_FLAGS` order."""
    return [f for f in KNOWN_FLAGS if f"\n-- flags: {f}\n" in f"\n{body}"]


def library_name(lib: str, bodies: dict[str, str], *, probe: bool = False) -> str:
    """The library's name: ``redflow_`` and a hash of its source (versions, and the
    variants with and without :data:`SLOT_PROBE`, coexist)."""
    digest = hashlib.sha1(
        ((SLOT_PROBE if probe else "") + lib + "".join(bodies[n] for n in SCRIPT_NAMES)).encode(
            "utf-8"
        ),
        usedforsecurity=False,
    ).hexdigest()[:12]
    return f"redflow_{digest}"


def build_library(
    lib: str, bodies: dict[str, str], *, probe: bool = False
) -> tuple[str, dict[str, str]]:
    """A function library with every script (each starting with :data:`SLOT_PROBE`
    when ``probe``: for a Redis Cluster); returns (source, script -> function name)."""
    prefix = library_name(lib, bodies, probe=probe)
    first = SLOT_PROBE if probe else ""
    parts = [f"#!lua name={prefix}", lib]
    names: dict[str, str] = {}
    for name in SCRIPT_NAMES:
        body = bodies[name]
        # RING_LATER (_lib.lua) is per call: a library's locals outlive a call,
        # and one that failed half-way must not leave another call deferring rings.
        parts.append(f"local function __{name}(KEYS, ARGV)\nRING_LATER = nil\n{first}{body}\nend")
        declared = script_flags(body)
        flags = ", flags={" + ", ".join(f"'{f}'" for f in declared) + "}" if declared else ""
        fname = f"{prefix}_{name}"
        parts.append(
            f"redis.register_function{{function_name='{fname}', callback=__{name}{flags}}}"
        )
        names[name] = fname
    return "\n".join(parts) + "\n", names


@lru_cache(maxsize=1)
def _lua_files() -> tuple[str, tuple[tuple[str, str], ...]]:
    """The package's Lua files, read once per process (a supervisor reads them
    before forking: its children find them in memory)."""
    pkg = resources.files("redflow_mp").joinpath("lua")
    # The shared helpers, in four files (each under the size of one module): each
    # uses the names of those before it.
    lib = "".join(pkg.joinpath(f).read_text(encoding="utf-8") for f in _LIB_FILES)
    bodies = tuple((n, pkg.joinpath(f"{n}.lua").read_text(encoding="utf-8")) for n in SCRIPT_NAMES)
    return lib, bodies


def read_lua() -> tuple[str, dict[str, str]]:
    """(_lib.lua, {script name: its body}), a fresh dict of the cached files."""
    lib, bodies = _lua_files()
    return lib, dict(bodies)


@lru_cache(maxsize=4)
def _sources(server_version: tuple[int, ...], probe: bool) -> tuple[tuple[str, str], ...]:
    raw, bodies = _lua_files()
    # The calls of one-expression helpers written out (luasrc.inline_helpers):
    # an EVALSHA makes no closure for them. The library keeps them as written
    # (its closures are made once, at FUNCTION LOAD).
    # The library's numeric constants written out too (luasrc.inline_constants).
    lib = inline_constants(raw, inline_helpers(raw, raw))
    out: list[tuple[str, str]] = []
    for name, raw_body in bodies:
        body = inline_constants(raw, inline_helpers(raw, raw_body))
        text = needed_lib(lib, body) + "\n" + (SLOT_PROBE if probe else "") + body
        if server_version >= (7, 0):
            flags = ",".join(script_flags(body))
            text = ("#!lua flags=" + flags if flags else "#!lua") + "\n" + text
        out.append((name, text))
    return tuple(out)


def load_sources(server_version: tuple[int, ...], *, probe: bool = False) -> dict[str, str]:
    """Every script's EVAL text for ``server_version``: the _lib.lua it uses, its body
    (built once per version, variant and process); ``probe``: each body starts with
    :data:`SLOT_PROBE` (a Redis Cluster)."""
    return dict(_sources(tuple(server_version), bool(probe)))


def script_names(server_version: tuple[int, ...], *, probe: bool = False) -> dict[str, str]:
    """SHA-1 -> name of every script sent to a server of ``server_version`` (SLOWLOG)."""
    return {
        hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest(): name
        for name, text in load_sources(server_version, probe=probe).items()
    }
