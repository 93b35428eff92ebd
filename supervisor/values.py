"""Parsers of setting values (pure): integers, booleans, lists and durations as
they come from TOML, the environment or the command line (``settings.py``
turns a refusal into a ConfigError naming the setting and its source), and the
reading of a config file."""

from __future__ import annotations

import math
import re
from typing import Any

from redflow_mp.errors import ConfigError

__all__ = [
    "_Reason",
    "_did_you_mean",
    "_num",
    "_parse_bool",
    "_parse_int",
    "_parse_list",
    "parse_duration",
    "read_toml",
]

# The longest duration a setting takes (~31 years; 0 means "never" where it can):
# graceful_timeout + kill_grace must fit the drain's timer (setitimer: ~292 years).
MAX_DURATION = 1_000_000_000.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")


class _Reason(ValueError):
    """A refusal whose own message says why (shown instead of "expected ...")."""


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError("not an integer")


def _parse_bool(value: Any, *, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
    raise ValueError("not a boolean")


#: What a backslash escapes in a list written as text: a comma inside an item (the
#: queue "media,hd" is ``media\,hd``), a backslash (the queue ``a\`` before another
#: is ``a\\,b``) and whitespace an item starts or ends with (kept, where unescaped
#: whitespace around an item is dropped: the queue " x" is ``\ x``). Other
#: backslashes are kept as written.
_ESCAPED = frozenset(",\\ \t\n\r\f\v")


def split_text_list(value: str) -> tuple[str, ...]:
    """The items of a comma-separated list (``--queues``, ``REDFLOW_QUEUES``): split
    on unescaped commas, unescaped whitespace around each item dropped, empty
    items left out (see :data:`_ESCAPED`)."""
    items: list[list[tuple[str, bool]]] = [[]]
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in _ESCAPED:
            items[-1].append((value[i + 1], True))
            i += 2
            continue
        if ch == ",":
            items.append([])
        else:
            items[-1].append((ch, False))
        i += 1
    out = []
    for item in items:
        start, end = 0, len(item)
        while start < end and not item[start][1] and item[start][0].isspace():
            start += 1
        while end > start and not item[end - 1][1] and item[end - 1][0].isspace():
            end -= 1
        if start < end:
            out.append("".join(ch for ch, _ in item[start:end]))
    return tuple(out)


def _parse_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return split_text_list(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("not a list of strings")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"30s"`` / ``"7d"``; never NaN
    nor infinite (a TOML ``nan`` or ``inf``, 400 digits): no bound holds those
    back, and a drain's timer (``setitimer``) raised on them at TERM."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    out: float | None = None
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        out = float(m.group(1)) * _UNITS[m.group(2) or ""]
    if out is not None and math.isfinite(out):
        return out
    raise ValueError(f"expected a duration such as 30, '30s', '500ms' or '7d', got {value!r}")


def _did_you_mean(word: str, candidates: list[str]) -> str:
    import difflib  # only for a misspelt name

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def read_toml(path: str) -> dict[str, Any]:
    """The TOML file at ``path``, or a :class:`ConfigError` saying why not."""
    import tomllib  # only with a config file

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:  # a directory, no read permission
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
