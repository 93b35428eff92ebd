"""luasrc.needed_lib: each script is sent with the library definitions it uses,
transitively and in order, and nothing it uses is left out."""

from __future__ import annotations

import re

from redflow_mp.luafiles import SCRIPT_NAMES as _SCRIPT_NAMES
from redflow_mp.luafiles import read_lua as _read_lua
from redflow_mp.luasrc import _chunks, _code, needed_lib

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
    assert {"take", "finalize", "enqueue", "now_ms"} <= defined
    for name in _SCRIPT_NAMES:
        part = needed_lib(lib, bodies[name])
        kept = set(_defs(part))
        used = set(re.findall(r"[A-Za-z_]\w*", _code(part + "\n" + bodies[name]))) & defined
        assert used <= kept, (name, used - kept)
    # The lean scripts really are lean (the point of it).
    assert "local function take" not in needed_lib(lib, bodies["enqueue_run"])
    assert "local function enqueue(" in needed_lib(lib, bodies["fire_cron"])
