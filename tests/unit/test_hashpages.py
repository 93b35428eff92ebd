"""hashpages.BytePages: the COUNT of each HSCAN call of a run's step records."""

from __future__ import annotations

from redflow_mp.hashpages import PAGE, PAGE_BYTES, BytePages


def _page(records: int, each: int) -> dict[bytes, bytes]:
    return {f"s{i:05d}".encode(): b"x" * (each - 6) for i in range(records)}


def test_the_hint_sets_the_first_page_only() -> None:
    assert BytePages(1_500, 1_500 * 100).count == PAGE  # small records: 1,000
    assert BytePages(48, 48 * (8 << 20)).count == 1  # 8 MiB each: one
    assert BytePages(1_500, 10**15).count == 1  # a hint far too big: one ...
    pages = BytePages(1_500, 10**15)
    calls = 0
    while pages.count < PAGE:  # ... then twice as many a call, up to 1,000
        before = pages.count
        pages.took(_page(before, 100))
        assert pages.count == min(PAGE, 2 * before)
        calls += 1
    assert calls == 10


def test_no_hint_starts_at_one_record_and_follows_the_bytes() -> None:
    for size in (0, -5):
        pages = BytePages(48, size)
        assert pages.count == 1
        pages.took(_page(1, 8 << 20))
        assert pages.count == 1  # 8 MiB came: one a call
    pages = BytePages(48, 0)
    pages.took(_page(1, PAGE_BYTES // 4))
    assert pages.count == 2  # (4 would fit; at most twice a call)
    pages.took(_page(2, PAGE_BYTES // 4))
    assert pages.count == 4


def test_one_record_at_most_is_one_call_and_an_empty_page_changes_nothing() -> None:
    assert BytePages(1, 0).count == PAGE
    assert BytePages(0, 0).count == PAGE
    pages = BytePages(10, 0)
    pages.took({})
    pages.took_sized(0, 0)
    assert pages.count == 1


def test_a_first_count_set_elsewhere_is_kept_in_bounds() -> None:
    assert BytePages.from_count(0).count == 1
    assert BytePages.from_count(10**9).count == PAGE
    pages = BytePages.from_count(3)
    pages.took_sized(3, 3 * (2 << 20))  # 2 MiB each: one a call
    assert pages.count == 1
