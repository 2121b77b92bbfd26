"""One ImageNet class during a crawl: its candidates in list order, and the images already in its folder."""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass, field

from ..manifest import Entry
from ..sources import imagenet


@dataclass
class ClassState:
    """One class: its candidates, how far through them we are, and why it may end short."""

    index: int
    wnid: str
    label: str | None
    folder: str
    candidates: list[imagenet.Candidate] = field(default_factory=list)
    position: int = 0
    present: set[str] = field(default_factory=set)  # image ids already in the dataset
    unlisted: dict[str, Entry] = field(default_factory=dict)  # present, but not in the manifest
    no_urls: str | None = None  # why the source gave no candidates
    loaded: bool = False

    spare: deque[imagenet.Candidate] = field(default_factory=deque)  # good but surplus: for top-ups
    on_disk: dict[str, Entry] = field(default_factory=dict)  # what the folder held at the start
    vouched: set[str] = field(default_factory=set)  # of those, the ones the manifest lists as kept

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.candidates) and not self.spare

    def next_candidate(self) -> imagenet.Candidate:
        """Spare candidates first (they came earlier in the list), then the rest in order."""
        if self.spare:
            return self.spare.popleft()
        self.position += 1
        return self.candidates[self.position - 1]


def over_target(state: ClassState, per_class: int) -> list[tuple[str, Entry]]:
    """The images in the class folder beyond ``per_class``, to move aside: those the manifest
    does not vouch for first, then the last in list order (ids not in the list come last, in
    natural order). Blocking (checks which files are still there)."""
    there = [(stem, e) for stem, e in state.on_disk.items() if e.path and os.path.lexists(e.path)]
    if len(there) <= per_class:
        return []
    order = {c.image_id: i for i, c in enumerate(state.candidates)}
    there.sort(key=lambda pair: (pair[0] not in state.vouched, order.get(pair[0], len(order)), _natural(pair[0])))
    return there[per_class:]


def _natural(text: str) -> list[object]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]
