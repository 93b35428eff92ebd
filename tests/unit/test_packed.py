"""The packed enqueue of a plain run sends the bytes hiredis would pack."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from redflow_mp.packed import MAX_FORMATS, PlainEnqueues

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
    ],
)
def test_the_packed_call_is_what_hiredis_packs(
    head: tuple[str, str], tag: str, wf: str, q: str, attempts: int, limit: Any, data: bytes
) -> None:
    packer = PlainEnqueues()
    for run_id in ("01JF8Z3K8Q9X0ABCDEF0123456", "01JF8Z3K8Q9X0ABCDEF0123457~2"):
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
