"""A child's CPU time limit (RLIMIT_CPU): the kernel's SIGXCPU ends the child.

Children ignore the stray signals (``early.STRAY``) so that a ``pkill -XCPU -f
redflow`` sent to the whole group does not kill a busy child. But the kernel
sends SIGXCPU itself when a process reaches its RLIMIT_CPU soft limit (``prlimit
--cpu=S:H``, systemd ``LimitCPU=S:H``, ``resource.setrlimit`` in a workload),
and an operator who set one expects the process to end there. Ignored, the
kernel raised the soft limit a second at a time until the hard limit's SIGKILL,
which the parent could only report as "possibly the OOM killer".

The two are told apart by who sent the signal, not by the CPU time used (the
kernel's tick-sampled count ran up to 2 s ahead of ``time.process_time()`` on a
loaded 2-CPU machine): SIGXCPU stays blocked in every thread of the child (they
inherit the main thread's mask), and one thread takes it with ``sigwaitinfo``.
From the kernel (``si_code`` ``SI_KERNEL``): the limit; the child logs it and
ends by SIGXCPU's default action, without a core dump; the parent logs the cause
(:data:`CAUSE`) and puts the run back as after any crash (one crash counted
against the run: a run that always burns past the limit fails after
``max_run_crashes``). From ``kill`` or ``sigqueue``: a stray, ignored as before.
Being blocked, not handled, it interrupts no system call of a handler's C code,
as SIG_IGN did not; a process a handler execs inherits the blocked mask as it
inherited SIG_IGN (it reaches its own hard limit's SIGKILL, as before).

The parent (:class:`ParentLimit`) has no thread to spare for ``sigwaitinfo``
(none may run at fork time) and learns of SIGXCPU from its wake-up pipe, which
carries no ``si_code``. It tells the kernel's by what the kernel does with it:
it sends SIGXCPU only once the process's CPU time reached the soft limit, and
raises the soft limit by a second each time (until the hard limit's SIGKILL).
So a SIGXCPU arriving with a finite soft limit that rose since the last look, or
with the CPU time used within :data:`_MARGIN` of it, is the limit; any other is
a stray, logged and ignored as before. At the limit the parent drains as after
a TERM (the runs finish or go back to the queue, rather than leaving orphaned
children when the hard limit's SIGKILL comes) and exits with status 1: a
supervisor stopped by a resource limit did not stop as asked, and systemd's
``Restart=on-failure`` starts it again with the limit counted afresh. Before, the
parent logged each SIGXCPU as a stray until the hard limit's SIGKILL.

Fork safety: :func:`install` runs in the child after fork, before its other
threads start; the parent's SIGXCPU handler is the wake-up pipe's no-op.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time

__all__ = ["CAUSE", "ParentLimit", "install"]

log = logging.getLogger("redflow_supervisor.child")
parent_log = logging.getLogger("redflow_supervisor")

CAUSE = "its CPU time limit, RLIMIT_CPU, was reached"
"""What the parent adds to "killed by SIGXCPU" (children.ExitInfo.describe)."""

_SI_KERNEL = 0x80  # si_code of a signal the kernel sent (Linux)
# Seconds the kernel's tick-sampled CPU time may run ahead of getrusage's.
_MARGIN = 3.0


def _text(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)


class ParentLimit:
    """Tells a SIGXCPU the kernel sent the parent at RLIMIT_CPU from a sent one."""

    def __init__(self) -> None:
        self.soft = resource.getrlimit(resource.RLIMIT_CPU)[0]

    def reached(self) -> bool:
        """After a SIGXCPU: whether it was the limit (logged as an ERROR)."""
        seen, (soft, hard) = self.soft, resource.getrlimit(resource.RLIMIT_CPU)
        self.soft = soft
        if soft == resource.RLIM_INFINITY:
            return False
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = usage.ru_utime + usage.ru_stime
        if not (seen != resource.RLIM_INFINITY and soft > seen) and used + _MARGIN < soft:
            return False
        parent_log.error(
            "CPU time limit reached (RLIMIT_CPU soft %s s, hard %s s; %.1f s "
            "used): draining as after a TERM, then exiting with status 1",
            _text(soft),
            _text(hard),
            used,
        )
        return True


def _watch() -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGXCPU})
        if info.si_code == _SI_KERNEL:
            break  # else sent by someone (kill): a stray, ignored
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    log.error(
        "CPU time limit reached (RLIMIT_CPU soft %s s, hard %s s; %.1f s used): this "
        "child ends by SIGXCPU and its run goes back to the queue as after a crash",
        _text(soft),
        _text(hard),
        time.process_time(),
    )
    _core, core_hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, core_hard))  # no dump of a big process
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGXCPU})
    signal.pthread_kill(threading.get_ident(), signal.SIGXCPU)  # default action: ends it
    os._exit(1)  # pragma: no cover


def install() -> None:
    """In a child, before it starts other threads: SIGXCPU blocked and watched."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGXCPU})
    signal.signal(signal.SIGXCPU, signal.SIG_DFL)  # not ignored: it stays pending
    threading.Thread(target=_watch, name="redflow-cpu-limit", daemon=True).start()
