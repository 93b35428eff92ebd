"""Formatting helpers of the ``redflow`` command (pure code)."""

from __future__ import annotations

import pytest

from redflow_supervisor.ops import render


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (None, "-"),
        (0, "0ms"),
        (999, "999ms"),
        (1234, "1.2s"),
        (59_949, "59.9s"),
        (65_000, "1m05s"),
        (3_600_000 + 120_000, "1h02m"),
        (2 * 86_400_000 + 3 * 3_600_000, "2d03h"),
        (-5, "0ms"),
    ],
)
def test_fmt_duration(ms: int | None, shown: str) -> None:
    assert render.fmt_duration(ms) == shown


def test_fmt_relative_and_bytes() -> None:
    assert render.fmt_relative(10_000, 4_000) == "in 6.0s"
    assert render.fmt_relative(1_000, 4_000) == "3.0s ago"
    assert render.fmt_relative(None, 4_000) == "-"
    assert render.fmt_bytes(0) == "-"
    assert render.fmt_bytes(512) == "512 B"
    assert render.fmt_bytes(3 * 1024 * 1024 + 100_000) == "3.1 MiB"


def test_clean_escapes_terminal_controls() -> None:
    assert render.clean("a\x1b[31mb\x07\u202ec\u200b") == "a\\x1b[31mb\\x07\\u202ec\\u200b"
    assert render.clean("ü 日本 {x} <y>") == "ü 日本 {x} <y>"


def test_table_aligns_wide_characters_and_cuts_long_cells() -> None:
    lines = render.table(("A", "B"), [("日本", "x"), ("ab", "y")]).splitlines()
    assert lines[0].startswith("A ")
    assert [render.display_width(line.split("  ")[0].rstrip()) for line in lines[1:3]] == [4, 2]
    col_x = render.display_width(lines[1][: lines[1].index("x")])
    col_y = render.display_width(lines[2][: lines[2].index("y")])
    assert col_x == col_y == 6  # the same screen column after padding
    (_, cut) = render.table(("A", "B"), [("z" * 100, "w")]).splitlines()
    assert "…" in cut and render.display_width(cut.split("  ")[0]) == render.MAX_CELL


def test_fmt_json_cuts_long_payloads() -> None:
    assert render.fmt_json({"a": 1}) == '{"a":1}'
    cut = render.fmt_json("x" * 50, 10)
    assert cut.startswith('"xxxxxxxxx…') and "52 characters" in cut
