"""Listings bounded by progress, not only by cursor identity: a server can mint fresh cursors
(or serve ever-growing offsets) over old records forever."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .base import SourceError

logger = logging.getLogger(__name__)


def record_key(raw: Any, name: str) -> str | None:
    """The id a listed record goes by (v2 ``isic_id``, v1 ``name``), as the records read it."""
    value = raw.get(name) if isinstance(raw, dict) else None
    return None if value is None else str(value)


class IdlePages:
    """Pages in a row that bring no record not already listed.

    A listing is bounded by progress, not only by URL identity: a server can mint fresh
    cursors (or serve ever-growing offsets) over old records forever. Progress is judged per
    page, since a legitimate page may repeat some records when the archive shifts under us.
    """

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what = limit, what  # limit 0: never give up
        self.listed: set[str] = set()
        self.in_a_row = 0

    def progress(self, keys: Iterable[str | None], url: str, *, more: bool) -> bool:
        """Whether the page at ``url`` brought a record not listed before (records skipped by
        ``offset`` count: they are new). SourceError once ``limit`` pages in a row brought none
        and the listing would go on (``more``): the caller's line ends it, exit 1."""
        fresh = False
        for key in keys:
            if key is not None and key not in self.listed:
                self.listed.add(key)
                fresh = True
        self.in_a_row = 0 if fresh else self.in_a_row + 1
        if fresh:
            return True
        if more and 0 < self.limit <= self.in_a_row:
            pages = "a page" if self.in_a_row == 1 else f"{self.in_a_row} pages in a row"
            raise SourceError(f"the {self.what} gave {pages} with no record not already listed (last: {url})")
        logger.warning("The %s page %s brought no record not already listed (%d in a row)",
                       self.what, url, self.in_a_row)
        return False
