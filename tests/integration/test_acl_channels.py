"""A user whose channel permission (``&{prefix}:*``) goes while workers run (an
ACL change, a rolled-out user without it): each finish's PUBLISH of
``run-done`` is its last command, after the run's writes; refused, it failed the
whole script, so the worker's finish-and-claim call raised after the finish was
applied (a supervisor's child crashed at every run). The notification is
best-effort now: the transition completes and the worker goes on."""

from __future__ import annotations

from typing import Any

from redflow_mp import Context, Registry, Worker, create_client, define_workflow
from tests.redis_server import RedisServer


def test_a_refused_run_done_publish_does_not_fail_the_finish(server: RedisServer) -> None:
    admin = server.client()
    rules = ["resetkeys", "~{chan}:*", "resetchannels", "&{chan}:*", "+@all", "-@dangerous"]
    admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", *rules, "+info")  # type: ignore[no-untyped-call]
    url = f"redis://app:pw@127.0.0.1:{server.port}/0"
    reg = Registry()

    @define_workflow("one", registry=reg)
    def one(ctx: Context[Any]) -> int:
        return 7

    client = create_client(url, prefix="chan", registry=reg, default=False)
    try:
        handles = [one.run(None, client=client) for _ in range(3)]
        # the channels go (only the channels: every key is still allowed)
        admin.execute_command("ACL", "SETUSER", "app", "resetchannels")  # type: ignore[no-untyped-call]
        worker = Worker(client)
        assert worker.run_until_idle(timeout=20) == 3  # raised NoPermissionError-like before
        for h in handles:
            state = client.get_run(h.id)
            assert state is not None and state.status == "succeeded"
    finally:
        client.close()
        admin.close()
