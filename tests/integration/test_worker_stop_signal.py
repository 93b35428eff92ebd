"""Worker.stop() from a signal handler never blocks the interrupted worker.

The supervisor child's TERM handler calls ``Worker.stop()``. It used to set a
``threading.Event``, whose ``set()`` takes the lock that an ``Event.wait()`` in
the same (main) thread holds between its checks: a TERM landing there blocked
the handler, and so the child, forever (the supervisor SIGKILLed it at its
graceful timeout). The script below makes the race certain: a timer signal
every millisecond calls ``stop()`` while fresh workers wait out a failed claim
(backoff 0, i.e. the waits' own bookkeeping is all the loop does), 200 times
(a count, not a time: 2 s of a loaded machine played it fewer than 100 times).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging, signal, sys
    from redflow_mp import create_client
    from redflow_mp.registry import Registry
    from redflow_mp.worker import Worker

    logging.getLogger("redflow_mp").setLevel(logging.CRITICAL)
    client = create_client(sys.argv[1], prefix=sys.argv[2], registry=Registry())
    current = []

    def on_alarm(signum, frame):
        if current:
            current[-1].stop()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    stopped = 0
    while stopped < 200:
        worker = Worker(client, queues=["q"])
        current.append(worker)
        while not worker.stopping:
            worker._claim_failed(ConnectionError("down"), 0.0)
        current.pop()
        stopped += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    print("stopped", stopped)
    """
)


def test_stop_from_a_signal_handler_never_blocks_the_worker(redis_url: str, prefix: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, redis_url, prefix],
            capture_output=True,
            text=True,
            timeout=100,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("a stop() from a signal handler blocked the worker") from exc
    assert done.returncode == 0, done.stderr[-2000:]
    stopped = int(done.stdout.split()[-1])
    assert stopped == 200, done.stdout  # the race was played many times
