"""The status board: shared memory through which a supervisor and its children
know about each other without a system call per run.

The parent creates one anonymous shared mapping before forking; each child
owns one entry. A child writes its pid, state, runs done and the stack of runs
it holds (the run it executes; a stack because nesting was once possible: a
waiting parent now suspends instead) with a sequence lock (odd while writing), so the parent never
reads a torn entry. The parent writes only its own request bytes in the same
entry: "recycle after this run", "stop after this run" (drain, rolling
restart, TTOU: the request a handler cannot silence by changing the child's
SIGTERM handling) and "abort run X" (timeout or cancellation).

What this buys: when a child dies, the parent reads which runs it held and
their lease tokens, and puts them back at once (SPEC §5 instant recovery); it
extends the leases of busy children (lease backstop) and enforces timeouts,
all from memory.

Fork safety: the mapping is created before any child exists and never
resized; children inherit it. No locks are shared across processes.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["AbortReason", "Board", "BoardEntry", "Held", "SlotState"]

ENTRY_SIZE = 1024
MAX_DEPTH = 4
_HEADER = struct.Struct("<IiBBHId")  # seq pid state depth pad runs_done booted_at
_STACK_AT = 128
_ITEM = struct.Struct("<B47sB31sddB103s")  # run id, token, started, timeout, workflow
_TIMEOUT_AT = 1 + 47 + 1 + 31 + 8  # offset of the timeout inside an item
_CLAIM_TOKEN = 24  # 1 length byte + 31 bytes: the token of the claim in flight
_HOOK_SINCE = 56  # f64: when the running on_failure hook began (monotonic; 0: none)
_REQ_RECYCLE = 64  # 1: recycle after this run; 2: stop after this run
_RECYCLE = 1
_STOP = 2
_REQ_ABORT = 65
_REQ_ABORT_RUN = 66  # 1 length byte + 47 bytes
_BEAT = 120  # u32: beats of the child, one a second from a thread of its own (no lock)
_MAX_ID = 47
_MAX_TOKEN = 31
_MAX_WF = 103
# Precompiled: the child writes its entry several times per run.
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_FINISHING = _F64.pack(-1.0)  # a held run's timeout once its handler returned
_ITEM_SIZE = _ITEM.size


class SlotState(IntEnum):
    FREE = 0
    BOOTING = 1
    IDLE = 2
    BUSY = 3
    EXITING = 4


_BUSY = int(SlotState.BUSY)
_IDLE = int(SlotState.IDLE)


class AbortReason(IntEnum):
    NONE = 0
    TIMEOUT = 1
    CANCEL = 2


@dataclass(slots=True, frozen=True)
class Held:
    """One run an entry holds: id, lease token, start (monotonic), timeout (s or 0).

    A negative timeout marks a run whose handler has returned and whose finish is
    on its way to Redis: it is still recovered if the child dies, and its lease is
    still extended, but it can no longer be timed out or aborted.
    """

    run_id: str
    token: str
    started: float
    timeout: float
    workflow: str

    @property
    def finishing(self) -> bool:
        return self.timeout < 0


@dataclass(slots=True, frozen=True)
class BoardEntry:
    """A consistent snapshot of one entry."""

    pid: int
    state: SlotState
    runs_done: int
    booted_at: float
    held: tuple[Held, ...]
    claim_token: str = ""
    hook_since: float = 0.0  # an on_failure hook runs since (monotonic), 0: none

    @property
    def served(self) -> bool:
        """Whether the child reached its worker loop (it ran, holds or is claiming
        a run): it was ready, even if it left before the parent saw it so."""
        return bool(self.runs_done or self.held or self.claim_token)

    @property
    def current(self) -> Held | None:
        return self.held[-1] if self.held else None


def _clip(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) > limit:
        data = data[:limit]
    return data


class Board:
    """Shared-memory entries; create in the parent, use by index in both processes."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("board capacity must be >= 1")
        self.capacity = capacity
        self._mm = mmap.mmap(-1, capacity * ENTRY_SIZE)

    def close(self) -> None:
        self._mm.close()

    # -------------------------------------------------------------- child side

    # push, pop and mark_finishing (three writes a run) write _begin and _end out:
    # two Python calls fewer each. And each adds one to the sequence (and pop to
    # runs_done) by its low byte alone while it does not carry (255 times in 256):
    # one byte read and written instead of struct's unpack and pack of the u32,
    # about 700 CPU instructions fewer each (the entry's bytes are the same; the
    # parity the parent reads is the low byte's; a one-byte store is never torn).

    def _begin(self, index: int) -> int:
        base = index * ENTRY_SIZE
        mm = self._mm
        _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)
        return base

    def _end(self, base: int) -> None:
        mm = self._mm
        _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)

    def beat(self, index: int) -> None:
        """One more beat of this child (its beat thread, each second). Written
        without the sequence lock, which the main thread may hold: the parent
        only looks at whether the count changes, and a torn read is a change."""
        at = index * ENTRY_SIZE + _BEAT
        _U32.pack_into(self._mm, at, (_U32.unpack_from(self._mm, at)[0] + 1) & 0xFFFFFFFF)

    def claim_entry(self, index: int, pid: int) -> None:
        """Reset entry ``index`` for a new child (called by the parent before fork)."""
        base = index * ENTRY_SIZE
        self._mm[base : base + ENTRY_SIZE] = bytes(ENTRY_SIZE)
        _HEADER.pack_into(self._mm, base, 0, pid, SlotState.BOOTING, 0, 0, 0, time.monotonic())

    def set_state(self, index: int, state: SlotState, pid: int | None = None) -> None:
        base = self._begin(index)
        if pid is not None:
            struct.pack_into("<i", self._mm, base + 4, pid)
        self._mm[base + 8] = int(state)
        self._end(base)

    def push(
        self,
        index: int,
        run_id: str,
        token: str,
        workflow: str,
        timeout: float | None,
        *,
        claimed: bool = False,
    ) -> None:
        """Put a run on entry ``index``'s stack; ``claimed``: it is the run of the
        claim whose token the entry shows, which is cleared in the same write."""
        mm = self._mm
        base = index * ENTRY_SIZE  # _begin, written out (as in pop, mark_finishing)
        seq = mm[base]  # the sequence's low byte: one byte written unless it carries
        if seq != 255:
            mm[base] = seq + 1
        else:
            _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)
        depth = mm[base + 9]
        if depth < MAX_DEPTH:
            rid = run_id.encode()[:_MAX_ID]
            tok = token.encode()[:_MAX_TOKEN]
            wf = workflow.encode()[:_MAX_WF]
            _ITEM.pack_into(
                mm,
                base + _STACK_AT + depth * _ITEM.size,
                len(rid),
                rid,
                len(tok),
                tok,
                time.monotonic(),
                timeout or 0.0,
                len(wf),
                wf,
            )
        mm[base + 9] = depth + 1
        mm[base + 8] = _BUSY
        if claimed:  # after the entry holds the run, as set_claim_token(index, "")
            mm[base + _CLAIM_TOKEN] = 0
        seq = mm[base]  # _end
        if seq != 255:
            mm[base] = seq + 1
        else:
            _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)

    def pop(self, index: int) -> None:
        mm = self._mm
        base = index * ENTRY_SIZE
        seq = mm[base]  # _begin
        if seq != 255:
            mm[base] = seq + 1
        else:
            _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)
        depth = mm[base + 9]
        if depth > 0:
            depth -= 1
            mm[base + 9] = depth
        if depth == 0:
            mm[base + 8] = _IDLE
            done = mm[base + 12]  # runs_done's low byte, as the sequence's
            if done != 255:
                mm[base + 12] = done + 1
            else:
                _U32.pack_into(mm, base + 12, (_U32.unpack_from(mm, base + 12)[0] + 1) & 0xFFFFFFFF)
        seq = mm[base]  # _end
        if seq != 255:
            mm[base] = seq + 1
        else:
            _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)

    def mark_finishing(self, index: int) -> None:
        """The innermost run's handler returned; its finish is in flight."""
        mm = self._mm
        base = index * ENTRY_SIZE
        seq = mm[base]  # _begin
        if seq != 255:
            mm[base] = seq + 1
        else:
            _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)
        depth = mm[base + 9]
        if 0 < depth <= MAX_DEPTH:
            at = base + _STACK_AT + (depth - 1) * _ITEM_SIZE + _TIMEOUT_AT
            mm[at : at + 8] = _FINISHING  # the timeout -1.0 (_F64.pack_into's bytes)
        seq = mm[base]  # _end
        if seq != 255:
            mm[base] = seq + 1
        else:
            _U32.pack_into(mm, base, (_U32.unpack_from(mm, base)[0] + 1) & 0xFFFFFFFF)

    def set_claim_token(self, index: int, token: str) -> None:
        """Publish the token of the claim about to be sent: if the child dies before
        the claimed run is on the board, the parent finds the run by its lease."""
        mm = self._mm
        base = index * ENTRY_SIZE + _CLAIM_TOKEN
        if not token:
            mm[base] = 0
            return
        data = token.encode()[:_MAX_TOKEN]
        mm[base] = 0
        mm[base + 1 : base + 1 + len(data)] = data
        mm[base] = len(data)

    def set_hook(self, index: int, since: float) -> None:
        """An ``on_failure`` hook runs since ``since`` (monotonic); 0: it returned."""
        base = self._begin(index)
        _F64.pack_into(self._mm, base + _HOOK_SINCE, since)
        self._end(base)

    def recycle_requested(self, index: int) -> bool:
        return self._mm[index * ENTRY_SIZE + _REQ_RECYCLE] == _RECYCLE

    def stop_requested(self, index: int) -> bool:
        return self._mm[index * ENTRY_SIZE + _REQ_RECYCLE] == _STOP

    def leave_requested(self, index: int) -> tuple[bool, bool]:
        """(stop, recycle) requested, in one read (a child's check before each claim)."""
        req = self._mm[index * ENTRY_SIZE + _REQ_RECYCLE]
        return req == _STOP, req == _RECYCLE

    def abort_request(self, index: int) -> tuple[AbortReason, str]:
        base = index * ENTRY_SIZE
        reason = AbortReason(self._mm[base + _REQ_ABORT])
        n = self._mm[base + _REQ_ABORT_RUN]
        run = bytes(self._mm[base + _REQ_ABORT_RUN + 1 : base + _REQ_ABORT_RUN + 1 + n])
        return reason, run.decode("utf-8", "replace")

    # ------------------------------------------------------------- parent side

    def read(self, index: int, *, patience: float = 0.05) -> BoardEntry:
        """A consistent snapshot of entry ``index``; never fails.

        A writer that is preempted, stopped or killed between the two sequence
        increments leaves the entry odd. After ``patience`` seconds the entry is
        read without the lock: ``push`` writes an item before it raises the depth
        and ``pop`` lowers the depth first, so the runs read that way are whole
        (the stack as it was just before or just after the interrupted write).
        """
        base = index * ENTRY_SIZE
        deadline: float | None = None
        while True:
            seq1, pid, state, depth, _pad, done, booted = _HEADER.unpack_from(self._mm, base)
            items = []
            for i in range(min(depth, MAX_DEPTH)):
                n_id, rid, n_tok, tok, started, timeout, n_wf, wf = _ITEM.unpack_from(
                    self._mm, base + _STACK_AT + i * _ITEM.size
                )
                items.append(
                    Held(
                        rid[:n_id].decode("utf-8", "replace"),
                        tok[:n_tok].decode("utf-8", "replace"),
                        started,
                        timeout,
                        wf[:n_wf].decode("utf-8", "replace"),
                    )
                )
            (seq2,) = struct.unpack_from("<I", self._mm, base)
            n_claim = self._mm[base + _CLAIM_TOKEN]
            claim = bytes(self._mm[base + _CLAIM_TOKEN + 1 : base + _CLAIM_TOKEN + 1 + n_claim])
            entry = BoardEntry(
                pid,
                SlotState(state),
                done,
                booted,
                tuple(items),
                claim.decode("utf-8", "replace"),
                _F64.unpack_from(self._mm, base + _HOOK_SINCE)[0],
            )
            if seq1 == seq2 and not seq1 & 1:
                return entry
            now = time.monotonic()
            if deadline is None:
                deadline = now + patience
            elif now >= deadline:
                return entry
            os.sched_yield()

    def beats(self, index: int) -> int:
        """How many times the child of entry ``index`` has beaten."""
        return int(_U32.unpack_from(self._mm, index * ENTRY_SIZE + _BEAT)[0])

    def request_recycle(self, index: int) -> None:
        if self._mm[index * ENTRY_SIZE + _REQ_RECYCLE] != _STOP:
            self._mm[index * ENTRY_SIZE + _REQ_RECYCLE] = _RECYCLE

    def request_stop(self, index: int) -> None:
        """Ask the child to stop after its current run (it also gets SIGTERM, which
        a handler may have silenced: the child reads this between runs)."""
        self._mm[index * ENTRY_SIZE + _REQ_RECYCLE] = _STOP

    def request_abort(self, index: int, reason: AbortReason, run_id: str) -> None:
        base = index * ENTRY_SIZE
        rid = _clip(run_id, _MAX_ID)
        self._mm[base + _REQ_ABORT_RUN] = len(rid)
        self._mm[base + _REQ_ABORT_RUN + 1 : base + _REQ_ABORT_RUN + 1 + len(rid)] = rid
        self._mm[base + _REQ_ABORT] = int(reason)

    def free(self, index: int) -> None:
        base = index * ENTRY_SIZE
        self._mm[base : base + ENTRY_SIZE] = bytes(ENTRY_SIZE)
