"""luasrc.inline_constants writes the library's numeric constants into the EVALSHA
texts as digits: a script so transformed must do on a real server what the text as
written does, for every way Lua can spell a name that is not that constant's use
(a string or comment spanning lines, a parameter or loop variable of the same
name, a constant whose expression goes on on the next line, a ``..`` after it)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from redflow_mp.luafiles import load_sources, read_lua
from redflow_mp.luasrc import inline_constants, needed_lib

pytestmark = pytest.mark.timeout(60)

LIB = "local CAP = 64\nlocal N = 5\n  + 1\nlocal K = 3 -- a comment\n\n-- more\n"
CASES = {
    "long string": "return [[CAP]]",
    "long string, levelled": "return [==[ ]] CAP ]==]",
    "long comment over lines": "--[[ a\nCAP ]] return 'x'",
    "backslash-newline in a string": "return 'a\\\nCAP'",
    "expression on the next line": "return N",
    "parameter of that name": "local function f(CAP) return CAP end return f(3)",
    "parameter on the next line": "local function f(a,\n  CAP) return CAP end return f(1, 3)",
    "for variable": "for _, CAP in ipairs({7}) do return CAP end return 0",
    "numeric for": "for CAP = 8, 8 do return CAP end return 0",
    "concatenation after it": "return CAP..'x'",
    "plain uses": "return {CAP, K, -CAP, 'CAP', CAP * 2}",
}


def _run(raw: redis.Redis, text: str) -> Any:
    try:
        return raw.eval(text, 0)
    except redis.ResponseError as e:
        return ("error", str(e).split(":")[0])


@pytest.mark.parametrize("case", list(CASES))
def test_a_transformed_script_does_what_the_script_as_written_does(
    raw: redis.Redis, case: str
) -> None:
    body = CASES[case]
    written = _run(raw, LIB + body)
    assert not (isinstance(written, tuple) and written[0] == "error"), written
    lib = inline_constants(LIB, LIB)
    body_out = inline_constants(LIB, body)
    sent = needed_lib(lib, body_out) + "\n" + body_out
    assert _run(raw, sent) == written, (case, sent)


def test_the_package_scripts_are_built_with_their_constants_written_out() -> None:
    """(the guards above left the package's own texts as they were: no long
    bracket, no continued constant in lua/*.lua)"""
    raw, _ = read_lua()
    text = load_sources((7, 0, 15))["claim_run"]
    for name in ("BAND", "BELL_CAP", "STEPS_INLINE", "STEPS_INLINE_BYTES", "ATTEMPTS_CAP"):
        assert f"local {name} =" in raw
        assert f"local {name} =" not in text, name
