"""``redflow runs show`` of a run with 100,000 step records: the first and the last
steps, a line saying how many are left out, and the count per status, read one
HSCAN page at a time. It decoded every record into a ``StepState`` and printed a
row for each (12-28 s and 182-370 MB, 6.7 MB of text). The steps are written
straight into Redis with the real key layout (``run:<id>:steps``, encoded by
``codec.encode_step``); sizes and memory are asserted, never times."""

from __future__ import annotations

import argparse
import json
import random
import tracemalloc
from typing import Any

import pytest
import redis

from redflow_mp import Client, codec
from redflow_mp.codec import ErrorInfo, StoredStep
from redflow_mp.queries import run_view
from redflow_supervisor.ops.runs import (
    DEFAULT_STEPS_SHOWN,
    WATCH_STEPS,
    cmd_runs_show,
    cmd_runs_watch,
)
from redflow_supervisor.ops.session import Session

pytestmark = pytest.mark.timeout(240)

STEPS = 100_000
T0 = 1_700_000_000_000


def _write_steps(
    client: Client, run_id: str, count: int, failed_at: int | None = None
) -> list[str]:
    """``count`` step records in ``run:<id>:steps`` under names in no order of their
    ``seq`` (HSCAN's order tells nothing), the last one ``running``; their names
    in execution order."""
    view = run_view(client, run_id)
    r: redis.Redis = view.redis
    key = view.keys.run_steps(run_id)
    names = [f"row-{i:06d}" for i in range(count)]
    random.Random(7).shuffle(names)  # names[i] is the (i + 1)-th step run
    size = 0
    with r.pipeline(transaction=False) as pipe:
        for i, name in enumerate(names):
            status, error = "succeeded", None
            if i == failed_at:
                status = "failed"
                error = codec.encode_error(ErrorInfo(type="KeyError", message="row")).decode()
            if i == count - 1:
                status = "running"
            data = codec.encode_step(
                StoredStep(
                    seq=i + 1,
                    status=status,
                    started_at=T0 + i,
                    finished_at=T0 + i + 1,
                    attempt=1,
                    output_json=None if error else f'{{"row":{i}}}',
                    error_json=error,
                )
            )
            size += len(data)
            pipe.hset(key, name, data)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.hset(view.keys.run(run_id), mapping={"stepSeq": count, "stepBytes": size})
        pipe.execute()
    return names


def _show(client: Client, run_id: str, as_json: bool, **args: Any) -> tuple[list[str], int]:
    """The lines ``runs show`` printed and the peak of Python memory (bytes) it took."""
    printed: list[str] = []
    session = Session(client=client, url="redis://x", prefix="x", json=as_json, out=printed.append)
    ns = argparse.Namespace(id=run_id, **args)
    tracemalloc.start()
    try:
        assert cmd_runs_show(session, ns) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return printed, peak


@pytest.mark.parametrize("as_json", [False, True])
def test_show_of_a_run_with_100k_steps_is_bounded(client: Client, as_json: bool) -> None:
    run_id = client.run_by_name("etl", {}, queue_override="bulk").id
    names = _write_steps(client, run_id, STEPS, failed_at=STEPS // 2)
    printed, peak = _show(client, run_id, as_json, steps=DEFAULT_STEPS_SHOWN, all_steps=False)
    text = "\n".join(printed)
    assert len(text) < 20_000, f"{len(text):,} characters printed for {STEPS:,} steps"
    assert peak < 8 * 2**20, f"peak of {peak / 2**20:.1f} MiB for {STEPS:,} steps"
    half = DEFAULT_STEPS_SHOWN // 2
    want = names[:half] + names[-half:]  # the first and the last, in execution order
    if as_json:
        data = json.loads(text)
        assert [s["name"] for s in data["steps"]] == want
        assert data["steps_total"] == STEPS
        assert data["steps_omitted"] == STEPS - DEFAULT_STEPS_SHOWN
        assert data["steps_by_status"] == {"failed": 1, "running": 1, "succeeded": STEPS - 2}
        return
    rows = [line.split() for line in text.splitlines() if line.startswith("  ") and "row-" in line]
    assert [row[1] for row in rows] == want
    assert [int(row[0]) for row in rows] == [
        *range(1, half + 1),
        *range(STEPS - half + 1, STEPS + 1),
    ]
    assert f"  … and {STEPS - DEFAULT_STEPS_SHOWN:,} more steps" in printed[0].splitlines()
    assert f"steps: {STEPS:,} in all (1 failed, 1 running, {STEPS - 2:,} succeeded)" in text
    assert "use --steps N or --all-steps" in text


def test_show_steps_and_all_steps(client: Client) -> None:
    run_id = client.run_by_name("etl", {}, queue_override="bulk").id
    names = _write_steps(client, run_id, 9, failed_at=4)

    def shown(**args: Any) -> dict[str, Any]:
        printed, _ = _show(client, run_id, True, **args)
        out: dict[str, Any] = json.loads("\n".join(printed))
        return out

    every = shown(steps=DEFAULT_STEPS_SHOWN, all_steps=False)  # fewer than asked: all
    assert [s["name"] for s in every["steps"]] == names
    assert every["steps_omitted"] == 0
    assert shown(steps=0, all_steps=True)["steps"] == every["steps"]  # --all-steps: all
    five = shown(steps=5, all_steps=False)
    assert [s["name"] for s in five["steps"]] == names[:3] + names[-2:]
    assert (five["steps_total"], five["steps_omitted"]) == (9, 4)
    none = shown(steps=0, all_steps=False)
    assert (none["steps"], none["steps_total"], none["steps_omitted"]) == ([], 9, 9)
    printed, _ = _show(client, run_id, False, steps=0, all_steps=False)
    assert "steps: 9 in all (1 failed, 1 running, 7 succeeded) (use --steps N" in printed[0]


def test_watch_of_a_run_with_100k_steps_holds_and_prints_the_latest(client: Client) -> None:
    """``redflow runs watch`` decoded every step record at each read and printed a
    line per step on its first look (a finished run of 100,000 steps: 6.5 s, 182
    MB, 100,000 lines). It prints the latest ``WATCH_STEPS`` and one line counting
    the earlier ones."""
    run_id = client.run_by_name("etl", {}, queue_override="bulk").id
    names = _write_steps(client, run_id, STEPS)
    view = run_view(client, run_id)
    view.redis.hset(  # finished: the watch ends at its first look
        view.keys.run(run_id),
        mapping={"status": "succeeded", "finishedAt": T0 + STEPS + 1, "outputJson": "1"},
    )
    printed: list[str] = []
    session = Session(client=client, url="redis://x", prefix="x", json=False, out=printed.append)
    ns = argparse.Namespace(id=run_id, timeout=None, interval=0.5)
    tracemalloc.start()
    try:
        assert cmd_runs_watch(session, ns) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(printed) <= WATCH_STEPS + 10, f"{len(printed):,} lines for {STEPS:,} steps"
    assert peak < 16 * 2**20, f"peak of {peak / 2**20:.1f} MiB for {STEPS:,} steps"
    skipped = STEPS - WATCH_STEPS
    assert any(f"… {skipped:,} earlier steps not shown" in line for line in printed), printed[:3]
    shown = [line.split()[2] for line in printed if " step row-" in line]
    assert shown == names[-WATCH_STEPS:]
