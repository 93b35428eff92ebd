"""Where a payload holds a NaN or infinite float, which msgspec's JSON writes as
``null``: inputs, event payloads and cron inputs are refused with that place named
(docs/guide.md, "Payloads"). A module of its own so that ``cron`` (which ``codec``
imports) can use it too."""

from __future__ import annotations

import math
from typing import Any

import msgspec

__all__ = ["non_finite_path"]


def non_finite_path(value: Any, data: bytes) -> str | None:
    """Where ``value`` (encoded as ``data``) holds a NaN or infinite float, which
    msgspec writes as ``null``: ``""`` for the value itself, else a subscript path
    such as ``['a'][1]``; None when there is none (always, when ``data`` has no
    ``null``: the common case costs one byte search)."""
    if data.find(b"null") < 0:  # not `in`: bytes' `in` formats a TypeError it catches
        return None
    stack: list[tuple[Any, tuple[Any, ...]]] = [(msgspec.to_builtins(value), ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return "".join(f"[{p!r}]" for p in path)
        elif isinstance(item, dict):
            stack.extend((v, (*path, k)) for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, (*path, i)) for i, v in enumerate(item))
    return None
