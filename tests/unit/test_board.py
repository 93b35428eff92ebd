"""The shared status board: what a child publishes and the parent reads."""

from __future__ import annotations

import os

from redflow_supervisor.board import Board, SlotState


def test_push_pop_and_the_finishing_mark() -> None:
    board = Board(2)
    try:
        board.claim_entry(1, os.getpid())
        board.push(1, "outer", "tok-outer", "parent-wf", 60.0)
        board.push(1, "inner", "tok-inner", "child-wf", None)
        entry = board.read(1)
        assert entry.state is SlotState.BUSY
        assert [h.run_id for h in entry.held] == ["outer", "inner"]
        assert [h.timeout for h in entry.held] == [60.0, 0.0]
        assert not any(h.finishing for h in entry.held)

        board.mark_finishing(1)  # the inner handler returned; its finish is in flight
        entry = board.read(1)
        current = entry.current
        assert current is not None and current.run_id == "inner" and current.finishing
        assert current.token == "tok-inner"  # still recoverable by its lease token
        assert not entry.held[0].finishing  # the outer run can still time out

        board.pop(1)
        board.pop(1)
        entry = board.read(1)
        assert entry.held == () and entry.state is SlotState.IDLE and entry.runs_done == 1
        assert board.read(0).held == ()  # other entries untouched
    finally:
        board.close()


def test_claim_token_is_published_and_cleared() -> None:
    board = Board(1)
    try:
        board.claim_entry(0, os.getpid())
        assert board.read(0).claim_token == ""
        board.set_claim_token(0, "a" * 24)
        assert board.read(0).claim_token == "a" * 24
        board.set_claim_token(0, "short")  # a shorter token never shows old bytes
        assert board.read(0).claim_token == "short"
        board.push(0, "run", "short", "wf", None)
        assert board.read(0).current is not None  # the token does not disturb the stack
        board.set_claim_token(0, "")
        assert board.read(0).claim_token == ""
        assert board.read(0).held[0].token == "short"
    finally:
        board.close()


def test_stop_request_outranks_recycle_and_clears_with_the_entry() -> None:
    board = Board(2)
    board.claim_entry(0, 0)
    assert not board.stop_requested(0) and not board.recycle_requested(0)
    board.request_recycle(0)
    assert board.recycle_requested(0) and not board.stop_requested(0)
    board.request_stop(0)
    assert board.stop_requested(0) and not board.recycle_requested(0)
    board.request_recycle(0)  # a later recycle request does not undo the stop
    assert board.stop_requested(0)
    assert not board.stop_requested(1)
    board.free(0)
    assert not board.stop_requested(0) and not board.recycle_requested(0)
    board.close()


def test_the_sequence_and_runs_done_carry_past_each_byte() -> None:
    """The child adds one to the sequence and to runs_done by their low byte while
    it does not carry: across carries (and the u32's wrap) the words read back are
    the counts, the sequence even between writes, and the other entries untouched."""
    import struct

    board = Board(2)
    try:
        board.claim_entry(1, os.getpid())
        mm = board._mm
        base = 1024  # entry 1
        struct.pack_into("<I", mm, base, 0xFFFFFF00)  # 32 runs (4 writes each) from a wrap
        struct.pack_into("<I", mm, base + 12, 0x0000FFF0)
        seq = 0xFFFFFF00
        for n in range(1, 1001):
            board.push(1, f"run-{n}", "tok", "wf", 5.0, claimed=True)
            board.mark_finishing(1)
            board.pop(1)
            seq = (seq + 6) & 0xFFFFFFFF
            assert struct.unpack_from("<I", mm, base)[0] == seq
            entry = board.read(1, patience=0.0)
            assert entry.runs_done == 0xFFF0 + n and entry.held == ()
            assert entry.state is SlotState.IDLE
        board.push(1, "last", "tok", "wf", 5.0)
        assert [h.run_id for h in board.read(1).held] == ["last"]
        assert bytes(mm[:1024]) == bytes(1024)
    finally:
        board.close()
