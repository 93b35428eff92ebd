"""The packed enqueue of a plain run and the packed claim send the bytes hiredis
would pack."""

from __future__ import annotations

import enum
from typing import Any

import hiredis
import pytest

from redflow_mp.claimed import Finish
from redflow_mp.keys import Keys
from redflow_mp.packed import MAX_FORMATS, PackedClaims, PlainEnqueues

SHA = "0123456789abcdef0123456789abcdef01234567"


def whole(
    head: tuple[str, str],
    tag: str,
    wf: str,
    q: str,
    attempts: int,
    limit: Any,
    key: str,
    run_id: str,
    data: bytes,
) -> bytes:
    items: Any = (*head, 1, key, tag, run_id, wf, q, data, attempts, "" if limit is None else limit)
    packed: bytes = hiredis.pack_command(items)
    return packed


@pytest.mark.parametrize(
    ("head", "tag", "wf", "q", "attempts", "limit", "data"),
    [
        (("EVALSHA", SHA), "{ci}", "bench-noop", "bench", 3, 1000, b"{}"),
        (("FCALL", "redflow_enqueue_run"), "{ci}", "wf", "default", 1, None, b"null"),
        (("EVALSHA", SHA), "{100%}", "a%db%s", "q%%", 10, 1, b'{"x":"%d %s %b"}'),
        (("EVALSHA", SHA), "{pr\u00e9fixe}", "\u00e9t\u00e9-\u65e5", "\u00fc", 2, 7, b"[1,2]"),
        (("EVALSHA", SHA), "{ci}", "wf", "q", 1, None, b"x" * 100_000),
        (("EVALSHA", SHA), "{ci}", "wf", "q", 1, 5, b"y" * 1023),  # the last header kept
        (("EVALSHA", SHA), "{ci}", "wf", "q", 1, 5, b"z" * 1024),  # formatted
    ],
)
def test_the_packed_call_is_what_hiredis_packs(
    head: tuple[str, str], tag: str, wf: str, q: str, attempts: int, limit: Any, data: bytes
) -> None:
    ids = (
        "01JF8Z3K8Q9X0ABCDEF0123456",
        "01JF8Z3K8Q9X0ABCDEF0123457~2",
        "01JF8Z3K8Q9X0ABCDEF0123458",
    )
    # the first id's length is written into the format: ids of another length
    # (either one first) take the general format
    for order in (ids, ids[::-1]):
        packer = PlainEnqueues()
        for run_id in order:
            key = f"{tag}:run:{run_id}"
            got = packer.pack(head, tag, wf, q, attempts, limit, run_id, data)
            assert got == whole(head, tag, wf, q, attempts, limit, key, run_id, data)


def test_the_format_cache_is_bounded() -> None:
    packer = PlainEnqueues()
    for i in range(MAX_FORMATS + 10):
        packer.pack(("EVALSHA", SHA), "{ci}", f"wf{i}", "q", 1, None, "x", b"{}")
    assert len(packer._formats) <= MAX_FORMATS
    got = packer.pack(("EVALSHA", SHA), "{ci}", "wf0", "q", 1, None, "y", b"1")
    assert got == whole(("EVALSHA", SHA), "{ci}", "wf0", "q", 1, None, "{ci}:run:y", "y", b"1")


# --- claim_run (PackedClaims) -------------------------------------------------


def whole_claim(
    head: tuple[str, str],
    keys: Keys,
    lease_ms: int,
    queues: tuple[str, ...],
    turn: int,
    token: str,
    finish: Any,
    only_id: str,
    flags: int,
) -> bytes:
    """The call as ``Scripts.claim`` packed it whole (hiredis, through Scripts.run)."""
    key = keys.q_ready(queues[0]) if queues else keys.queues
    fargs = ("", "", "", "", 0) if finish is None else finish
    rotated = queues[turn:] + queues[:turn]
    args = (keys.tag, lease_ms, token, *fargs, only_id, ("", "1", "2", "3")[flags])
    items: Any = (*head, 1, key, *args, len(queues), *rotated)
    packed: bytes = hiredis.pack_command(items)
    return packed


class _Mode(enum.StrEnum):  # as OutcomeMode: a str subclass
    SUCCEEDED = "succeeded"


FINISHES: list[Any] = [
    None,
    Finish("succeeded", "01JF8Z3K8Q9X0ABCDEF0123456", "tok-a", b"null"),
    Finish(_Mode.SUCCEEDED, "01JF8Z3K8Q9X0ABCDEF0123456~3", "tok-b", b'{"x":"%d %s %b"}'),
    Finish("failed", "01JF8Z3K8Q9X0ABCDEF0123457", "tok%c", '{"error":"\u00e9t\u00e9"}'),
    Finish("retry", "r", "t", b"", 1500),
    ("retry", "r", "t", b"x" * 100_000, -1),
    ("requeue", "r", "t", "cause text", 0),
]


@pytest.mark.parametrize("finish", FINISHES)
@pytest.mark.parametrize(
    ("head", "prefix", "queues"),
    [
        (("EVALSHA", SHA), "ci", ("ci",)),
        (("FCALL", "redflow_claim_run"), "ci", ("a", "b", "c")),
        (("EVALSHA", SHA), "100%", ("q%d", "%%", "%b")),
        (("EVALSHA", SHA), "pr\u00e9fixe", ("\u00e9t\u00e9", "\u65e5")),
        (("EVALSHA", SHA), "ci", tuple(f"q{i}" for i in range(32))),
        (("EVALSHA", SHA), "ci", ()),
    ],
)
def test_the_packed_claim_is_what_hiredis_packs(
    head: tuple[str, str], prefix: str, queues: tuple[str, ...], finish: Any
) -> None:
    keys = Keys(prefix)
    packer = PackedClaims()
    for turn in range(max(1, len(queues))):
        for flags in range(4):
            for only_id in ("", "01ONLY0000000000000000000A"):
                for token in ("0123456789abcdef-1", "tok-\u00e9"):
                    args = (head, keys, keys.tag, 60_000, queues, turn, token, finish, only_id)
                    got = packer.pack(*args, flags)
                    assert got == whole_claim(
                        head, keys, 60_000, queues, turn, token, finish, only_id, flags
                    )


def test_a_new_lease_or_head_makes_a_new_format() -> None:
    keys, queues = Keys("ci"), ("ci",)
    packer = PackedClaims()
    for head in (("EVALSHA", SHA), ("FCALL", "redflow_claim_run"), ("EVALSHA", SHA)):
        for lease in (5_000, 60_000, 5_000):
            got = packer.pack(head, keys, keys.tag, lease, queues, 0, "t", None, "", 0)
            assert got == whole_claim(head, keys, lease, queues, 0, "t", None, "", 0)
    # an equal queue tuple that is another object finds the same format
    again = packer.pack(("EVALSHA", SHA), keys, keys.tag, 5_000, ("ci",), 0, "t", None, "", 1)
    assert again == whole_claim(("EVALSHA", SHA), keys, 5_000, queues, 0, "t", None, "", 1)


@pytest.mark.parametrize(
    ("lease", "finish"),
    [
        (5000.0, None),  # 5000 == 5000.0: a shape found by equality would pack "5000"
        (5000, ("retry", "r", "t", b"", 1.5)),
        (5000, ("retry", "r", "t", b"", True)),
        (5000, ("succeeded", "r", "t", memoryview(b"{}"), 0)),
        (5000, ("succeeded", "r", "t", bytearray(b"{}"), 0)),
    ],
)
def test_values_hiredis_must_pack_are_left_to_it(lease: Any, finish: Any) -> None:
    keys = Keys("ci")
    packer = PackedClaims()
    args = (("EVALSHA", SHA), keys, keys.tag, lease, ("ci",), 0, "t", finish, "", 0)
    assert packer.pack(*args) is None


def test_the_claim_format_cache_is_bounded() -> None:
    keys = Keys("ci")
    packer = PackedClaims()
    for i in range(MAX_FORMATS + 10):
        packer.pack(("EVALSHA", SHA), keys, keys.tag, 1000 + i, ("ci",), 0, "t", None, "", 0)
    assert len(packer._formats) <= MAX_FORMATS


@pytest.mark.parametrize("size", [1023, 1024, 5000])
@pytest.mark.parametrize("finish", [None, ("succeeded", "r", "t", b"null", 0)])
def test_items_past_the_length_headers_kept_are_formatted_the_same(size: int, finish: Any) -> None:
    """An item of 1,024 bytes or more (no header kept for its length): the call is
    formatted, the same bytes; the next call of the shape is joined again."""
    keys, queues, head = Keys("ci"), ("a", "b"), ("EVALSHA", SHA)
    packer = PackedClaims()
    long = "x" * size
    cases = [(long, "", finish), ("tok", long, finish)]
    if finish is not None:
        cases.append(("tok", "", (*finish[:3], long.encode(), 0)))
        cases.append(("tok", "", (finish[0], long, *finish[2:])))
    for token, only_id, fin in [*cases, ("tok", "", finish)]:
        got = packer.pack(head, keys, keys.tag, 5000, queues, 1, token, fin, only_id, 3)
        assert got == whole_claim(head, keys, 5000, queues, 1, token, fin, only_id, 3)
