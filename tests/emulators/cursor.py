"""Cursor pagination as in DRF's ``CursorPagination`` (ISIC v2 follows it, §2.3).

Cursors are base64 of a query string with ``o`` (offset within a position), ``r``
(1 = reverse) and ``p`` (the ordering value of the boundary row, as ``str()``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

T = TypeVar("T")


@dataclass(frozen=True)
class Cursor:
    offset: int = 0
    reverse: bool = False
    position: str | None = None


def encode_cursor(cursor: Cursor, **extra: str) -> str:
    """Opaque base64 token for ``cursor`` (``extra`` adds ignored tokens)."""
    tokens: dict[str, str] = {}
    if cursor.offset:
        tokens["o"] = str(cursor.offset)
    if cursor.reverse:
        tokens["r"] = "1"
    if cursor.position is not None:
        tokens["p"] = cursor.position
    tokens.update(extra)
    return base64.b64encode(urlencode(tokens).encode("ascii")).decode("ascii")


def decode_cursor(encoded: str, offset_cutoff: int = 100) -> Cursor:
    """Parse a token; raises ValueError when it is not a valid cursor."""
    tokens = parse_qs(base64.b64decode(encoded.encode("ascii")).decode("ascii"), keep_blank_values=True)
    offset = int(tokens.get("o", ["0"])[0])
    if offset < 0:
        raise ValueError("negative offset")
    reverse = bool(int(tokens.get("r", ["0"])[0]))
    return Cursor(min(offset, offset_cutoff), reverse, tokens.get("p", [None])[0])


def cursor_extras(encoded: str) -> dict[str, str]:
    """The tokens of ``encoded`` beyond ``o``, ``r`` and ``p`` (those ``encode_cursor``'s ``extra`` added).

    Hostile page modes mark their own cursors this way; raises ValueError like ``decode_cursor``.
    """
    tokens = parse_qs(base64.b64decode(encoded.encode("ascii")).decode("ascii"), keep_blank_values=True)
    return {key: values[0] for key, values in tokens.items() if key not in ("o", "r", "p")}


def replace_query_param(url: str, key: str, value: str) -> str:
    """Set ``key=value`` in ``url``'s query, re-sorting params alphabetically (DRF)."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    params = parse_qs(query, keep_blank_values=True)
    params[key] = [value]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(params.items()), doseq=True), fragment))


@dataclass
class Page(Generic[T]):
    items: list[T]
    next: Cursor | None
    previous: Cursor | None


def paginate(
    items: Sequence[T],
    key: Callable[[T], Any],
    parse_position: Callable[[str], Any],
    cursor: Cursor | None,
    page_size: int,
) -> Page[T]:
    """One page of ``items`` (already sorted ascending by ``key``).

    A position is ``str(key(item))``; ``parse_position`` turns it back into a key
    and raises ValueError when the cursor's position is malformed.
    """

    def position_of(item: T) -> str:
        return str(key(item))

    offset, reverse, current = (cursor.offset, cursor.reverse, cursor.position) if cursor else (0, False, None)
    seq = list(reversed(items)) if reverse else list(items)
    if current is not None:
        bound = parse_position(current)
        seq = [x for x in seq if (key(x) < bound if reverse else key(x) > bound)]
    results = seq[offset : offset + page_size + 1]
    page = results[:page_size]
    following = position_of(results[-1]) if len(results) > len(page) else None
    if reverse:
        page.reverse()
        has_next, has_prev = current is not None or offset > 0, following is not None
        next_pos, prev_pos = current, following
    else:
        has_next, has_prev = following is not None, current is not None or offset > 0
        next_pos, prev_pos = following, current
    state = _State(page, cursor, page_size, position_of, has_next, has_prev, next_pos, prev_pos)
    return Page(page, state.next_cursor(), state.previous_cursor())


def _run_length(
    items: list[Any], position_of: Callable[[Any], str], compare: str | None
) -> tuple[int, bool, str | None]:
    """How many leading ``items`` share one position, starting from ``compare``.

    Returns ``(count, found_a_different_position, last_position_seen)`` (DRF logic).
    """
    position = compare
    for count, item in enumerate(items):
        position = position_of(item)
        if position != compare:
            return count, True, position
        compare = position
    return len(items), False, position


@dataclass
class _State:
    page: list[Any]
    cursor: Cursor | None
    page_size: int
    position_of: Callable[[Any], str]
    has_next: bool
    has_prev: bool
    next_pos: str | None
    prev_pos: str | None

    def next_cursor(self) -> Cursor | None:
        if not self.has_next:
            return None
        if self.page and self.cursor and self.cursor.reverse and self.cursor.offset:
            compare = self.position_of(self.page[-1])
        else:
            compare = self.next_pos
        offset, unique, position = _run_length(self.page[::-1], self.position_of, compare)
        if self.page and not unique:
            if not self.has_prev:
                offset, position = self.page_size, None
            elif self.cursor and self.cursor.reverse:
                offset, position = 0, self.prev_pos
            else:
                offset, position = (self.cursor.offset if self.cursor else 0) + self.page_size, self.prev_pos
        if not self.page:
            position = self.next_pos
        return Cursor(offset, False, position)

    def previous_cursor(self) -> Cursor | None:
        if not self.has_prev:
            return None
        if self.page and self.cursor and not self.cursor.reverse and self.cursor.offset:
            compare = self.position_of(self.page[0])
        else:
            compare = self.prev_pos
        offset, unique, position = _run_length(self.page, self.position_of, compare)
        if self.page and not unique:
            if not self.has_next:
                offset, position = self.page_size, None
            elif self.cursor and self.cursor.reverse:
                offset, position = (self.cursor.offset if self.cursor else 0) + self.page_size, self.next_pos
            else:
                offset, position = 0, self.next_pos
        if not self.page:
            position = self.prev_pos
        return Cursor(offset, True, position)
