"""``on_failure`` made durable: a hook due is recorded in Redis until it returned.

The finish that fails a run for good (``finalize_run.lua``) also records the
run in ``on-failure-due``, scored by a deadline (now + :data:`HOOK_GRACE_MS`),
when its caller names the run's workflow as one whose hook it runs: the worker
for its own failures, the supervisor for the runs it fails itself (a crash cap,
a timeout on the last attempt). Once the hook returned (or raised: its error is
logged, never retried) the caller removes the entry (:func:`done`). When the
hook starts, its entry is scored a deadline from then (:func:`started`): the
host's limit counts from the hook's start, which may come well after the
failure (a process held up by Redis trouble, a helper forked late).

A caller that died first (SIGKILL, OOM) leaves the entry; once its deadline
passed, a supervisor's reaper that loads the workflow takes it over
(:func:`take_due`, ``take_hooks.lua``: the same call scores it a new deadline,
so two supervisors never both take it) and calls the hook in a short-lived
process of its own, killed past :data:`HOOK_LIMIT_S` like any hook. A hook
still running in a live supervised process is never taken over: the
supervisor kills a hook past :data:`HOOK_LIMIT_S`, before the deadline.

So a hook is called once in the normal path, and at least once across crashes:
a second call happens only when its process died after the hook returned and
before the entry was removed (one Redis command), when the entry could not be
removed (Redis out of reach for :data:`DONE_PATIENCE`), or when the hook's
process could not re-score its entry (:class:`Beat`: Redis out of reach)
until the deadline passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from .codec import text
from .errors import TRANSIENT_ERRORS

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "BEAT_S",
    "DONE_PATIENCE",
    "HOOK_GRACE_MS",
    "HOOK_LIMIT_S",
    "MAX_TAKEOVERS",
    "TAKE_BATCH",
    "TAKE_SCAN",
    "Beat",
    "Takeover",
    "done",
    "hooked",
    "started",
    "take_due",
]

log = logging.getLogger(__name__)

#: How long a supervisor lets an ``on_failure`` hook run (in a child or a helper)
#: before it kills the process.
HOOK_LIMIT_S = 60.0
#: A hook's deadline after the failure (or a takeover): past the limit, with a
#: margin for the supervisor to see and kill a hook that overran it.
HOOK_GRACE_MS = int(HOOK_LIMIT_S * 1000) + 5_000
#: Most hooks one ``take_hooks`` call takes, and most due entries it reads.
TAKE_BATCH = 20
TAKE_SCAN = 200
#: Most takeovers of one run's hook: a hook that never returns (killed past the
#: limit each time) is given up after as many more calls, not called forever.
MAX_TAKEOVERS = 3
#: While a hook runs, its process scores its entry a new deadline this often
#: (:class:`Beat`): a hook of an in-process worker has no limit, and a
#: supervisor of the same app took it over while it still ran.
BEAT_S = 20.0
#: How long :func:`done` rides out Redis trouble before it leaves the entry (the
#: hook is then called once more, after its deadline).
DONE_PATIENCE = 10.0


def hooked(registry: Registry) -> tuple[str, ...]:
    """The names of ``registry``'s workflows that define ``on_failure``."""
    return tuple(wf.name for wf in registry if wf.on_failure is not None)


def started(runs: Any, run_id: str, patience: float = DONE_PATIENCE) -> str:
    """The hook of ``run_id`` starts: its ``on-failure-due`` entry, if any, is
    scored a deadline from now (``hook_started.lua``), as the host's limit
    counts from now (riding out Redis trouble for up to ``patience`` s; never
    raises: the hook runs anyway, on the failure's deadline). Returns the
    token of the run's last finish (for :func:`done`; '' when unknown)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            shard = runs.shard_of_run(run_id)
            keys = shard.keys
            return text(
                shard.scripts.run(
                    "hook_started",
                    (keys.on_failure_due, keys.run(run_id)),
                    (run_id, HOOK_GRACE_MS),
                    retry=True,
                )
            )
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() >= deadline:
                log.warning(
                    "run %s: could not record that its on_failure hook starts (%s)",
                    run_id,
                    exc,
                )
                return ""
            time.sleep(0.2)
        except Exception as exc:  # refused: the hook runs on the failure's deadline
            log.warning(
                "run %s: could not record that its on_failure hook starts (%s)", run_id, exc
            )
            return ""


class Beat:
    """While a hook runs (``with Beat(runs, run_id):``): its entry scored from its
    start, then again every :data:`BEAT_S` from a thread, so that no reaper
    takes over a hook still running, however long (an in-process worker's hook
    has no limit; a supervised one is killed past :data:`HOOK_LIMIT_S`)."""

    def __init__(self, runs: Any, run_id: str) -> None:
        self._runs, self._run_id = runs, run_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            started(self._runs, self._run_id, BEAT_S / 2)

    def __enter__(self) -> Beat:
        started(self._runs, self._run_id)
        self._thread = threading.Thread(
            target=self._beat, name=f"on_failure beat {self._run_id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def done(runs: Any, run_id: str, token: str = "", patience: float = DONE_PATIENCE) -> None:
    """The hook of ``run_id``'s failure by ``token`` (its finish's lease token;
    '': whichever) returned: remove its ``on-failure-due`` entry, unless the run
    failed again since with another token (``hook_done.lua``); rides out Redis
    trouble for up to ``patience`` s and never raises."""
    deadline = time.monotonic() + patience
    while True:
        try:
            shard = runs.shard_of_run(run_id)
            keys = shard.keys
            shard.scripts.run(
                "hook_done", (keys.on_failure_due, keys.run(run_id)), (run_id, token), retry=True
            )
            return
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() >= deadline:
                log.warning(
                    "run %s: could not record that its on_failure hook returned (%s); "
                    "it will be called again after its deadline",
                    run_id,
                    exc,
                )
                return
            time.sleep(0.2)
        except Exception as exc:  # a key of another type: the hook may be called again
            log.warning("run %s: could not remove its on_failure entry (%s)", run_id, exc)
            return


def take_due(
    store: Any,
    names: Collection[str] | Callable[[], Collection[str]],
    rank: int = 0,
    *,
    batch: int = TAKE_BATCH,
    scan: int = TAKE_SCAN,
    grace_ms: int = HOOK_GRACE_MS,
    most: int = MAX_TAKEOVERS,
) -> tuple[int, list[tuple[str, str]]]:
    """Take over up to ``batch`` hooks of ``names`` (or of what it returns,
    called only when a hook is due) past their deadline in ``store`` (one
    shard), reading at most ``scan`` due entries from ``rank``: (the next call's
    rank, 0 once every due entry was read; (run id, workflow) of each hook
    taken, each scored a new deadline by the same call). A hook taken over more
    than ``most`` times is given up (logged, its entry gone).

    A probe first (``take_hooks`` with no name) reads the due entries'
    workflows: a shard with nothing due costs one call that sends no name, and
    the takeover sends only the names of the due entries this caller runs (not
    every hooked workflow it loads, thousands for some apps)."""
    if not callable(names) and not names:
        return 0, []
    keys = store.keys
    scan = max(batch, scan)
    head = (keys.tag, grace_ms, batch, scan)
    probe = store.scripts.run("take_hooks", (keys.on_failure_due,), (*head, rank, most), retry=True)
    if len(probe) == 1:  # nothing due from ``rank``
        return int(probe[0]), []
    loaded = names() if callable(names) else names
    runs = loaded if isinstance(loaded, (set, frozenset)) else frozenset(loaded)
    mine = [w for w in (text(x) for x in probe[1:]) if w in runs]
    if not mine:  # due, but none of this caller's: the cursor moves past them
        return int(probe[0]), []
    reply = store.scripts.run(
        "take_hooks", (keys.on_failure_due,), (*head, rank, most, *mine), retry=True
    )
    taken: list[tuple[str, str]] = []
    for i in range(1, len(reply) - 2, 3):
        run_id, workflow, takes = text(reply[i]), text(reply[i + 1]), int(reply[i + 2])
        if takes > most:
            log.error(
                "run %s: its on_failure hook (workflow %s) was taken over %d times and "
                "never returned; given up",
                run_id,
                workflow,
                most,
            )
        else:
            taken.append((run_id, workflow))
    return int(reply[0]), taken


class Takeover:
    """The reaper's side: per shard, a cursor over the due entries."""

    def __init__(self) -> None:
        self._rank: dict[int, int] = {}

    def take(
        self, index: int, store: Any, names: Collection[str] | Callable[[], Collection[str]]
    ) -> list[tuple[str, str]]:
        """The hooks taken over in shard ``index`` (``store``) this tick."""
        self._rank[index], taken = take_due(store, names, self._rank.get(index, 0))
        for run_id, workflow in taken:
            log.warning(
                "run %s: its on_failure hook (workflow %s) was due and its process is "
                "gone; calling it again",
                run_id,
                workflow,
            )
        return taken
