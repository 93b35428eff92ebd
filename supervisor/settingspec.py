"""One setting as its field documents it: :class:`Spec`, read from the field's
``Annotated[..., Meta(description=..., extra={...})]``.

Owns what a setting accepts and how a value of it is parsed and checked
(durations with units, whole numbers, booleans in words, lists of names,
choices, bounds, the library's checks of names), the words an error or
``--help`` uses for it, and its environment variable and flag names. It knows
no particular setting: :func:`specs_of` reads them off a struct
(``settingfields.Settings``); loading them from their sources is
``settings.py``'s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import msgspec

from redflow_mp.keys import validate_prefix
from redflow_mp.options import check_name

from . import values
from .values import _num, _parse_bool, _parse_int, _parse_list, _Reason, parse_duration

__all__ = ["ENV_PREFIX", "Spec", "spec_of", "specs_of"]

ENV_PREFIX = "REDFLOW_"
_DAY_MS = 86_400_000  # the bound of a setting in milliseconds (as lease_ms's)

_UNIT_WORDS = {"ms": "milliseconds", "s": "seconds", "MiB": "MiB", "bytes": "bytes"}
_DURATION_FORMS = "a number of seconds or 500ms, 30s, 5m, 2h, 7d"


@dataclass(frozen=True)
class Spec:
    """One setting as its field documents it."""

    name: str
    kind: type  # int, float, str, bool or tuple (of str)
    default: Any
    description: str
    section: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    metavar: str = ""
    flag: str = ""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def duration(self) -> bool:
        return self.unit == "s"

    def accepted(self, *, as_text: bool = True) -> str:
        """What a value may be, in words (for errors and --help). ``as_text``: for
        a value given as text (environment, flag), not a TOML value."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            if not as_text:  # a TOML string is not read as a boolean
                return "true or false, a TOML boolean (unquoted)"
            return "true or false (also 1/0, yes/no, on/off)"
        if self.kind is tuple:
            return "a list of names (comma-separated in text)"
        if self.kind is str:
            return "a string"
        if self.duration:
            text = f"a duration: {_DURATION_FORMS}"
        else:
            unit = _UNIT_WORDS.get(self.unit, "")
            text = "a whole number" + (f" of {unit}" if unit else "")
        bounds = []
        if self.min is not None:
            bounds.append(f"at least {_num(self.min)}")
        if self.max is not None:
            bounds.append(f"at most {_num(self.max)}")
        return text + (", " + " and ".join(bounds) if bounds else "")

    def parse(self, value: Any, *, text: bool) -> Any:
        """``value`` converted for this setting; ValueError when it is not accepted.
        ``text``: the value came as a string from the environment or a flag."""
        if self.duration:
            out: Any = parse_duration(value)
        elif self.kind is int:
            out = _parse_int(value)
        elif self.kind is bool:
            out = _parse_bool(value, text=text)
        elif self.kind is tuple:
            out = _parse_list(value)
        else:
            if not isinstance(value, str):
                raise ValueError("not a string")
            out = value
            if self.choices:
                out = value.strip().lower()
                if out not in self.choices:
                    raise ValueError("not a choice")
        if self.min is not None and out < self.min:
            raise ValueError("too small")
        if self.max is not None and out > self.max:
            raise ValueError("too large")
        _check_names(self.name, out)
        return out


def _check_names(name: str, value: Any) -> None:
    """The prefix, app and queue names as the library checks them (non-UTF-8 text,
    length), as a bad setting rather than a traceback at the first use."""
    try:
        if name == "prefix":
            validate_prefix(value)
        elif name == "app" and value.strip():  # blank: "--app is required" (cli.py)
            check_name(value, "app")
        elif name == "queues":
            for queue in value:
                check_name(queue, "queue")
    except (ValueError, TypeError) as exc:
        raise _Reason(str(exc)) from None


def spec_of(field: msgspec.structs.FieldInfo) -> Spec:
    """The :class:`Spec` a field of a settings struct documents (``Annotated``)."""
    base, meta = get_args(field.type)
    extra: dict[str, Any] = dict(meta.extra or {})
    choices: tuple[str, ...] = ()
    kind: type = base
    if get_origin(base) is Literal:
        choices, kind = tuple(get_args(base)), str
    elif get_origin(base) is tuple:
        kind = tuple
    if extra.get("unit") in ("s", "ms"):  # a duration: bounded above too
        extra.setdefault("max", values.MAX_DURATION if extra["unit"] == "s" else _DAY_MS)
    return Spec(
        name=field.name,
        kind=kind,
        default=field.default,
        description=meta.description or "",
        section=extra.pop("section"),
        choices=choices,
        **extra,
    )


@functools.cache
def specs_of(struct: type[msgspec.Struct]) -> tuple[Spec, ...]:
    """Every field of ``struct`` as a :class:`Spec`, in its order."""
    return tuple(spec_of(f) for f in msgspec.structs.fields(struct))
