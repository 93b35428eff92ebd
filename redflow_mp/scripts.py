"""Loads ``lua/*.lua`` once, binds each script to a typed callable, maps replies.

Every entry script shares the helpers of ``lua/_lib.lua`` (prefixed to each
script). Scripts are sent as EVALSHA, loaded on NOSCRIPT: the script cache is
content-addressed (the SHA-1 of the code), so no other user of the server can
make us run code other than ours.

Redis >= 7 *function libraries* (``FUNCTION LOAD``, ``FCALL``) build the helpers
once per server instead of on every call, which is somewhat cheaper for Redis,
but a library is found by its *name*, and any user allowed ``FUNCTION LOAD``
(ACL category ``@scripting``) can ``REPLACE`` a library of any name: one tenant
of a shared server could make every other prefix run its code with that
prefix's permissions. So functions are opt-in (``functions=True``, the
``redis_functions`` setting), for servers where no other user may run
``FUNCTION``; even then a library already loaded under our name is verified
against our code (``FUNCTION LIST WITHCODE``) before it is called, and refused
if it differs. The library's name carries a hash of its source, so supervisors
running different versions can share a server.

A writing function (and, on >= 7, a writing script with its ``#!lua``
shebang) is refused *before it runs* when the server is out of memory: no
transition is ever half-applied. On 6.2 the server refuses the first write of
a script under OOM, which our scripts make before any other. One exception on
>= 7: renew_lease.lua runs under OOM (``allow-oom``; it only moves the scores of
leases that exist), so an OOM longer than a lease takes no live worker's run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Generator, Sequence
from typing import Any, TypeVar, cast

from redis.exceptions import ResponseError

from . import ids
from .claim_scripts import ClaimCalls
from .claimed import Claimed, Finish
from .codec import text
from .connection import NotReplicatedError
from .errors import (
    NETWORK_ERRORS,
    RedflowError,
    RunNotResumableError,
    WrongTypeError,
)
from .hashpages import BytePages
from .hookdue import HOOK_GRACE_MS
from .keys import Keys
from .luafiles import build_library, library_name, load_sources, script_names
from .luafiles import read_lua as _read_lua
from .options import MAX_PRIORITY, check_priority
from .packed import PackedClaims, PlainEnqueues
from .queueset import QueueLists
from .replies import is_noscript, refused
from .transport import Transport
from .upkeep_scripts import UpkeepCalls
from .wait_scripts import WaitCalls, corrupted

__all__ = [
    "MAX_PRIORITY",
    "Claimed",
    "Finish",
    "Plan",
    "ScriptSet",
    "Scripts",
    "build_library",
    "cancel_reply",
    "check_priority",
    "enqueue_reply",
    "load_sources",
    "resume_plan",
    "resume_reply",
    "script_names",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

Plan = Generator[tuple[Any, ...], Any, T]
"""A sans-I/O plan: yields one command (a tuple of arguments) at a time, receives
its raw reply (or has the command's exception thrown in), returns its result.
Both transports drive the same plans: :meth:`Scripts.drive` here, the asyncio
client's driver in ``aio_transport.py``."""


class ScriptSet:
    """How the scripts are loaded and called on one server, without I/O.

    The state (sources, SHA1s, function names) and the rules (FCALL, else
    EVALSHA; reload a library or a script the server lost; map out-of-memory
    and wrong-type refusals) are shared by the sync :class:`Scripts` and the
    asyncio client's scripts: each transport only sends the commands. The fast
    path (:meth:`command`) is one tuple; what happens after an error reply is
    the plan :meth:`recover`.
    """

    def __init__(self, keys: Keys, where: str, *, functions: bool = False) -> None:
        self.keys = keys
        self._tag = keys.tag
        # appended to the fresh run ids of this shard's enqueues: "~<k>" with
        # shards > 1, "" with one shard (shards.py)
        self.id_suffix = ""
        self._where = where
        self._sources: dict[str, str] | None = None
        self._shas: dict[str, str] = {}
        self._functions: dict[str, str] | None = None
        self._library = ""
        self._library_name = ""
        # Off by default: a function library is found by its *name*, which any
        # user allowed FUNCTION LOAD can replace (see the module docstring).
        self.use_functions = functions
        # True: the server's script cache is known to hold the scripts (a
        # supervisor loaded them before forking this process), so configure()
        # asks nothing about them; one the server lost since (a restart, SCRIPT
        # FLUSH) is sent as EVAL on its NOSCRIPT reply (recover), as always.
        self.preloaded = False

    def configure(self, version: tuple[int, ...], *, cluster: bool = False) -> Plan[None]:
        """Choose how to call the scripts on a server of ``version`` (loads the
        function library on Redis >= 7 where functions are usable). ``cluster``: the
        server is a Redis Cluster node, the scripts start with the slot probe
        (``luafiles.SLOT_PROBE``); off a cluster they are sent without it."""
        sources = load_sources(version, probe=cluster)
        self._shas = {
            name: hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()
            for name, text in sources.items()
        }
        self._sources = sources
        self._functions = None
        if version >= (7, 0) and self.use_functions:
            lib, bodies = _read_lua()
            self._library, names = build_library(lib, bodies, probe=cluster)
            self._library_name = library_name(lib, bodies, probe=cluster)
            if (yield from self._load_library()):
                self._functions = names
        if self._functions is None and not self.preloaded:
            yield from self._preload_scripts()

    def _preload_scripts(self) -> Plan[None]:
        """SCRIPT LOAD the scripts the server's cache lacks, so the first call of each
        is not a NOSCRIPT round trip (a flushed cache is still handled by recover())."""
        names = list(self._shas)
        assert self._sources is not None
        try:
            present = yield ("SCRIPT", "EXISTS", *(self._shas[n] for n in names))
            for name, there in zip(names, present, strict=True):
                if not there:
                    yield ("SCRIPT", "LOAD", self._sources[name])
        except ResponseError as exc:  # e.g. an ACL user without SCRIPT: loaded lazily
            log.debug("could not preload the scripts at %s: %s", self._where, exc)

    def _load_library(self) -> Plan[bool]:
        """FUNCTION LOAD the library, or verify the one loaded under its name.

        Never REPLACE, and never trust a library by its name alone: a library of
        that name whose code differs from ours (replaced by another user of the
        server) is refused and the scripts run through EVALSHA instead. One gone by
        the time we read it (another user's FUNCTION FLUSH) is loaded again.
        """
        for _ in range(3):
            try:
                yield ("FUNCTION", "LOAD", self._library)
            except ResponseError as exc:
                if "already exists" not in str(exc):
                    log.info(
                        "Redis functions unavailable at %s (%s); using EVALSHA", self._where, exc
                    )
                    return False
            else:
                return True
            ours = yield from self._library_is_ours()
            if ours is not None:
                return ours
        log.info("functions keep vanishing at %s (FUNCTION FLUSH?); using EVALSHA", self._where)
        return False

    def _library_is_ours(self) -> Plan[bool | None]:
        """True when the library loaded under our name holds exactly our code, None
        when no library of that name is loaded (any more)."""
        try:
            reply = yield ("FUNCTION", "LIST", "LIBRARYNAME", self._library_name, "WITHCODE")
        except ResponseError as exc:
            log.info("cannot read the function library at %s (%s); using EVALSHA", self._where, exc)
            return False
        found = False
        for entry in reply or ():
            if not isinstance(entry, dict):
                entry = dict(zip(entry[::2], entry[1::2], strict=False))
            fields = entry
            if text(fields.get(b"library_name", b"")) != self._library_name:
                continue
            if text(fields.get(b"library_code", b"")) == self._library:
                return True
            found = True
        if not found:  # nothing of that name: absent, not replaced
            return None
        log.error(
            "the Redis function library %s at %s does not hold redflow-mp's code (replaced "
            "by another user of the server?); not calling it: scripts run through EVALSHA, "
            "which is content-addressed. Deny FUNCTION to the other users of this server.",
            self._library_name,
            self._where,
        )
        return False

    def command(self, name: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The command that calls script ``name`` (configured first)."""
        functions = self._functions
        if functions is not None:
            return ("FCALL", functions[name], len(keys), *keys, *args)
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    def recover(
        self, name: str, keys: tuple[str, ...], args: tuple[Any, ...], exc: ResponseError
    ) -> Plan[Any]:
        """After ``exc`` answered :meth:`command`: reload what the server lost and
        call again, or raise the error (out of memory and wrong type mapped)."""
        # Decided by the error, not by the state now: another thread (or task) may
        # have finished configuring since the failed command was built.
        # The call after a reload is one EVAL of the script's text, never "load,
        # then call": another user of the server running SCRIPT FLUSH / FUNCTION
        # FLUSH in a loop empties the cache between the two. EVAL caches it too.
        try:
            lost_function = "Function not found" in str(exc)
            if not lost_function and not is_noscript(exc):
                raise exc
            # a library refused (not our code) or unavailable: EVALSHA from now on,
            # as configure() decides at start; this call is the EVAL below
            if (
                lost_function
                and self._functions is not None
                and not (yield from self._load_library())
            ):
                self._functions = None
            assert self._sources is not None
            return (yield ("EVAL", self._sources[name], len(keys), *keys, *args))
        except ResponseError as err:
            mapped = self._mapped(name, err)
            if mapped is None:
                raise
            raise mapped from err

    def _mapped(self, name: str, exc: ResponseError) -> RedflowError | None:
        mapped = refused(exc, name.replace("_", " "), self._where)
        if mapped is not None:
            return mapped
        if "WRONGTYPE" in str(exc):
            return WrongTypeError(
                f"{name.replace('_', ' ')} found a key of the wrong type under prefix "
                f"{self.keys.prefix!r} at {self._where}: written by hand or by another "
                "program, or a keyspace of an older redflow-mp (ready lists: stop its "
                f"supervisors and run `redflow migrate`) ({exc})"
            )
        return None

    # --- calls shared by both clients: arguments and replies ------------------

    def enqueue_call(
        self,
        run_id: str,
        workflow: str,
        queue: str,
        input_json: bytes,
        max_attempts: int,
        run_at_ms: int,
        idempotency_key: str,
        idempotency_ttl_ms: int,
        parent_run_id: str,
        cron_id: str,
        max_concurrency: int | None,
        timeout_ms: int | None,
        priority: int = 0,
        linked: bool = False,
        trace: tuple[str, ...] = (),
        fallback: bool = False,
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """Keys and arguments of ``enqueue_run`` (read the reply with :func:`enqueue_reply`);
        ``priority`` is checked by the caller (:func:`check_priority`); ``linked``: the
        parent awaits the child (its cancel cascades); ``trace``: the caller's
        ``traceparent`` and ``tracestate`` (:func:`~redflow_mp.tracing.trace_args`);
        ``fallback``: the run goes on ``default`` for want of its workflow's
        metadata (``queueFallback``, adopt_runs.lua). A run with none of the optional
        arguments set sends the first seven only (enqueue_run.lua: packing each
        argument is about 1,200 CPU instructions)."""
        args: tuple[Any, ...] = (
            self._tag,
            run_id,
            workflow,
            queue,
            input_json,
            max_attempts,
            "" if max_concurrency is None else max_concurrency,
        )
        if (
            priority
            or run_at_ms
            or timeout_ms is not None
            or idempotency_key
            or parent_run_id
            or linked
            or cron_id
            or trace
            or fallback
        ):
            args += (
                priority,
                run_at_ms,
                "" if timeout_ms is None else timeout_ms,
                idempotency_key,
                idempotency_ttl_ms,
                parent_run_id,
                "1" if linked else "",
                cron_id,
                *((*trace, "", "")[:2] if fallback else trace),
            )
            if fallback:
                args += ("1",)
        return (self.keys.run(run_id),), args

    def cancel_call(
        self, run_id: str, reason: str, parent: str = ""
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """Keys and arguments of ``cancel_run`` (see :func:`cancel_reply`); ``parent``:
        the run whose cancel cascade sends it (the run is canceled only if it is
        that parent's child), '' for a cancel of the run itself."""
        if parent:
            return (self.keys.run(run_id),), (self._tag, run_id, reason, parent)
        return (self.keys.run(run_id),), (self._tag, run_id, reason)

    def resume_call(self, run_id: str, token: str) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """Keys and arguments of ``resume_run`` (read the reply with :func:`resume_reply`);
        ``token`` (fresh per call) makes a resend after a lost reply harmless."""
        return (self.keys.run(run_id),), (self._tag, run_id, token)


def resume_plan(args: tuple[Any, ...], run_id: str) -> Generator[tuple[Any, ...], Any, int]:
    """The ``resume_run`` calls of one resume (each one's ARGV: send its reply back),
    from the first call's ``args`` (:meth:`Scripts.resume_call`); returns the new
    attempt (:func:`resume_reply`). Past the records one call reads (as the
    claim: 1,000, or 1 MiB in all) the first reply asks for pages: the records
    to drop are dropped an HSCAN page a call, then the run is resumed."""
    reply = yield args
    if reply[0] == 2:
        # The script sized the first page by stepBytes (a hint); the next follow
        # the bytes the pages held (hashpages): 10**15 in it made 1,070 calls
        # of a record for 1,500 small steps.
        pages = BytePages.from_count(int(reply[2]))
        cursor: Any = 0
        while True:
            reply = yield (*args[:3], "page", cursor, pages.count)
            if reply[0] != 3:
                return resume_reply(run_id, reply)
            cursor = reply[1]
            if text(cursor) == "0":
                break
            if len(reply) > 3:
                pages.took_sized(int(reply[2]), int(reply[3]))
        reply = yield (*args[:3], "paged")
    return resume_reply(run_id, reply)


def resume_reply(run_id: str, reply: Any) -> int:
    """The resumed run's new attempt number, from ``resume_run``'s reply; raises
    :class:`RunNotResumableError` when the run is unknown or not failed/canceled."""
    if reply[0] == 1:
        return int(reply[2])
    raise RunNotResumableError(run_id, text(reply[1]) if reply[0] == -1 else None)


def enqueue_reply(reply: Any) -> tuple[str, bool]:
    """(run id, created) from ``enqueue_run``'s reply: the id when the call created
    the run, ``[id, 0]`` when the run existed (``enqueue_run.lua``)."""
    if type(reply) is list:
        return text(reply[0]), reply[1] == 1
    return text(reply), True


def cancel_reply(reply: Any) -> str | None:
    """The status after ``cancel_run`` (``canceled``, or ``running`` when asked to
    stop), or None when the run does not exist, had finished already, or is not
    the child of the cascade's parent (nothing changed: see ``cancel_call``)."""
    if reply[0] != 1:
        return None
    return text(reply[1])


class Scripts(ScriptSet, ClaimCalls, WaitCalls, UpkeepCalls):
    """The scripts bound to one (sync) transport and one key namespace."""

    def __init__(self, transport: Transport, keys: Keys, *, functions: bool = False) -> None:
        super().__init__(keys, transport.describe(), functions=functions)
        self._t = transport
        self._lists = QueueLists()  # claims of many queues name a registered list
        self._packed = PackedClaims()  # claims naming their queues, packed ahead

    def ensure_loaded(self) -> None:
        """Configure the scripts for this server now (before a pipeline uses
        :meth:`command`)."""
        if self._sources is None:
            self._load()

    def _load(self) -> None:
        version = self._t.server_version()  # connects: a cluster is detected by then
        self.drive(self.configure(version, cluster=self._t.clustered), retry=True)

    def drive(self, plan: Plan[T], *, retry: bool, fresh: bool = True) -> T:
        """Run ``plan`` on this thread's connection: each command's reply (or its
        exception) goes back to the plan; returns what the plan returns."""
        try:
            cmd = next(plan)
            while True:
                try:
                    reply = self._t.call(*cmd, retry=retry, fresh=fresh)
                except Exception as exc:
                    error = exc
                else:
                    cmd = plan.send(reply)
                    continue
                cmd = plan.throw(error)
        except StopIteration as stop:
            return cast(T, stop.value)

    def run(
        self,
        name: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        *,
        retry: bool,
        fresh: bool = True,
    ) -> Any:
        """Call script ``name`` (FCALL, or EVALSHA); reload it when the server lost it;
        map an out-of-memory refusal to :class:`RedisOutOfMemoryError`. ``fresh``:
        see ``Transport.call`` (false for a call sent once whose caller resends it
        itself after a network error)."""
        if self._sources is None:
            self._load()
        f = self._functions
        head = ("EVALSHA", self._shas[name]) if f is None else ("FCALL", f[name])
        try:
            return self._t.call(*head, len(keys), *keys, *args, retry=retry, fresh=fresh)
        except ResponseError as exc:
            return self.drive(self.recover(name, keys, args, exc), retry=retry, fresh=fresh)

    # --- typed entry points -------------------------------------------------

    def enqueue(
        self,
        run_id: str,
        workflow: str,
        queue: str,
        input_json: bytes,
        max_attempts: int,
        run_at_ms: int,
        idempotency_key: str,
        idempotency_ttl_ms: int,
        parent_run_id: str,
        cron_id: str,
        max_concurrency: int | None,
        timeout_ms: int | None,
        priority: int = 0,
    ) -> tuple[str, bool]:
        """Enqueue; returns (run id, created). A run that exists already (same
        ``run_id``, or the same idempotency key) is returned as it is, never
        overwritten, so a call resent after a lost reply is safe: this method
        resends once itself. ``priority`` 0..9: higher is claimed first."""
        keys, args = self.enqueue_call(
            run_id,
            workflow,
            queue,
            input_json,
            max_attempts,
            run_at_ms,
            idempotency_key,
            idempotency_ttl_ms,
            parent_run_id,
            cron_id,
            max_concurrency,
            timeout_ms,
            check_priority(priority),
        )
        return self.send_enqueue(keys, args)

    def send_plain_enqueue(self, packer: PlainEnqueues, target: Any, data: bytes) -> str:
        """:meth:`send_enqueue` of a run with no option (``packed.py``): a fresh id,
        the call packed ahead, on a plain transport (:attr:`Transport.plain`)."""
        if self._sources is None:
            self._load()
        # ids._state.next_id() is new_run_id() without its frame (the state is the
        # module's, replaced in a forked child: read at each call)
        run_id = ids._state.next_id() + self.id_suffix
        f = self._functions
        head = ("EVALSHA", self._shas["enqueue_run"]) if f is None else ("FCALL", f["enqueue_run"])
        wf, queue, attempts, limit = target[:4]
        packed = packer.pack(head, self._tag, wf, queue, attempts, limit, run_id, data)
        # The reply's id is this one: a plain run has no idempotency key, and a
        # resend finds the run by this id (the reply is not decoded).
        try:
            try:
                self._t.call_packed(packed, retry=False, fresh=False)  # resent below
            except NETWORK_ERRORS:
                self._t.call_packed(packed, retry=True)
            return run_id
        except ResponseError as exc:
            call = self.enqueue_call(
                run_id,
                wf,
                queue,
                data,
                attempts,
                0,
                "",
                0,
                "",
                "",
                limit,
                None,
            )
            return enqueue_reply(self.drive(self.recover("enqueue_run", *call, exc), retry=True))[0]

    def send_enqueue(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> tuple[str, bool]:
        """Call ``enqueue_run`` with :meth:`enqueue_call`'s keys and arguments: once,
        and once more after a network error (the run id makes a resend harmless)."""
        try:
            reply = self.run("enqueue_run", keys, args, retry=False, fresh=False)  # resent below
        except NotReplicatedError:
            raise  # answered: a resend would only wait for the same replica again
        except NETWORK_ERRORS:
            reply = self.run("enqueue_run", keys, args, retry=True)
        return enqueue_reply(reply)

    def confirm_result(self) -> None:
        """A write, then (durability "wait"/"waitaof") its WAIT: confirms every
        earlier write of this server, such as a finish a result() read; raises
        ``NotReplicatedError`` when no replica confirmed it in time."""
        self.run("confirm_result", (self.keys.result_confirm,), (self._tag,), retry=True)

    def finalize(
        self,
        run_id: str,
        token: str,
        mode: str,
        payload: bytes | str,
        extra: int = 0,
        hooked: Sequence[str] = (),
    ) -> str | None:
        """Apply a fenced finish; None when the lease is no longer ours.

        Resend-safe: when this token's finish was already applied (a resend after
        a lost reply, also the transport's own), returns the run's status now.
        ``hooked``: the workflows whose ``on_failure`` the caller runs; a run of
        one of them failed here is recorded as due (``hookdue.py``)."""
        args: tuple[Any, ...] = (self._tag, run_id, token, mode, payload, extra)
        if hooked:
            args += (HOOK_GRACE_MS, *hooked)
        reply = self.run("finalize_run", (self.keys.run(run_id),), args, retry=True)
        if reply[0] != 1:
            return None
        return text(reply[1])

    def renew(self, lease_ms: int, pairs: list[tuple[str, str]]) -> list[tuple[bool, bool]]:
        """Renew leases; per pair: (still held, cancellation requested)."""
        if not pairs:
            return []
        flat: list[str] = []
        for run_id, token in pairs:
            flat.extend((run_id, token))
        reply = self.run(
            "renew_lease",
            (self.keys.leases,),
            (self._tag, lease_ms, *flat),
            retry=True,
        )
        return [(reply[i] == 1, bool(reply[i + 1])) for i in range(0, len(reply), 2)]

    def write_step(
        self,
        run_id: str,
        token: str,
        name: str,
        record: bytes,
        lease_ms: int,
        *,
        progress: bool = False,
    ) -> tuple[bool, bool]:
        """Fenced step write; returns (lease held, cancellation requested).
        ``progress``: a succeeded record that clears the run's crash count
        (``Execution.made_progress``).

        Raises :class:`LeaseLostError` naming the field when the run's record is
        damaged (its step counter is not an integer): the script failed the run
        as ``CorruptRecord`` and this execution must stop."""
        reply = self.run(
            "write_step",
            (self.keys.run_steps(run_id),),
            (self._tag, run_id, token, name, record, lease_ms, "1" if progress else ""),
            retry=True,
        )
        if reply[0] == -2:
            raise corrupted(run_id, reply[1])
        if reply[0] != 1:
            return False, False
        return True, bool(reply[1])

    def cancel(self, run_id: str, reason: str, parent: str = "") -> str | None:
        keys, args = self.cancel_call(run_id, reason, parent)
        return cancel_reply(self.run("cancel_run", keys, args, retry=True))

    def promote(self, batch: int, queue_batch: int = 100) -> tuple[int, int | None, bool]:
        """Promote due scheduled runs of up to ``queue_batch`` queues, reading at
        most ``batch`` scheduled entries in all (one call's Redis time is bounded
        by ``batch``, not ``batch`` x queues); returns (promoted, earliest
        remaining due ms, more to do now)."""
        reply = self.run(
            "promote_runs", (self.keys.due_queues,), (self._tag, batch, queue_batch), retry=True
        )
        earliest = int(reply[1])
        return int(reply[0]), (earliest if earliest >= 0 else None), reply[2] == 1

    def reap(self, batch: int) -> tuple[int, list[str], bool]:
        """Requeue up to ``batch`` runs whose lease expired and release up to
        ``batch`` parked runs; returns (released, requeued ids, more expired
        leases or releasable parked runs may remain)."""
        reply = self.run("reap_runs", (self.keys.leases,), (self._tag, batch), retry=True)
        more = int(reply[1]) >= batch or int(reply[0]) >= batch
        return int(reply[0]), [text(x) for x in reply[5:]], more

    def reap_guarded(
        self, batch: int, since: int | None, hold: int, gap_ms: int, hold_ms: int
    ) -> tuple[int, list[str], bool, int, int, list[str]]:
        """:meth:`reap` with the stall guard of ``reap_runs.lua``: ``since`` is the
        server time the previous call returned (None: none), ``hold`` the hold it
        returned. Returns (released, requeued ids, more, server time, hold, slots
        freed of runs gone or finished, as 'workflow run-id')."""
        args = (self._tag, batch, "" if since is None else since, hold, gap_ms, hold_ms)
        reply = self.run("reap_runs", (self.keys.leases,), args, retry=True)
        more = int(reply[1]) >= batch or int(reply[0]) >= batch
        ids, ghosts = [text(x) for x in reply[5:]], [text(x) for x in reply[4]]
        return int(reply[0]), ids, more, int(reply[2]), int(reply[3]), ghosts

    def resume(self, run_id: str, token: str) -> int:
        """Resume a failed or canceled run (:func:`resume_plan`); its new attempt.
        Raises :class:`RunNotResumableError` when it is unknown or not resumable."""
        keys, args = self.resume_call(run_id, token)
        plan = resume_plan(args, run_id)
        sent = next(plan)
        while True:
            try:
                sent = plan.send(self.run("resume_run", keys, sent, retry=True))
            except StopIteration as stop:
                return cast(int, stop.value)

    def requeue_claimed(self, token: str, cause: str, lease_ms: int) -> list[tuple[str, str]]:
        """Put back runs claimed with ``token`` by a worker that died before saying so.

        Looks at the runs claimed in the last two ``lease_ms`` (older ones are the
        reaper's). Returns (run id, status) pairs: ``queued`` when put back,
        ``canceled`` when a cancel request was pending (the run ends instead).
        """
        reply = self.run(
            "requeue_claimed",
            (self.keys.runs_status("running"),),
            (self._tag, token, cause, lease_ms),
            retry=True,
        )
        return [(text(reply[i]), text(reply[i + 1])) for i in range(0, len(reply), 2)]
