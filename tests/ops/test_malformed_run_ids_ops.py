"""A malformed run id (``<ulid>~x``: after '~' a run id carries its shard number)
typed into the CLI or sent to the dashboard is refused as bad input: the CLI's
usage error (exit 2, one line naming the id), the dashboard's 400. Before, every
``redflow runs show/cancel/retry/resume/watch`` and ``runs list --after`` of one
ended in a Python traceback (exit 1), and the dashboard's run page and its
cancel/retry/resume actions answered 500 with a traceback in its log at every
request: anyone who could read the dashboard could fill its log."""

from __future__ import annotations

from collections.abc import Callable

from tests.ops.conftest import TOKEN, Result, Runs, run_cli_many
from tests.ops.web import Start, request

BAD = ("01M977JRVEBW27D7FAPQ2JGN0M~x", "01M977JRVEBW27D7~", "~")


def test_the_cli_refuses_a_malformed_run_id_as_a_usage_error(
    redflow: Callable[..., Result], redis_url: str, prefix: str
) -> None:
    target = ["--url", redis_url, "--prefix", prefix]
    commands = [
        *(
            ["runs", action, run_id]
            for action in ("show", "cancel", "retry", "resume", "watch")
            for run_id in BAD[:1]
        ),
        ["runs", "list", "--after", BAD[0]],
        ["runs", "show", BAD[1]],
        ["send-event", BAD[0], "ev"],
    ]
    results = run_cli_many([[*args[:2], *args[2:], *target] for args in commands])
    for args, res in zip(commands, results, strict=True):
        assert "Traceback" not in res.err, (args, res)  # before: ValueError traceback
        assert res.code == 2, (args, res)  # before: 1
        assert "malformed run id" in res.err, (args, res)
    del redflow


def test_the_dashboard_answers_400_for_a_malformed_run_id(dashboard: Start, runs: Runs) -> None:
    base = dashboard(token=TOKEN)
    for run_id in BAD:
        r = request(base, f"/run?id={run_id}")
        assert r.status == 400, (run_id, r)  # before: 500
        assert "malformed run id" in r.body, (run_id, r)
        for action in ("cancel", "retry", "resume"):
            r = request(base, f"/actions/{action}", "POST", {"id": run_id, "token": TOKEN})
            assert r.status == 400, (action, run_id, r)  # before: 500
            assert "internal error" not in r.body, (action, run_id, r)
    assert request(base, f"/run?id={runs.queued}").status == 200
