"""The unlucky operator: Redis restarts empty (no persistence, or a failover to an
empty replica) while a supervisor and its clients keep running.

Until the supervisor's registry duty writes the workflow metadata again, a
client without the code that enqueues by name finds no metadata and puts the
run on ``default`` (README: a name unknown locally and in Redis). No worker
served ``default`` here, so that run waited there for ever, and the supervisor's
log only guessed at what had happened. Now the registration adopts it: it moves
to its workflow's queue and runs; a run the caller put on ``default`` stays;
and the log says Redis restarted and what was lost with it.

With two apps on one prefix, one of them serving ``default``: that app's worker
claimed the stranded run of the other app's workflow and failed it
(``UnknownWorkflowError``) before the other app's supervisor wrote its
registration again and adopted it. While the ``registry-lost`` marker lives (or
its own metadata is gone) it puts the run back instead; without the marker, a
mistyped name still fails at once (SPEC §4)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from redflow_mp import Registry, create_client
from redflow_mp.errors import ResultTimeoutError, RunFailedError
from tests.process import flows
from tests.process.conftest import Supervisor, wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    srv = RedisServer().start()  # no persistence: a restart comes back empty
    yield srv
    srv.cleanup()


def test_a_run_enqueued_by_name_during_an_empty_restart_is_adopted_and_runs(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "empty-restart"
    sup = Supervisor(server.url, prefix, tmp_path / "supervisor.log", procs=1).start()
    client = create_client(server.url, prefix=prefix, default=False)
    bare = create_client(server.url, prefix=prefix, registry=Registry(), default=False)
    try:
        sup.wait_workers(1)
        assert "default" not in flows.pid.queue
        assert isinstance(bare.run_by_name("pid", None).result(timeout=30), int)

        # The supervisor's own process is stopped across the restart and the
        # enqueue, so its registry duty cannot write the metadata in between
        # (it looks every 5 s): the client finds none, deterministically.
        sup.send(signal.SIGSTOP)
        try:
            server.kill()
            server.start()  # same port, empty
            assert client.get_workflow_meta("pid") is None
            stranded = bare.run_by_name("pid", None)
            chosen = bare.run_by_name("pid", None, queue_override="default")
            assert bare.get_run(stranded.id).queue == "default"  # type: ignore[union-attr]
        finally:
            sup.send(signal.SIGCONT)

        try:
            assert isinstance(stranded.result(timeout=60), int)
        except ResultTimeoutError as exc:
            raise AssertionError(f"{exc}: stranded on default\n{sup.log()}") from None
        state = client.get_run(stranded.id)
        assert state is not None and state.queue == flows.pid.queue
        mine = client.get_run(chosen.id)
        assert mine is not None and mine.queue == "default", "the caller's choice stays"
        assert mine.status == "queued"
        # (the parent logs the move after its script returned: the run may end first)
        wait_until(lambda: "moved 1 run(s) from queue 'default'" in sup.log(), 30, message="move")

        # What the log says happened: a restart, and what it lost.
        wait_until(lambda: "came back empty" in sup.log(), 30, message="the restart named")
        log = sup.log()
        assert "restarted or failed over" in log, log
        assert "lost unless Redis persisted them" in log, log
    finally:
        bare.close()
        client.close()
        sup.stop()


def _two_apps(server: RedisServer, prefix: str, tmp_path: Path) -> tuple[Supervisor, Supervisor]:
    """App ``a`` serves ``default`` (flows_default_app), app ``b`` queue ``hostb``."""
    a = Supervisor(
        server.url,
        prefix,
        tmp_path / "a.log",
        procs=1,
        app="a",
        modules=("tests.process.flows_default_app",),
    ).start()
    b = Supervisor(
        server.url,
        prefix,
        tmp_path / "b.log",
        procs=1,
        app="b",
        modules=("tests.process.flows_hostb",),
    ).start()
    a.wait_workers(1)
    b.wait_workers(1)
    return a, b


def test_another_apps_run_on_default_after_an_empty_restart_is_held_then_adopted(
    server: RedisServer, tmp_path: Path
) -> None:
    """Failed before the fix: ``assert b'failed' != b'failed'`` (app a's worker failed
    the run: "workflow 'host-b' is not registered in this worker (queue 'default')")."""
    prefix = "empty-restart-apps"
    a, b = _two_apps(server, prefix, tmp_path)
    bare = create_client(server.url, prefix=prefix, registry=Registry(), default=False)
    try:
        assert isinstance(bare.run_by_name("host-b", None).result(timeout=30), int)
        assert isinstance(bare.run_by_name("on-default", None).result(timeout=30), int)

        # b's supervisor is stopped (its registry duty cannot write the metadata
        # again) until a's worker has claimed the run after a's registry duty wrote
        # a's registration again and the marker: the hold that matters.
        b.send(signal.SIGSTOP)
        try:
            server.kill()
            server.start()  # same port, empty
            raw = server.client()
            stranded = bare.run_by_name("host-b", None)
            key = f"{{{prefix}}}:run:{stranded.id}"
            assert raw.hget(key, "queueFallback") == b"1"
            assert raw.hget(key, "queue") == b"default"
            wait_until(lambda: "came back empty" in a.log(), 60, message="a's sync again")
            lease = raw.hget(key, "lease")

            def claimed_again() -> bool:  # (or failed: the defect)
                status = raw.hget(key, "status")
                if status == b"failed":
                    return True
                return raw.hget(key, "lease") != lease and status in (b"scheduled", b"queued")

            wait_until(claimed_again, 60, message="a's worker claimed the run again")
            assert raw.hget(key, "status") != b"failed", (raw.hgetall(key), a.log())
            assert raw.hget(key, "delayMs") is not None, "put back by a defer"
            assert raw.exists(f"{{{prefix}}}:registry-lost"), "written by a's sync again"
        finally:
            b.send(signal.SIGCONT)

        try:
            assert isinstance(stranded.result(timeout=60), int)
        except (ResultTimeoutError, RunFailedError) as exc:
            raise AssertionError(f"{exc}\n{a.log()}\n{b.log()}") from None
        state = bare.get_run(stranded.id)
        assert state is not None and state.queue == "hostb"
        assert state.attempt == 1, "a hold spends no attempt"
        wait_until(lambda: "moved 1 run(s) from queue 'default'" in b.log(), 30, message="move")
        assert "are put back, not failed" in a.log(), a.log()
        raw.close()
    finally:
        bare.close()
        a.stop()
        b.stop()


def test_a_mistyped_name_fails_at_once_without_the_marker(
    server: RedisServer, tmp_path: Path
) -> None:
    """Two apps, nothing lost: a name no app defines, enqueued on ``default``, fails
    at its first claim (never put back) with ``UnknownWorkflowError``."""
    prefix = "empty-restart-typo"
    a, b = _two_apps(server, prefix, tmp_path)
    bare = create_client(server.url, prefix=prefix, registry=Registry(), default=False)
    raw = server.client()
    try:
        typo = bare.run_by_name("host-bb", None)
        key = f"{{{prefix}}}:run:{typo.id}"
        assert raw.hget(key, "queueFallback") == b"1", "on default for want of metadata"
        assert not raw.exists(f"{{{prefix}}}:registry-lost")
        with pytest.raises(RunFailedError) as caught:
            typo.result(timeout=60)
        assert caught.value.error is not None
        assert caught.value.error.type == "UnknownWorkflowError", caught.value
        assert raw.hget(key, "delayMs") is None, "never put back"
        assert raw.hget(key, "attempt") == b"1"
    finally:
        raw.close()
        bare.close()
        a.stop()
        b.stop()
