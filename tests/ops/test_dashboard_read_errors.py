"""The dashboard answers 503 (never a 500 or a traceback) for Redis trouble:
a neighbour's key of another type, BUSY while a neighbour's long script runs
(the reads now raise ``WrongTypeError`` / ``RedisBusyError``), and the
library's other transient errors (``RedisReadOnlyError`` for an action while
the server accepts no writes)."""

from __future__ import annotations

import threading

import redis

from redflow_mp import Client, create_client
from redflow_supervisor.ops.dashboard import DashboardConfig, make_server
from tests.integration.test_results_busy import _spin_in_background
from tests.ops.conftest import TOKEN, Runs
from tests.ops.web import Start, request
from tests.redis_server import RedisServer

PAGES = ("/runs", "/workflows")


def test_pages_over_a_key_of_another_type_answer_503(
    dashboard: Start, runs: Runs, raw: redis.Redis, client: Client
) -> None:
    base = dashboard()
    for key in (client.keys.runs_created, client.keys.workflows, client.keys.run(runs.queued)):
        raw.delete(key)
        raw.set(key, "a neighbour's value")
    for path in (*PAGES, f"/run?id={runs.queued}"):
        r = request(base, path)
        assert r.status == 503, (path, r)
        assert "WRONGTYPE" in r.body, (path, r)


def test_pages_during_a_neighbours_long_script_answer_503(dashboard: Start, runs: Runs) -> None:
    del runs
    srv = RedisServer().start()
    try:
        r = srv.client()
        r.config_set("lua-time-limit", 100)
        r.close()
        own = create_client(srv.url, prefix="dash-busy", default=False)
        try:
            server = make_server(own, DashboardConfig(port=0, prefix="dash-busy"), quiet=True)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            thread.daemon = True
            thread.start()
            try:
                base = f"http://127.0.0.1:{server.server_address[1]}/"
                assert request(base, "/runs").status == 200
                # The neighbour's script spins until SCRIPT KILL (30 s at most), not
                # for a set time: the pages are asked while it surely runs (a 2 s
                # spin ended before the second page's request on a loaded machine:
                # {'/workflows': 200} != {'/workflows': 503}).
                spinner = _spin_in_background(srv, 30_000)
                try:
                    answers = {path: request(base, path) for path in PAGES}
                finally:
                    with srv.client() as killer:
                        killer.script_kill()
                spinner.join(30)
                statuses = {p: a.status for p, a in answers.items()}
                assert statuses == dict.fromkeys(PAGES, 503), answers
                assert all("busy" in a.body.lower() for a in answers.values()), answers
            finally:
                server.shutdown()
                server.server_close()
                thread.join(5)
        finally:
            own.close()
    finally:
        srv.cleanup()


def test_an_action_while_redis_accepts_no_writes_answers_503(
    dashboard: Start, runs: Runs, raw: redis.Redis
) -> None:
    base = dashboard(token=TOKEN)
    raw.config_set("min-replicas-to-write", 1)
    try:
        r = request(base, "/actions/cancel", "POST", {"id": runs.queued, "token": TOKEN})
    finally:
        raw.config_set("min-replicas-to-write", 0)
    assert r.status == 503, r
    assert "internal error" not in r.body, r
