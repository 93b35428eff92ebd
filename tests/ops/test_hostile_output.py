"""Run data a neighbour of the same Redis controls reaches the operator's terminal
only as escapes: the outputs ``redflow run --wait`` and ``runs watch`` print, the
run id ``runs list`` names as the next page's cursor, ``--json`` output, an error
quoting a run's status. JSON escapes only the characters below U+0020, so C1
controls (U+009B is an 8-bit CSI to xterm) and bidi overrides (U+202E) went raw
while a table's cells were cleaned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from redflow_mp import Client, Context, Registry, define_workflow
from tests.helpers import WorkerPool
from tests.ops.conftest import Result
from tests.ops.flows import make_registry

#: An 8-bit CSI (red), a right-to-left override, a line separator, an OSC 8 link.
HOSTILE = "\u009b31mred\u202etxt.exe\u2028\u009d8;;http://x\u009c"
RAW = ("\u009b", "\u202e", "\u2028", "\u009d", "\u009c")


@define_workflow("ops-echo", queue="ops", max_concurrency=4)
def ops_echo(ctx: Context[Any]) -> Any:
    return ctx.input


@pytest.fixture()
def registry() -> Registry:
    reg = make_registry()
    reg.add(ops_echo)
    return reg


def _raw_in(res: Result) -> list[str]:
    return [ch for ch in RAW if ch in res.out or ch in res.err]


def test_runs_watch_prints_a_hostile_output_escaped(
    synced: Client, workers: WorkerPool, redflow: Any
) -> None:
    workers.start(queues=["ops"])
    handle = synced.run_by_name("ops-echo", {"note": HOSTILE})
    handle.result(timeout=15)
    res = redflow("runs", "watch", handle.id, "--timeout", "15")
    assert res.code == 0, res
    assert not _raw_in(res), f"raw controls in `runs watch`: {_raw_in(res)!r}\n{res.out}"
    assert "\\x9b31mred\\u202etxt.exe" in res.out, res.out


def test_run_wait_prints_a_hostile_output_escaped(
    synced: Client, workers: WorkerPool, redflow: Any
) -> None:
    workers.start(queues=["ops"])
    res = redflow("run", "ops-echo", "--input", f'{{"note": "{HOSTILE}"}}', "--wait")
    assert res.code == 0, res
    assert not _raw_in(res), f"raw controls in `run --wait`: {_raw_in(res)!r}\n{res.out}"
    assert "\\x9b31mred\\u202etxt.exe" in res.out, res.out


def test_runs_list_names_a_hostile_cursor_escaped(synced: Client, raw: Any, redflow: Any) -> None:
    """The next page's cursor (the last run id listed) on stderr: a run whose id a
    neighbour wrote itself (its hash and its entry in the index, newest)."""
    handle = synced.run_by_name("ops-parked", {"n": 1}, queue_override="nobody")
    keys = synced.keys
    evil = "01\u009b2J\u202e" + handle.id[6:]
    fields = raw.hgetall(keys.run(handle.id))
    fields[b"id"] = evil.encode()
    raw.hset(keys.run(evil), mapping=fields)
    raw.zadd(keys.runs_created, {evil: int(fields[b"createdAt"]) + 1})
    res = redflow("runs", "list", "--limit", "1")
    assert res.code == 0, res
    assert not _raw_in(res), f"raw controls in `runs list`: {_raw_in(res)!r}\n{res.err}"
    assert "--after 01\\x9b2J\\u202e" in res.err, res


def test_json_output_escapes_what_a_terminal_would_act_on(
    synced: Client, workers: WorkerPool, redflow: Any
) -> None:
    """``--json`` goes to terminals too: the characters a table cleans are written
    as ``\\u`` escapes, the same JSON value (a script reads the exact data)."""
    workers.start(queues=["ops"])
    handle = synced.run_by_name("ops-echo", {"note": HOSTILE, "astral": "\U000f0000"})
    handle.result(timeout=15)
    for args in (
        ("runs", "list", "--json"),
        ("runs", "show", handle.id, "--json"),
        ("runs", "watch", handle.id, "--json"),
    ):
        res = redflow(*args)
        assert res.code == 0, res
        raw = [*_raw_in(res), *(["\U000f0000"] if "\U000f0000" in res.out else [])]
        assert not raw, f"raw controls in `{' '.join(args)}`: {raw!r}\n{res.out[:2000]}"
        text = res.out
        values = (
            [json.loads(line) for line in text.splitlines()]
            if args[1] == "watch"
            else [json.loads(text)]
        )
        assert HOSTILE in json.dumps(values, ensure_ascii=False), values


def test_an_error_naming_a_hostile_status_is_printed_escaped(
    synced: Client, raw: Any, redflow: Any
) -> None:
    """``runs resume`` of a run whose status a neighbour wrote: the refusal names
    the status (``RunNotResumableError``); it reached stderr raw (an OSC setting
    the terminal's title, a BEL, an 8-bit CSI)."""
    handle = synced.run_by_name("ops-parked", {"n": 1}, queue_override="nobody")
    raw.hset(synced.keys.run(handle.id), "status", "\x1b]0;PWN\x07\u009b2J")
    res = redflow("runs", "resume", handle.id)
    assert res.code == 1, res
    shown = [ch for ch in ("\x1b", "\x07", "\u009b") if ch in res.err]
    assert not shown, f"raw controls in the error of `runs resume`: {shown!r}\n{res.err}"
    assert "is \\x1b]0;PWN\\x07\\x9b2J; only a failed or canceled run" in res.err, res
