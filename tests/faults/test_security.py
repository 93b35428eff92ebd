"""Security: nothing is ever unpickled; ACL users limited to the prefix and TLS
(rediss://) work; passwords never appear in logs or process titles."""

from __future__ import annotations

import asyncio
import os
import pickle
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from redflow_mp import (
    Context,
    InputValidationError,
    Registry,
    RunCanceledError,
    create_client,
    define_workflow,
)
from redflow_mp.aio import create_async_client
from tests.faults.drivers import wait_for
from tests.faults.harness import Faults
from tests.faults.outages import ready_pair
from tests.faults.processes import ONE_WORKLOAD_CHILD
from tests.faults.workload import WORKFLOWS
from tests.helpers import command
from tests.process.conftest import ROOT, Supervisor, run_supervisor_once
from tests.redis_server import find_redis_server

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

PASSWORD = "S3cr3t-pw-zz9-do-not-log"


class _Bomb:
    """Unpickling this creates a marker file: proof that something unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def test_nothing_is_ever_unpickled(fx: Faults, tmp_path: Path) -> None:
    server = fx.redis()
    raw = server.client()
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(_Bomb(marker))
    client = create_client(server.url, prefix=fx.prefix, default=False)
    try:
        done = WORKFLOWS["fx-chain"].run(1, client=client)
        queued = [WORKFLOWS["fx-chain"].run(i, client=client) for i in range(2, 6)]
        sup = fx.supervisor(server.url, procs=1)
        sup.wait_workers(1)
        done.result(timeout=30)
        for h in queued:
            h.result(timeout=30)
        key = client.keys.run(done.id)
        # Pickles everywhere a payload is read back: the run, its steps, errors, cron.
        raw.hset(key, mapping={"outputJson": bomb, "errorJson": bomb, "inputJson": bomb})
        raw.hset(client.keys.run_steps(done.id), "s1", bomb)
        raw.hset(client.keys.cron_def, "evil", bomb)
        raw.zadd(client.keys.cron_next, {"evil": 0})
        raw.hset(client.keys.workflow("fx-chain"), "retriesJson", bomb)
        # Scheduled 5 s ahead, so its input is replaced before any worker can claim it
        # (1 s was a race a loaded machine could lose: the HSET below came later).
        fresh = WORKFLOWS["fx-chain"].run(99, client=client, run_at=time.time() + 5)
        raw.hset(client.keys.run(fresh.id), "inputJson", bomb)
        client.get_run(done.id)
        client.get_run_steps(done.id)
        client.list_runs(limit=100)
        client.list_workflows()
        with pytest.raises(Exception):  # noqa: B017 - any error, never an unpickle
            client.wait_result(done.id, timeout=1)
        with pytest.raises(InputValidationError, match="not valid JSON"):
            fresh.result(timeout=30)
        wait_for(lambda: not raw.zscore(client.keys.cron_next, "evil"), 10, "the bad cron entry")
    finally:
        client.close()
    assert not marker.exists(), "something unpickled a payload"
    fx.stop_all()
    # And no code path can: nothing in the library or the supervisor imports a deserialiser
    # that runs code.
    pattern = re.compile(
        r"\b(pickle|cPickle|marshal|shelve|dill|cloudpickle|jsonpickle)\b|yaml\.load\(|\beval\("
    )
    offenders = []
    for base in (ROOT / "redflow_mp", ROOT / "supervisor"):
        for path in base.rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line.split("#", 1)[0]):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders
    raw.close()


def _no_password_anywhere(sups: list[Supervisor]) -> None:
    for sup in sups:
        assert PASSWORD not in sup.log(), f"password in the log of {sup.cmd}"
        for pid in [sup.pid] + [p.pid for p in psutil.Process(sup.pid).children()]:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert PASSWORD not in title, f"password in the process title of {pid}: {title!r}"


def test_acl_user_limited_to_the_prefix(fx: Faults) -> None:
    tag = "{" + fx.prefix + "}"
    rules = [
        "fx",
        "on",
        f">{PASSWORD}",
        "resetkeys",
        f"~{tag}:*",
        "resetchannels",
        f"&{tag}:*",
        "-@all",
        "+@read",
        "+@write",
        "+@keyspace",
        "+@scripting",
        "+@pubsub",
        "+@connection",
        "+@transaction",
        "+@list",
        "+@hash",
        "+@set",
        "+@sortedset",
        "+@string",
        "+@fast",
        "+@slow",
        "-@dangerous",
        "+info",
        "+time",
    ]
    server = fx.redis("--user", *rules)
    admin = server.client()
    admin.set("outside:sentinel", "untouched")
    admin.hset("other-app:hash", "f", "v")
    url = f"redis://fx:{PASSWORD}@127.0.0.1:{server.port}/0"
    # The ACL really confines the user: outside keys are refused.
    confined = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        confined.get("outside:sentinel")
    confined.close()
    command(admin, "ACL", "LOG", "RESET")
    sups = ready_pair(fx, url, procs=2, args=["--log-level", "debug"])
    prod = fx.producer(url, 300, rate=0).start()
    prod.wait(60)
    _no_password_anywhere(sups)
    report = fx.finish(admin, "security: ACL user limited to the prefix", recovery_s=None)
    report.assert_ok(all_succeeded=True)
    assert admin.get("outside:sentinel") == b"untouched"
    assert admin.hgetall("other-app:hash") == {b"f": b"v"}
    outside = [k for k in admin.scan_iter(count=1000) if not k.startswith(tag.encode() + b":")]
    assert sorted(outside) == [b"other-app:hash", b"outside:sentinel"], outside
    denied = command(admin, "ACL", "LOG")
    assert not denied, f"the library tried something the ACL refused: {denied[:3]}"
    for sup in sups:
        assert PASSWORD not in sup.log()
    admin.close()


def test_password_never_logged_on_errors(fx: Faults, tmp_path: Path) -> None:
    server = fx.redis()
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for url in (
        f"redis://fx:{PASSWORD}@127.0.0.1:{server.port}/0",  # no such user: auth fails
        f"redis://fx:{PASSWORD}@127.0.0.1:{closed}/0",  # nothing listens
    ):
        proc = run_supervisor_once(
            *ONE_WORKLOAD_CHILD,
            "--url",
            url,
            "--log-level",
            "debug",
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert PASSWORD not in out, f"password printed on a connection error:\n{out}"
        assert "***" in out or "127.0.0.1" in out, out


@pytest.fixture()
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server with a throwaway CA and server certificate."""
    d = tmp_path / "tls"
    d.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=redflow-faults-ca",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
            "--logfile",
            "redis.log",
        ],
        cwd=d,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.pem'}"
    try:

        def ready() -> bool:
            r = redis.Redis.from_url(url, socket_timeout=0.5)
            try:
                return bool(r.ping())
            finally:
                r.close()

        deadline = time.monotonic() + 10
        while True:
            try:
                if ready():
                    break
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        yield port, d / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(10)


def test_tls_rediss(fx: Faults, tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    plain = redis.Redis(port=port, socket_timeout=1)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()  # the server speaks TLS only
    plain.close()
    sup = fx.supervisor(url, procs=2)
    sup.wait_workers(2)
    prod = fx.producer(url, 200, rate=0).start()
    prod.wait(60)
    admin = redis.Redis.from_url(url)
    report = fx.finish(admin, "security: TLS (rediss://)", recovery_s=None)
    report.assert_ok(all_succeeded=True)
    admin.close()


def test_tls_rediss_async_client(tls_server: tuple[int, Path], prefix: str) -> None:
    """The async client's own connections (command and pub/sub) speak TLS with the
    context redis-py builds from the URL; a server certificate it cannot verify is
    refused."""
    port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    registry = Registry()

    @define_workflow("tls-parked", queue="nobody", registry=registry)
    def parked(ctx: Context[Any]) -> None:
        return None

    async def main() -> None:
        ac = create_async_client(url, prefix=prefix, registry=registry, default=False)
        try:
            h = await parked.arun({"x": 1}, client=ac)
            state = await ac.get_run(h.id)  # redis.asyncio's connection
            assert state is not None and state.input == {"x": 1}
            waiting = asyncio.ensure_future(h.result(timeout=20))  # the pub/sub connection
            assert await ac.cancel_run(h.id, "over TLS")
            with pytest.raises(RunCanceledError, match="over TLS"):
                await waiting
        finally:
            await ac.aclose()
        unverified = create_async_client(
            f"rediss://127.0.0.1:{port}/0", prefix=prefix, registry=registry, default=False
        )
        try:
            with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await parked.arun(None, client=unverified)
        finally:
            await unverified.aclose()

    asyncio.run(main())
