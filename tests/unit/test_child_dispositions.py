"""A supervisor child's check of the signals' dispositions before each claim
(``_Hooks.should_stop``): the handlers are read in one pass and compared with
those the last check left right, so only a change pays the checks one by one.
Whatever a handler changes, and however often, the next check undoes it: TERM
(and the other handled signals) reset to the default action are handled again, a
handler's own TERM handler is left alone, SIGCHLD gets its default action back,
SIGALRM is ignored again and its timer disarmed.

Runs in a fresh interpreter: the dispositions are the process's."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.process.conftest import ROOT

SCRIPT = """
import json
import signal
from redflow_supervisor import child as ch
from redflow_supervisor.board import Board

def on_term(signum, frame):
    pass

def own(signum, frame):
    pass

signal.signal(signal.SIGTERM, on_term)
for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGQUIT,
            signal.SIGALRM):
    signal.signal(sig, signal.SIG_IGN)
signal.signal(signal.SIGCHLD, signal.SIG_DFL)
hooks = ch._Hooks(Board(1), ch.ChildSpec(
    index=0, slot=0, app="t", url="redis://127.0.0.1:1", prefix="t", queues=("q",), lease_ms=5000,
))
hooks.sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
hooks.dispositions = {s: signal.getsignal(s) for s in (*ch.HANDLED_SIGNALS, signal.SIGPIPE)}
hooks.watched = tuple(s for s, h in hooks.dispositions.items() if h is not signal.SIG_DFL)
hooks._next_flush = float("inf")
out = []

def check(what):
    assert hooks.should_stop() is False
    out.append((what, signal.getsignal(signal.SIGTERM) is on_term,
                signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
                signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
                signal.getsignal(signal.SIGALRM) == signal.SIG_IGN,
                signal.getitimer(signal.ITIMER_REAL)[0] == 0))

check("first")
check("nothing changed")
for i in range(3):  # the same change again and again: each one undone
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    check(f"TERM reset {i}")
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
check("PIPE reset")
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
check("CHLD ignored")
signal.signal(signal.SIGCHLD, own)
check("CHLD handled")
signal.signal(signal.SIGALRM, own)
check("ALRM handled")
signal.setitimer(signal.ITIMER_REAL, 100)
check("ALRM armed")
signal.signal(signal.SIGALRM, own)
signal.setitimer(signal.ITIMER_REAL, 100)
check("ALRM handled and armed")
signal.signal(signal.SIGTERM, own)  # a handler's own: left alone
assert hooks.should_stop() is False
own_kept = signal.getsignal(signal.SIGTERM) is own
signal.signal(signal.SIGTERM, signal.SIG_DFL)  # then the default action: handled again
check("TERM reset after a handler's own")
print(json.dumps([own_kept, out]))
"""


def test_every_change_of_a_disposition_is_undone_before_the_next_claim() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    own_kept, rows = json.loads(proc.stdout)
    assert own_kept
    assert [r for r in rows if not all(r[1:])] == []
    assert len(rows) == 12
    # each undo said so in the log
    assert proc.stderr.count("default action in this worker; handled again") == 5
    assert proc.stderr.count("SIGCHLD ignored or handled") == 2
    assert [line for line in proc.stderr.splitlines() if "SIGALRM" in line] == [
        "a handler left a SIGALRM handler in this worker; SIGALRM ignored again",
        "a handler left SIGALRM's timer armed in this worker; disarmed",
        "a handler left SIGALRM's timer armed in this worker; disarmed, SIGALRM ignored again",
    ]
