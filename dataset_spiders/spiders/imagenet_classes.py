"""One ImageNet class during a crawl: its candidates in list order, and the images already in its folder."""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..dataset.manifest import Record
from ..sources import class_files, imagenet
from .imagenet_args import ILSVRC, ImagenetParams

logger = logging.getLogger(__name__)


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
    listed: int = 0  # URLs the source lists for it (0: a wnid it does not know)
    unknown: bool = False  # the source lists nothing for it at all
    loaded: bool = False

    spare: deque[imagenet.Candidate] = field(default_factory=deque)  # good but surplus: for top-ups
    skipped: list[tuple[imagenet.Candidate, float]] = field(default_factory=list)  # on a down host, and when
    deferred: list[imagenet.Candidate] = field(default_factory=list)  # on a silent host already probed enough
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


def asked_classes(p: ImagenetParams, domains: Any) -> list[tuple[str, str | None]]:
    """The (wnid, label) of each class asked for, in order (reads no dataset folder). ``domains``:
    the hosts ``flickr_only`` keeps, when classes are drawn from a URL list by their usable URLs."""
    if p.wnids == (ILSVRC,):
        pairs: list[tuple[str, str | None]] = list(imagenet.ilsvrc1000())
    elif p.wnids:
        labels = dict(imagenet.ilsvrc1000())
        pairs = [(w, labels.get(w)) for w in p.wnids]
    elif p.wnids_file:
        if p.wnids_file == "-":
            pairs, shape = class_files.parse_class_text(sys.stdin.read(), "standard input")
        else:
            pairs, shape = class_files.read_class_file(p.wnids_file)
        logger.info("Read %d class(es) from %s (%s)", len(pairs), p.wnids_file, shape)
    else:
        counts = imagenet.count_url_file(p.urls_file or "", domains)
        chosen = imagenet.choose_classes(counts, p.num_classes or 0, p.min_urls or p.per_class, p.seed)
        labels = dict(imagenet.ilsvrc1000())
        pairs = [(w, labels.get(w)) for w in chosen]
    if not pairs:
        raise ValueError("the class list is empty")
    return pairs
