"""Balanced ISIC datasets: ``per_label=N`` keeps exactly N images of each label of the selection
(benign, malignant, indeterminate; with ``filter``, that one), each label topped up after its
own failures.

Each label is its own search (``diagnosis_1:…`` ANDed with ``query``), listed lazily: a page
is fetched only when that label has room for another image. Labels are fed in turn, by the loop
that feeds ImageNet's classes (feeding.py), so one label's slow host does not hold the others. Records
without a diagnosis are no label here: their search is never made.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES
from ..sources import isic
from .feeding import feed_groups

if TYPE_CHECKING:
    from .isic import IsicSpider


@dataclass
class LabelState:
    label: str
    records: AsyncIterator[isic.IsicRecord]
    exhausted: bool = False
    tried: dict[str, int] = field(default_factory=dict)  # outcomes of its images


def labels_of(spider: IsicSpider) -> list[str]:
    p = spider.params
    return [p.filter] if p.filter else [label for label in isic.LABELS]


class LabelFeed:
    """The labels of a per_label crawl, as groups of the feed (spiders/feeding.py): each label's
    search is listed a page at a time, only while the label has room."""

    def __init__(self, spider: IsicSpider):
        self.spider = spider
        self.states = {label: LabelState(label, aiter(spider.v2_records(label_filter=label)))
                       for label in labels_of(spider)}

    def items(self) -> AsyncIterator[ImageItem]:
        """Yield each label's records while it has room, in turn, until every label is full or out."""
        return feed_groups(self, deque(self.states.values()), self.spider.core.quota, len(self.states))

    def group_name(self, group: LabelState) -> str:
        return group.label

    def group_exhausted(self, group: LabelState) -> bool:
        return group.exhausted

    async def load_groups(self, groups: list[LabelState]) -> None:
        return None  # a label's search starts with its first record

    def begin_round(self, group: LabelState) -> None:
        return None

    async def next_item(self, group: LabelState) -> ImageItem | None:
        try:
            record = await anext(group.records)
        except StopAsyncIteration:
            group.exhausted = True
            return None
        if record.label != group.label:  # the search said this label; the record says another
            self.spider.crawler.stats.inc_value("isic/outside_label")
            return None
        item = self.spider.make_item(record)
        if item is not None:
            item.group = group.label
        return item

    def revive_group(self, group: LabelState) -> bool:
        return False

    def note_outcome(self, item: ImageItem) -> None:
        if item.kind == "image" and item.group in self.states:
            tried = self.states[item.group].tried
            tried[item.result.outcome or "?"] = tried.get(item.result.outcome or "?", 0) + 1

    def summarise(self) -> None:
        """Say which labels ended short and why (the summary prints it); strict makes that a failure."""
        spider = self.spider
        wanted, quota = spider.params.per_label or 0, spider.core.quota
        short = []
        for label, state in self.states.items():
            kept = quota.kept[label]
            if kept >= wanted:
                continue
            failures = ", ".join(f"{k} {v}" for k, v in sorted(state.tried.items()) if k not in KEPT_OUTCOMES)
            spider.core.shortfalls.append(f"{label}: {kept}/{wanted}: the selection has no more good images of "
                                          f"this label ({failures or 'no failures'})")
            short.append(label)
        if short and spider.params.strict:
            spider.core.fail(f"strict: {len(short)} label(s) have fewer than {wanted} images: {', '.join(short)}",
                             stop=False)
