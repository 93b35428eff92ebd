"""HSCAN of a big hash (a run's ``run:<id>:steps``) by the bytes its pages bring.

HSCAN's COUNT is a number of records; what bounds a call's cost (Redis's time,
its reply buffer, the reader's memory) is their bytes. The hash's own size as
recorded beside it (a run's ``stepBytes``) is only a hint: absent on runs from
before it, or edited by hand (10**15 made a page of one record, about a thousand
calls for 1,500 small steps; a missing one, a page of 1,000 records: 48 steps of
8 MiB came in one 384 MB reply). So the hint sets the first page only, and each
next page follows the bytes that actually came, growing at most twofold a call.

:class:`BytePages` holds no connection: the query plans (``queries.drive`` /
the async client's driver run them), the worker's own read
(``Execution.load_steps``) and ``scripts.resume_plan`` (``resume_run``'s pages,
read in the script, which reports their size) each make their calls and tell
it what came.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PAGE", "PAGE_BYTES", "BytePages", "page_of"]

#: Records per HSCAN call at most (an HGETALL of a million steps held Redis 0.9 s).
PAGE = 1000
#: Bytes of records (names and values) a call aims at.
PAGE_BYTES = 1 << 20


def page_of(records: int, size: int) -> int:
    """Records per call for about :data:`PAGE_BYTES`, when ``records`` hold
    ``size`` bytes: 1 to :data:`PAGE`."""
    return max(1, min(PAGE, records * PAGE_BYTES // max(1, size)))


class BytePages:
    """The COUNT of each HSCAN call of a hash of ``total`` records (its HLEN)
    holding ``size`` bytes by its hint (0: unknown, missing or not a number).

    ``count`` is the next call's COUNT; :meth:`took` each page that came."""

    __slots__ = ("_bytes", "_came", "count")

    def __init__(self, total: int, size: int) -> None:
        if total <= 1:  # (a page of one record at most: one call, whatever the count)
            self.count = PAGE
        else:  # no hint: one record first, then what came says
            self.count = page_of(total, size) if size > 0 else 1
        self._came = 0
        self._bytes = 0

    @classmethod
    def from_count(cls, count: int) -> BytePages:
        """Pages whose first COUNT is ``count`` (set elsewhere: ``resume_run``
        sizes it by ``stepBytes`` in the script)."""
        pages = cls(2, 0)
        pages.count = max(1, min(PAGE, count))
        return pages

    def took(self, page: Mapping[bytes, bytes]) -> None:
        """A call brought ``page``: the next one's COUNT follows the bytes that
        came so far, at most twice this one's."""
        self.took_sized(len(page), sum(len(k) + len(v) for k, v in page.items()))

    def took_sized(self, records: int, size: int) -> None:
        """:meth:`took` of a page of ``records`` holding ``size`` bytes (names
        and values), read where it was (``resume_run``'s pages, in the script)."""
        if records <= 0:
            return
        self._came += records
        self._bytes += size
        self.count = min(page_of(self._came, self._bytes), 2 * self.count)
