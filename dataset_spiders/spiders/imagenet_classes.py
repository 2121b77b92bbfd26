"""One ImageNet class during a crawl: its candidates in list order, and the images already in its folder."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..core.manifest import Record
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
    unlisted: dict[str, Record] = field(default_factory=dict)  # present, but not in the manifest
    no_urls: str | None = None  # why the source gave no candidates
    loaded: bool = False

    spare: deque[imagenet.Candidate] = field(default_factory=deque)  # good but surplus: for top-ups
    on_disk: dict[str, Record] = field(default_factory=dict)  # what the folder held at the start
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

