"""The one loop that feeds a spider's groups (ImageNet classes, ISIC labels) while each has room.

Exact counts per group come from here: a group is asked for its next image only while its
quota has room for one more (``Quota.has_room`` counts the images in flight), so a group never
has more downloads going than it could keep, and a failure is topped up by the group's next
candidate. Groups are fed in turn, so one group's slow host does not hold the others; a group
leaves once it is full, or out of candidates with nothing of it in flight. A source plugs in by
providing ``GroupSource``; how its candidates are listed, skipped or put off is its own.
(Workers take their candidates from Redis instead: ``*_workers.py``.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

from ..dataset.quota import Quota
from ..items import ImageItem

G = TypeVar("G")


class GroupSource(Protocol[G]):
    """What the loop asks of a source about one of its groups."""

    def group_name(self, group: G) -> str:
        """The quota group it counts in."""
        ...

    def group_exhausted(self, group: G) -> bool:
        """Whether it has no candidate left (for now)."""
        ...

    async def load_groups(self, groups: list[G]) -> None:
        """Ready these groups before they are first fed (their lists loaded, together)."""
        ...

    def begin_round(self, group: G) -> None:
        """Once per round, before the group is fed (candidates put off may come back)."""
        ...

    async def next_item(self, group: G) -> ImageItem | None:
        """The item for its next candidate, or None when that candidate needs no download."""
        ...

    def revive_group(self, group: G) -> bool:
        """The group is out of candidates and has nothing in flight: whether it stays (some
        candidates may come back; ``group_exhausted`` then says if they already have)."""
        ...


async def feed_groups(source: GroupSource[G], waiting: deque[G], quota: Quota,
                      max_active: int) -> AsyncIterator[ImageItem]:
    """Yield the groups' items, at most ``max_active`` groups at a time, each while it has room,
    until every group is full or out of candidates (or the quota stops)."""
    active: list[G] = []
    while (waiting or active) and not quota.stopped:
        starting = [waiting.popleft() for _ in range(min(len(waiting), max_active - len(active)))]
        await source.load_groups(starting)
        active.extend(starting)
        progressed = False
        for group in list(active):
            name = source.group_name(group)
            source.begin_round(group)
            while not source.group_exhausted(group) and quota.has_room(name):
                item = await source.next_item(group)
                if item is not None:
                    quota.reserve(name)  # released when the item's manifest line is written
                    progressed = True
                    yield item
            if quota.full(name):
                active.remove(group)
            elif source.group_exhausted(group) and not quota.pending[name]:
                if not source.revive_group(group):
                    active.remove(group)
                elif not source.group_exhausted(group):
                    progressed = True  # candidates came back: go again at once
        if active and not progressed:
            await quota.changed()
