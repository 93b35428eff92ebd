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
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["needed_lib"]

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
