"""The status board read by the parent while a child writes it flat out: the
sequence and ``runs_done`` are written low byte first (one byte while they do
not carry, the whole word when they do), and the parent acts on what it reads
(``runs_done`` for ``served``, the held runs and their tokens to put them back
when the child dies, the beats for liveness). Across byte carries (every 256th
run, and 0x1000000's over three bytes), every read is consistent: the count
never goes back or jumps, a held run is whole and is the one the count says.
The beat count (no lock) may read torn mid-carry (lower than the counts before
and after), which the liveness check takes for a change, that is a beat, as it
was one: nothing it acts on wrongly."""

from __future__ import annotations

import os
import struct
import time

import pytest

from redflow_supervisor.board import Board, SlotState

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

RUNS = 20_000
START = 0xFFFFFF - 1_000  # runs_done crosses 0x1000000 (a carry over three bytes)


def _child(board: Board) -> None:
    for n in range(START, START + RUNS):
        board.push(0, f"run-{n}", f"tok-{n}", "wf", 5.0, claimed=True)
        board.beat(0)
        board.mark_finishing(0)
        board.pop(0)


def test_the_parent_reads_every_entry_whole_while_a_child_writes_it() -> None:
    board = Board(1)
    try:
        board.claim_entry(0, os.getpid())
        struct.pack_into("<I", board._mm, 12, START)  # runs_done just below a carry
        struct.pack_into("<I", board._mm, 0, 0xFFFFF000)  # the sequence near its wrap
        pid = os.fork()
        if pid == 0:  # the child: writes, never returns into pytest
            try:
                _child(board)
            finally:
                os._exit(0)
        last = START
        reads = 0
        deadline = time.monotonic() + 90
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            entry = board.read(0)
            reads += 1
            assert START <= last <= entry.runs_done <= START + RUNS, (last, entry.runs_done)
            assert entry.runs_done - last <= RUNS
            for held in entry.held:
                assert held.run_id == f"run-{entry.runs_done}", (held, entry.runs_done)
                assert held.token == f"tok-{entry.runs_done}" and held.workflow == "wf"
                assert held.timeout in (5.0, -1.0)
            if entry.held:
                assert entry.state is SlotState.BUSY
            # torn (written low byte first, no lock) it reads lower, never past
            assert 0 <= board.beats(0) <= RUNS
            last = entry.runs_done
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            assert time.monotonic() < deadline
        final = board.read(0)
        assert final.runs_done == START + RUNS and final.held == ()
        assert board.beats(0) == RUNS
        assert reads > 100
    finally:
        board.close()
