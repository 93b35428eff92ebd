"""The client process: ``python -m benchmarks.client <system>``.

The harness starts one client process per session and sends it requests as
JSON lines on stdin. Replies go to the original stdout: ``P <n>`` progress
lines, then one ``R <json>`` (result) or ``E <message>`` (error) per request.
Anything the system itself prints is redirected to stderr so it cannot corrupt
the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, TextIO

from benchmarks.systems import Client, NotAvailable, get_system
from benchmarks.tasks import common


class Channel:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last_progress = 0.0

    def progress(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last_progress >= 0.05:
            self.last_progress = now
            self.out.write(f"P {done}\n")
            self.out.flush()

    def result(self, payload: dict[str, Any]) -> None:
        self.out.write("R " + json.dumps(payload) + "\n")
        self.out.flush()

    def error(self, message: str) -> None:
        self.out.write("E " + message.replace("\n", " | ") + "\n")
        self.out.flush()


def handle(client: Client, request: dict[str, Any], channel: Channel) -> dict[str, Any] | None:
    op = request["op"]
    if op == "connect":
        client.connect()
        return {"pid": os.getpid()}
    if op == "enqueue":
        n = int(request["n"])
        t_start = time.time()
        timed = client.enqueue_many(
            str(request["kind"]), int(request.get("arg", 0)), n, channel.progress
        )
        return {
            "n": n,
            "elapsed": timed.elapsed,
            "cpu": timed.cpu,
            "timed_runs": timed.runs,
            "t_start": t_start,
            "t_end": time.time(),
        }
    if op == "enqueue_bulk":
        n = int(request["n"])
        try:
            timed = client.enqueue_bulk(n, int(request["batch"]), channel.progress)
        except NotAvailable as exc:
            return {"available": False, "reason": str(exc)}
        return {
            "available": True,
            "n": n,
            "elapsed": timed.elapsed,
            "cpu": timed.cpu,
            "timed_runs": timed.runs,
        }
    if op == "round_trips":
        latencies = client.round_trips(
            int(request["n"]), int(request.get("warmup", 0)), channel.progress
        )
        return {"latencies_ms": latencies}
    if op == "fanout":
        t_enqueued = time.time()
        client.fanout(str(request["mode"]), int(request["n"]))
        return {"t_enqueued": t_enqueued}
    if op == "quit":
        return None
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.client <system>", file=sys.stderr)
        return 2
    # Keep the protocol on a private copy of stdout; fd 1 now goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = Channel(proto)
    client = get_system(argv[0]).client_class()(common.redis_url())
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            try:
                reply = handle(client, request, channel)
            except Exception as exc:
                traceback.print_exc()
                channel.error(f"{type(exc).__name__}: {exc}")
                continue
            if reply is None:
                break
            channel.result(reply)
    finally:
        try:
            client.close()
        except Exception:
            traceback.print_exc()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
