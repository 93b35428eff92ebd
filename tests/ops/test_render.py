"""Formatting helpers of the ``redflow`` command (pure code)."""

from __future__ import annotations

import json

import msgspec
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


def test_run_detail_shows_the_attempts_and_steps_in_flight() -> None:
    from redflow_mp.codec import AttemptState, ErrorInfo, RunState, RunStatus, StepState
    from redflow_mp.codec import StepStatus as S

    t = 1_700_000_000_000
    attempts = [
        AttemptState(
            attempt=1,
            outcome="retried",
            started_at=t,
            finished_at=t + 1_500,
            error=ErrorInfo(type="KeyError", message="'k'\x1b[31m"),
        ),
        AttemptState(
            attempt=2,
            outcome="requeued",
            started_at=t + 2_000,
            finished_at=t + 2_100,
            cause="worker killed by SIGKILL",
        ),
    ]
    state = RunState(
        id="r1",
        workflow="wf",
        queue="q",
        status=RunStatus.RUNNING,
        attempt=2,
        max_attempts=3,
        created_at=t,
        started_at=t,
        attempt_started_at=t + 3_000,
        attempts=attempts,
    )
    steps = [
        StepState(name="a", status=S.SUCCEEDED, started_at=t, finished_at=t + 10),
        StepState(name="b", status=S.RUNNING, started_at=t + 3_100, attempt=2),
        StepState(name="c", status=S.RUNNING, started_at=t + 1_000, attempt=1),
    ]
    out = render.run_detail_text(state, steps, None, t + 4_000)
    step_rows = out.split("steps:")[1].split("attempts:")[0]
    rows = [line.split()[1:3] for line in step_rows.strip().splitlines()[1:]]
    # b is in flight; c was left running by attempt 1 (its worker was lost)
    assert rows == [["a", "succeeded"], ["b", "running"], ["c", "interrupted"]]
    history = out.split("attempts:")[1].strip().splitlines()
    assert history[0].split() == [
        "#",
        "OUTCOME",
        "STARTED",
        "FINISHED",
        "DURATION",
        "ERROR",
        "/",
        "CAUSE",
    ]
    assert history[1].split()[:2] == ["1", "retried"] and "KeyError: 'k'\\x1b[31m" in history[1]
    assert history[2].split()[:2] == ["2", "requeued"] and "worker killed by SIGKILL" in history[2]
    assert history[3].split()[:2] == ["2", "running"] and history[3].split()[-1] == "1.0s"
    assert render.attempt_text(attempts[1]) == (
        "attempt 2 requeued after 100ms: worker killed by SIGKILL"
    )


@pytest.mark.parametrize(
    "values",
    [
        [],
        [{"a": 1}],
        [{"a": [], "b": {}, "c": "x\ny", "d": None}, {"e": [1, {"f": 2}]}, 3, "s"],
    ],
)
def test_streamed_json_is_the_same_text(values: list[object]) -> None:
    """``runs list --json`` prints its array piece by piece: the same text."""
    assert "\n".join(render.json_array_lines(iter(values))) == render.to_json(values)


def test_streamed_table_is_the_same_text_up_to_its_first_rows() -> None:
    rows = [("日本", "x"), ("a" * 10, "y"), ("b", "z" * 100)]
    streamed = list(render.table_lines(("A", "B"), iter(rows), first=3))
    assert "\n".join(streamed) == render.table(("A", "B"), rows)
    # past the first rows, a longer cell widens its column from its row on
    later = list(render.table_lines(("A", "B"), iter([("a", "x"), ("abc", "y")]), first=1))
    assert later == ["A  B", "a  x", "abc  y"]


def test_json_text_escapes_what_clean_escapes_and_keeps_the_value() -> None:
    value = {
        "k\u202e": ["\u009b31m", "\u2028\u2029", "\U000f0000 \U0010fffd", "ü 中 \u00a0", "\x1b"]
    }
    encoded = msgspec.json.encode(value).decode()
    safe = render.json_text(encoded)
    assert safe.isascii() is False  # ü and 中 stay as they are
    assert not any(render.clean(ch) != ch for ch in safe if ch != "\\"), safe
    assert json.loads(safe) == value
    assert render.json_text('{"a": 1}') == '{"a": 1}'


def test_a_supervisor_of_thousands_of_queues_shows_a_few_names_and_a_count() -> None:
    """``redflow supervisors`` printed every queue a supervisor serves on its head
    line: 5,000 queues made one line of 29 KB, the line's other fields (rss, up,
    seen, version) at its far end. The text names the first 20 and counts the
    rest (``--json`` lists them all)."""
    from redflow_supervisor.status import SupervisorStatus

    sup = SupervisorStatus(
        id="h:1",
        app="a",
        host="h",
        pid=1,
        started_at=0,
        updated_at=1_000,
        mode="running",
        leader=False,
        queues=[f"q{i}" for i in range(5000)],
        procs=2,
    )
    head = render.supervisors_text([sup], 2_000).splitlines()[0]
    shown = ",".join(f"q{i}" for i in range(20))
    assert f"queues {shown} and 4,980 more (--json lists them)  rss" in head
    assert len(head) < 400
    few = msgspec.structs.replace(sup, queues=[f"q{i}" for i in range(20)])
    assert f"queues {shown}  rss" in render.supervisors_text([few], 2_000)
