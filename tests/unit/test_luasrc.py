"""luasrc.needed_lib: each script is sent with the library definitions it uses,
transitively and in order, and nothing it uses is left out."""

from __future__ import annotations

import re

from redflow_mp.luafiles import SCRIPT_NAMES as _SCRIPT_NAMES
from redflow_mp.luafiles import load_sources
from redflow_mp.luafiles import read_lua as _read_lua
from redflow_mp.luasrc import _chunks, _code, inline_helpers, needed_lib

LIB = """-- header
local CAP = 3
local function a() return CAP end
-- b uses a
local function b() return a() end
local function c() return 'x--y' end -- c mentions b() only in this comment
local function d() return c() end
"""


def _defs(text: str) -> list[str]:
    return re.findall(r"^local\s+(?:function\s+)?(\w+)", text, re.MULTILINE)


def test_references_are_followed_transitively_in_order() -> None:
    assert _defs(needed_lib(LIB, "return b()")) == ["CAP", "a", "b"]
    assert _defs(needed_lib(LIB, "return d()")) == ["c", "d"]
    assert _defs(needed_lib(LIB, "return 1 -- a() b() c()")) == []
    assert needed_lib(LIB, "return 1").startswith("-- header\n")


def test_global_definitions_are_definitions_too() -> None:
    lib = "local A = 1\nfunction g() return A end\nG = { 1 }\nlocal function h() return G end\n"
    assert needed_lib(lib, "return g()") == "local A = 1\nfunction g() return A end\n"
    assert needed_lib(lib, "return h()") == "G = { 1 }\nlocal function h() return G end\n"


def test_comments_are_cut_outside_strings_only() -> None:
    assert _code("x = 'a--b' -- note") == "x = 'a--b' "
    assert _code('y = "q\\"--" .. z -- c') == 'y = "q\\"--" .. z '
    assert _code("-- all comment") == ""


def test_every_script_gets_every_definition_it_uses() -> None:
    lib, bodies = _read_lua()
    _, chunks = _chunks(lib)
    defined = {name for name, _ in chunks}
    assert {"take", "finalize", "enqueue_plan", "now_ms"} <= defined
    for name in _SCRIPT_NAMES:
        part = needed_lib(lib, bodies[name])
        kept = set(_defs(part))
        used = set(re.findall(r"[A-Za-z_]\w*", _code(part + "\n" + bodies[name]))) & defined
        assert used <= kept, (name, used - kept)
    # The lean scripts really are lean (the point of it).
    assert "local function take" not in needed_lib(lib, bodies["enqueue_run"])
    assert "local function enqueue_plan" not in needed_lib(lib, bodies["enqueue_run"])
    assert "local function enqueue_plan" in needed_lib(lib, bodies["fire_cron"])


HELPERS = """local function k_run(tag, id) return tag .. ':run:' .. id end
local function k_two(tag, wf)
  return tag .. ':' .. #wf .. ':' .. wf
end
local function failed(r) return type(r) == 'table' and r.err ~= nil end
local function mark(tag, q) return not failed(redis.pcall('ZADD', k_run(tag, 'x'), 1, q)) end
local function ms(n) if n == NOW then return NOW_S end return n end
"""


def test_calls_of_one_expression_helpers_are_written_out() -> None:
    out = inline_helpers(HELPERS, "local k = k_run(t, ARGV[2] .. 'x')\nreturn k_run(t, f[1])")
    assert out == "local k = (t .. ':run:' .. (ARGV[2] .. 'x'))\nreturn (t .. ':run:' .. f[1])"
    # nested, and a helper's own calls of helpers
    assert inline_helpers(HELPERS, "x = k_run(k_run(t, a), b)") == (
        "x = (((t .. ':run:' .. a)) .. ':run:' .. b)"
    )
    assert inline_helpers(HELPERS, "if mark(t, q) then end") == (
        "if (not failed(redis.pcall('ZADD', (t .. ':run:' .. 'x'), 1, q))) then end"
    )
    assert inline_helpers(HELPERS, "y = ms(1)") == "y = ms(1)"  # not one expression


def test_an_argument_with_a_call_is_never_repeated_nor_dropped() -> None:
    assert inline_helpers(HELPERS, "a = k_two(t, w)") == "a = (t .. ':' .. #w .. ':' .. w)"
    assert inline_helpers(HELPERS, "a = k_two(t, g(w))") == "a = k_two(t, g(w))"
    assert inline_helpers(HELPERS, "a = failed(r)") == "a = (type(r) == 'table' and r.err ~= nil)"
    assert inline_helpers(HELPERS, "a = failed(redis.pcall('GET', k))") == (
        "a = failed(redis.pcall('GET', k))"
    )


def test_statements_strings_comments_fields_and_definitions_stay() -> None:
    for text in (
        "mark(t, q)\n",  # a call as a statement: its value is not used
        "x = 'k_run(t, i)' -- k_run(t, i)\n",
        "x = obj.k_run(t, i) .. obj:k_run(t, i)\n",
        "local function k_run(tag, id) return 1 end\n",
    ):
        assert inline_helpers(HELPERS, text) == text


def test_built_scripts_keep_their_lines_and_lose_the_key_helpers() -> None:
    lib, bodies = _read_lua()
    assert inline_helpers(lib, lib).count("\n") == lib.count("\n")
    for name in _SCRIPT_NAMES:
        assert inline_helpers(lib, bodies[name]).count("\n") == bodies[name].count("\n")
    for name in ("claim_run", "finalize_run"):
        text = load_sources((7, 0))[name]
        assert not re.findall(r"^local function (k_\w+|int_str)\b", text, re.M), name


def test_no_local_hides_a_name_that_a_written_out_expression_uses() -> None:
    """A helper's expression written out at a call is read in the caller's scope: a
    local there named as a global or helper it uses would change its meaning."""
    lib, bodies = _read_lua()
    used: set[str] = set()
    for m in re.finditer(
        r"^local function (\w+)\(([\w, ]*)\)\s*return ([^\n]+?)\s*\bend\n", lib, re.M
    ):
        params = {p.strip() for p in m.group(2).split(",")}
        expr = re.sub(r"'[^']*'", "", _code(m.group(3)))  # (no quote in these strings)
        used |= set(re.findall(r"(?<![.:\w])[A-Za-z_]\w*", expr)) - params
    used -= {"and", "or", "not", "nil", "false", "true"}
    assert {"string", "type", "redis"} <= used
    for text in (lib, *bodies.values()):
        code = _code(text)
        declared = set(re.findall(r"\blocal\s+(?!function\b)([\w, ]+?)\s*(?:=|\n)", code))
        names = {n.strip() for group in declared for n in group.split(",")}
        names |= {p.strip() for ps in re.findall(r"function\s*\w*\(([^)]*)\)", code)
                  for p in ps.split(",")}  # fmt: skip
        for group in re.findall(r"\bfor\s+([\w, ]+?)\s+(?:=|in)\b", code):
            names |= {n.strip() for n in group.split(",")}
        assert not names & used, names & used


# The helpers made on first use (exit_helpers in _lib.lua, retry_helpers in
# _lib_retry.lua, claim_faults in _lib_runs.lua): outside its maker, each is
# reached through the maker (`exit_helpers().wake(...)`) or a local bound from it.
_LAZY = {
    "exit_helpers": (
        "release_parked",
        "wake",
        "notify_parent",
        "notify_waiters",
        "record_attempt",
        "expire_idempotency",
    ),
    "retry_helpers": ("retry", "requeue"),
    "claim_faults": ("fail_corrupt", "give_back"),
}


def _bare_calls(code: str, name: str) -> list[str]:
    return re.findall(rf"(?<![.\w]){name}\s*\(", code)


def test_lazy_helpers_are_reached_through_their_makers() -> None:
    lib, bodies = _read_lua()
    _, chunks = _chunks(lib)
    defined = {n for n, _ in chunks}
    outside = []
    for maker, names in _LAZY.items():
        assert maker in defined
        for name in names:
            assert name not in defined, name  # not made up front by every script using it
    for chunk_name, text in chunks:
        if chunk_name in _LAZY:
            continue
        outside.append((chunk_name, _code(text)))
    outside += [(n, _code(bodies[n])) for n in _SCRIPT_NAMES]
    for where, code in outside:
        for maker, names in _LAZY.items():
            for name in names:
                if not _bare_calls(code, name):
                    continue
                # a local bound from the maker (`local wake, x = h.wake, h.x`)
                bound = re.search(rf"^\s*local\b[^\n]*\b{name}\b[^\n]*=", code, re.MULTILINE)
                assert bound and maker + "()" in code, (where, name)
    # the steady-state claim and the one-by-one enqueue make none of them up front
    for script in ("claim_run", "enqueue_run"):
        text = load_sources((7, 0))[script]
        for names in _LAZY.values():
            for name in names:
                assert f"\nlocal function {name}(" not in text, (script, name)


def test_inline_constants_writes_out_numbers_in_code_only() -> None:
    from redflow_mp.luasrc import inline_constants

    lib = (
        "local CAP = 64\n"
        "local MOVED = 5\n"
        "MOVED = 6\n"  # assigned again: no constant
        "local function f(n) return n < CAP end -- CAP in a comment\n"
        "local function g() return 'CAP', t.CAP, MOVED end\n"
    )
    out = inline_constants(lib, lib)
    assert "local CAP = 64\n" in out  # the definition stays (needed_lib drops it unused)
    assert "return n < 64 end -- CAP in a comment" in out
    assert "return 'CAP', t.CAP, MOVED end" in out
    assert "MOVED = 6" in out
    # a script that declares or assigns the name itself keeps it
    assert inline_constants(lib, "local CAP = 3\nreturn CAP") == "local CAP = 3\nreturn CAP"
    assert inline_constants(lib, "CAP = 3\nreturn CAP") == "CAP = 3\nreturn CAP"
    assert inline_constants(lib, "return CAP + 1") == "return 64 + 1"
    # written out, the constant's definition is not sent with the script
    assert "local CAP" not in needed_lib(out, inline_constants(lib, "return CAP"))
