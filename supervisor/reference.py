"""The reference settings file, ``conf/redflow.toml``: every setting with its
documentation (the same text as ``--help``) and its default, generated from the
:class:`~supervisor.settings.Settings` fields. A test keeps the file equal to
:func:`reference_toml`; regenerate it with::

    python -c "import sys; from redflow_supervisor.reference import reference_toml; \\
        sys.stdout.write(reference_toml())" > conf/redflow.toml
"""

from __future__ import annotations

import textwrap
from typing import Any

import msgspec

from .settings import SECTIONS, Spec, specs
from .settingspec import _UNIT_WORDS
from .values import _num

__all__ = ["reference_toml"]

_HEADER = """\
# redflow-supervisor settings: every key, with its default.
# Generated from the Settings fields in supervisor/settingfields.py (their descriptions are
# also the --help text); a test keeps this file equal to reference_toml().
#
# Precedence: defaults < this file (--config PATH or $REDFLOW_CONFIG)
#             < environment (REDFLOW_<KEY>, e.g. REDFLOW_LEASE_MS=8000)
#             < command-line flags (--lease-ms 8000).
# Unknown keys are errors that name the key and where it came from. Names are flat
# and unique; grouping them under tables ([supervisor] ...) is allowed and ignored,
# as is a group in the environment (REDFLOW_SUPERVISOR__LEASE_MS).
# Durations (keys documented "seconds") also accept "500ms", "30s", "5m", "2h", "7d";
# each is at most 1000000000 s (about 31 years), and nan or inf are refused.
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()  # a JSON string is a TOML basic string
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _comment(spec: Spec) -> list[str]:
    text = spec.description
    if spec.choices:
        text += " One of: " + ", ".join(spec.choices) + "."
    elif spec.duration:
        text += " Unit: seconds."
    elif spec.unit:
        text += f" Unit: {_UNIT_WORDS.get(spec.unit, spec.unit)}."
    return textwrap.wrap(text, width=86, initial_indent="# ", subsequent_indent="# ")


def reference_toml() -> str:
    """``conf/redflow.toml``: every setting with its documentation and default."""
    lines = [_HEADER.rstrip("\n")]
    section = None
    for spec in specs():
        if spec.section != section:
            section = spec.section
            title = f"# --- {SECTIONS[section]} "
            lines += ["", title + "-" * max(3, 86 - len(title))]
        lines += _comment(spec)
        lines.append(f"{spec.name} = {_toml_value(spec.default)}")
    return "\n".join(lines) + "\n"


def fmt_default(spec: Spec) -> str:
    """The default as a person reads it: ``7d``, ``30s``, ``5000``, ``"redflow"``."""
    value = spec.default
    if spec.duration:
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if value and value % size == 0:
                return f"{_num(value / size)}{unit}"
        return f"{_num(value)}s"
    if spec.kind is tuple:
        return ",".join(value) or "(none)"
    if spec.kind is bool:
        return "true" if value else "false"
    if spec.kind is str:
        return repr(value) if value else "(empty)"
    return str(value)
