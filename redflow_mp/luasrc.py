"""Which part of ``lua/_lib.lua`` each script needs (pure text processing).

An ``EVALSHA`` runs the whole script text on every call, including the shared
helpers prefixed to it: each ``local function`` of the library is a closure
created anew on every call (about 6 µs per call for the whole library on a
2-core VM, most of an enqueue's fixed cost). So each script is sent with only
the top-level definitions of the library it references, directly or through
another definition, in their original order (a Lua local must be defined
before the code that uses it, which the library's order already satisfies).

A top-level definition is a line starting at column 0 with ``local function
NAME``, ``local NAME``, ``function NAME`` or ``NAME =`` (a global); it extends to
the next one. References are found
by name (whole words, comments left out), so a name that also appears in a
string only ever adds a definition, never loses one. The function library (``FUNCTION
LOAD``) keeps the whole library: it is built once per server.

Before that, ``inline_helpers`` writes each call of a helper whose whole body is
one returned expression (the ``k_*`` key builders, ``int_str``, ``failed``...) as
that expression, in parentheses, its arguments in place of its parameters: such a
helper then costs an EVALSHA no closure, and its callers no upvalue (a closure's
capture of an outer local walks the list of open upvalues in Lua 5.1, and the key
builders, defined first, were captured by nearly every helper: 42,000 of a claim's
334,000 instructions; docs/benchmarks.md). An argument goes in once per use of its
parameter, so a parameter used more or less than once takes only an argument
without a call (no side effect to repeat or lose); otherwise the call stays (and
the helper with it). Calls are rewritten within their line: line numbers in
errors stay those of the text without the rewriting.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["inline_constants", "inline_helpers", "needed_lib"]

_DEF = re.compile(
    r"^(?:local\s+(?:function\s+)?|function\s+|(?=[A-Za-z_][A-Za-z0-9_]*\s*=[^=]))"
    r"([A-Za-z_][A-Za-z0-9_]*)",
    re.MULTILINE,
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# A quoted string (kept whole, escapes respected) or a ``--`` comment to the end
# of its line (dropped): one pass of the regex engine over the text.
_STRING_OR_COMMENT = re.compile(r"""('(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")|--[^\n]*""")


def _code(text: str) -> str:
    """``text`` without its ``--`` comments (quotes respected; a line's comment ends it)."""
    return _STRING_OR_COMMENT.sub(lambda m: m.group(1) or "", text)


def _chunks(lib: str) -> tuple[str, list[tuple[str, str]]]:
    """(text before the first definition, [(name, text of its definition)])."""
    starts = list(_DEF.finditer(lib))
    if not starts:
        return lib, []
    head = lib[: starts[0].start()]
    out = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(lib)
        out.append((m.group(1), lib[m.start() : end]))
    return head, out


@lru_cache(maxsize=4)
def _index(lib: str) -> tuple[str, list[tuple[str, str]], frozenset[str], list[set[str]]]:
    """``lib`` split once: (head, definitions, names defined, names each one uses)."""
    head, chunks = _chunks(lib)
    defined = frozenset(name for name, _ in chunks)
    refs = [set(_WORD.findall(_code(text))) & defined for _, text in chunks]
    return head, chunks, defined, refs


@lru_cache(maxsize=64)
def needed_lib(lib: str, body: str) -> str:
    """The part of ``lib`` that ``body`` needs: every definition it references,
    transitively, in the library's order (a name defined twice keeps both)."""
    head, chunks, defined, refs = _index(lib)
    wanted = set(_WORD.findall(_code(body))) & defined
    # Later definitions can only use earlier ones: one pass from the end suffices,
    # but names defined twice make a fixed point the simple, safe choice.
    changed = True
    while changed:
        changed = False
        for (name, _), used in zip(chunks, refs, strict=True):
            if name in wanted and not used <= wanted:
                wanted |= used
                changed = True
    kept = [text for name, text in chunks if name in wanted]
    return head + "".join(kept)


# A top-level helper whose body is one returned expression, on its line or the next.
_ONE_EXPR = re.compile(
    r"^local function ([A-Za-z_]\w*)\(([\w, ]*)\)[ \t]*\n?[ \t]*return ([^\n]+?)[ \t]*\n?"
    r"[ \t]*\bend[ \t]*\n",
    re.MULTILINE,
)
# An argument that goes in without parentheses: a name, a field or index of one, a literal.
_ATOM = re.compile(r"[A-Za-z_]\w*(?:\.\w+|\[[\w'\"]+\])*|'[^'\\\n]*'|\d+")
_NAME = re.compile(r"[A-Za-z_]\w*")


def _field(text: str, i: int) -> bool:
    """Whether the name at ``text[i]`` is a field or method (``a.x``, ``a:x``, not ``a..x``)."""
    return i > 0 and (text[i - 1] == ":" or (text[i - 1] == "." and text[i - 2 : i] != ".."))


# What ends the code before a call whose value is used (an expression, not a statement).
_EXPR_CHARS = frozenset("=(,[{+-*/%^<>#.")
_EXPR_WORDS = ("return", "elseif", "while", "until", "and", "not", "or", "if")  # longest first


def _value_used(text: str, i: int, in_expr: bool) -> bool:
    """Whether the call at ``text[i]`` is in an expression (``in_expr``: ``text`` is
    one, so a call at its start is too), not a statement."""
    before = text[max(0, i - 12) : i].rstrip()
    if not before:
        return in_expr and not text[:i].strip()
    if before[-1] in _EXPR_CHARS:
        return True
    for word in _EXPR_WORDS:
        if before.endswith(word):
            k = len(before) - len(word)
            return k == 0 or not (before[k - 1].isalnum() or before[k - 1] == "_")
    return False


def _skip_string(text: str, i: int) -> int:
    """The index after the quoted string that starts at ``text[i]``."""
    quote, j = text[i], i + 1
    while text[j] != quote:
        j += 2 if text[j] == "\\" else 1
    return j + 1


def _split_args(text: str, i: int) -> tuple[list[str], int]:
    """The arguments of the call whose ``(`` is ``text[i]``, and the index after its ``)``."""
    depth, start, args, j = 0, i + 1, [], i
    while True:
        c = text[j]
        if c in "'\"":
            j = _skip_string(text, j)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append(text[start:j].strip())
                return ([] if args == [""] else args), j + 1
        elif c == "," and depth == 1:
            args.append(text[start:j].strip())
            start = j + 1
        j += 1


def _code_names(expr: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of each name in ``expr`` outside strings, not a field (``.x``)."""
    out: list[tuple[int, int, str]] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "'\"":
            i = _skip_string(expr, i)
            continue
        m = _NAME.match(expr, i)
        if m is None:
            i += 1
            continue
        if not _field(expr, i):
            out.append((m.start(), m.end(), m.group(0)))
        i = m.end()
    return out


# A helper's expression as pieces: text, then the index of a parameter (or -1 at
# the end), alternately; and how many times each parameter is used.
_Template = tuple[tuple[tuple[str, int], ...], tuple[int, ...]]
_Helpers = dict[str, _Template]
# A complete string, or a comment to the end of the line.
_STRING_OR_COMMENT_START = re.compile(r"""'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|--""")


def _in_code(text: str, i: int) -> bool:
    """Whether ``text[i]`` is code: not in a string or a comment (neither spans lines)."""
    line = text[text.rfind("\n", 0, i) + 1 : i]
    if "'" not in line and '"' not in line and "--" not in line:
        return True
    for m in _STRING_OR_COMMENT_START.finditer(line):
        if m.group(0) == "--":
            return False
    rest = _STRING_OR_COMMENT_START.sub("", line)
    return "'" not in rest and '"' not in rest


def _template(params: tuple[str, ...], expr: str) -> _Template:
    pieces: list[tuple[str, int]] = []
    uses = [0] * len(params)
    last = 0
    for start, end, name in _code_names(expr):
        if name in params:
            k = params.index(name)
            uses[k] += 1
            pieces.append((expr[last:start], k))
            last = end
    pieces.append((expr[last:], -1))
    return tuple(pieces), tuple(uses)


@lru_cache(maxsize=4)
def _one_expr_helpers(lib: str) -> _Helpers:
    """name -> template of the expression of each helper ``inline_helpers`` rewrites
    (its own calls of such helpers written out)."""
    raw: dict[str, tuple[tuple[str, ...], str]] = {}
    for m in _ONE_EXPR.finditer(lib):
        params = tuple(p.strip() for p in m.group(2).split(",") if p.strip())
        expr = m.group(3)
        if "--" in _code(expr) or len(_split_args(f"({expr})", 0)[0]) != 1:
            continue  # a comment, or more than one value returned
        if any(n == m.group(1) for _, _, n in _code_names(expr)):
            continue  # recursive
        raw[m.group(1)] = (params, expr)
    found: _Helpers = {}
    for name, (params, expr) in raw.items():
        # in order: a helper's expression uses only helpers defined before it
        found[name] = _template(params, _inline(expr, found, True))
    return found


def _expand(template: _Template, args: list[str]) -> str | None:
    """The expression with ``args`` in place of its parameters; None when that could
    change what the call does (an argument with a call in it used other than once)."""
    pieces, uses = template
    if len(args) != len(uses):
        return None
    for n, a in zip(uses, args, strict=True):
        if n != 1 and ("(" in a or "..." in a):
            return None
    out = ["("]
    for text, k in pieces:
        out.append(text)
        if k >= 0:
            arg = args[k]
            out.append(arg if _ATOM.fullmatch(arg) else f"({arg})")
    out.append(")")
    return "".join(out)


def _inline(text: str, helpers: _Helpers, in_expr: bool) -> str:
    """``text`` with the calls of ``helpers`` written out (``in_expr``: ``text`` is an
    expression, so a call at its start is one whose value is used)."""
    hits: list[tuple[int, str]] = []
    for name in helpers:  # str.find: a third of the time of one regex of the names
        at = name + "("
        i = text.find(at)
        while i >= 0:
            hits.append((i, name))
            i = text.find(at, i + 1)
    out: list[str] = []
    done_to = 0
    for i, name in sorted(hits):
        if i < done_to or (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
            continue  # in a call written out already, or the end of another name
        if _field(text, i) or not _in_code(text, i) or not _value_used(text, i, in_expr):
            continue  # a field, a string or a comment; a statement: no value
        args, end = _split_args(text, i + len(name))
        args = [_inline(a, helpers, True) if "(" in a else a for a in args]
        done = _expand(helpers[name], args)
        if done is None:
            continue  # the call stays; the calls in its arguments are looked at next
        out += [text[done_to:i], done]
        done_to = end
    out.append(text[done_to:])
    return "".join(out)


@lru_cache(maxsize=64)
def inline_helpers(lib: str, text: str) -> str:
    """``text`` (the library or a script) with the calls of ``lib``'s one-expression
    helpers written as their expressions (see the module's docstring)."""
    return _inline(text, _one_expr_helpers(lib), False)


# A top-level constant of the library: ``local NAME = <digits>`` (an upper-case name).
_CONST = re.compile(r"^local ([A-Z][A-Z0-9_]*) = (\d+)[ \t]*(?:--[^\n]*)?$", re.MULTILINE)
# Text that a string or a comment spans lines with (a long bracket ``[[``, ``[=[``,
# ``--[[``; a backslash-newline in a quoted string): the line-wise view of strings
# and comments (``_in_code``) would see code in it, so no constant is written out.
_SPANS_LINES = re.compile(r"\[=*\[|\\\n")
# The next code line continues an expression (``local N = 5`` then ``+ 1``).
_CONTINUED = re.compile(r"(?:[ \t]*(?:--[^\n]*)?\n)*[ \t]*(?:-(?!-)|[+*/%^.<>=~(\[{,]|and\b|or\b)")


def _shadows(code: str, name: str) -> int:
    """How many times ``code`` declares ``name`` otherwise than at the top level
    with ``local``: a function's parameter, a ``for`` variable."""
    params = re.findall(rf"\bfunction\b[\w.:\s]*\([\w\s,.]*\b{name}\b", code)
    loops = re.findall(rf"\bfor\s[\w\s,]*\b{name}\b", code)
    return len(params) + len(loops)


@lru_cache(maxsize=4)
def _constants(lib: str) -> dict[str, str]:
    """name -> digits of each constant of ``lib`` that ``inline_constants`` writes
    out: declared once (no other ``local NAME``, no parameter or ``for`` variable of
    that name, no assignment ``NAME = ...``), its value those digits alone (not the
    start of an expression that goes on on the next line)."""
    if _SPANS_LINES.search(lib):
        return {}
    code = _code(lib)
    found: dict[str, str] = {}
    for m in _CONST.finditer(lib):
        name = m.group(1)
        if _CONTINUED.match(lib, m.end()):
            continue
        declared = re.findall(rf"\blocal\s[\w\s,]*\b{name}\b", code)
        assigned = re.findall(rf"(?<![\w.]){name}\s*=(?!=)", code)
        if len(declared) == 1 and len(assigned) == 1 and not _shadows(code, name):
            found[name] = m.group(2)
    return found


@lru_cache(maxsize=64)
def inline_constants(lib: str, text: str) -> str:
    """``text`` with each use of ``lib``'s constants (:func:`_constants`) written as
    its digits: a closure of an EVALSHA that used one captured it (an upvalue,
    about 100 redis-server instructions a capture, more for one defined early: a
    capture walks Lua 5.1's list of open upvalues), and its definition then goes
    with ``needed_lib`` as unused. A name that ``text`` declares or assigns itself
    (other than the library's definition) is left alone, and so is all of a
    ``text`` with a string or comment spanning lines. Line numbers stay."""
    if _SPANS_LINES.search(text):
        return text
    consts = dict(_constants(lib))
    code = _code(text)
    for name in list(consts):
        if re.search(rf"(?<![\w.]){name}\s*=(?!=)", code.replace(f"local {name} =", "", 1)):
            del consts[name]  # assigned in `text`
        elif _shadows(code, name) or len(re.findall(rf"\blocal\s[\w\s,]*\b{name}\b", code)) > (
            1 if re.search(rf"^local {name} = {consts[name]}\b", code, re.MULTILINE) else 0
        ):
            del consts[name]  # declared in `text` other than as the library does
    if not consts:
        return text
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, consts)) + r")\b")
    out: list[str] = []
    done_to = 0
    for m in pattern.finditer(text):
        i = m.start()
        if not _in_code(text, i):
            continue
        line_start = text.rfind("\n", 0, i) + 1
        if text[line_start:i] == "local " and re.match(r"\s*=(?!=)", text[m.end() :]):
            continue  # its definition (kept: unused, needed_lib drops it)
        # (a space before a following ``..``: ``64..x`` would be a malformed number)
        digits = consts[m.group(1)] + (" " if text.startswith(".", m.end()) else "")
        out += [text[done_to:i], digits]
        done_to = m.end()
    out.append(text[done_to:])
    return "".join(out)
