"""Balanced ISIC datasets: ``per_label=N`` keeps exactly N images of each label of the selection
(benign, malignant, indeterminate; with ``filter``, that one), each label topped up after its
own failures.

Each label is its own search (``diagnosis_1:…`` ANDed with ``query``), listed lazily: a page
is fetched only when that label has room for another image. Labels are fed in turn, as the
imagenet spider feeds classes, so one label's slow host does not hold the others. Records
without a diagnosis are no label here: their search is never made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES
from ..sources import isic

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


async def per_label_items(spider: IsicSpider) -> AsyncIterator[ImageItem]:
    """Yield each label's records while it has room, in turn, until every label is full or out."""
    quota = spider.core.quota
    states = [LabelState(label, aiter(spider.v2_records(label_filter=label))) for label in labels_of(spider)]
    spider.label_states = {s.label: s for s in states}
    active = list(states)
    while active and not quota.stopped:
        progressed = False
        for state in list(active):
            while not state.exhausted and quota.has_room(state.label):
                try:
                    record = await anext(state.records)
                except StopAsyncIteration:
                    state.exhausted = True
                    break
                if record.label != state.label:  # the search said this label; the record says another
                    spider.crawler.stats.inc_value("isic/outside_label")
                    continue
                item = spider.make_item(record)
                if item is None:
                    continue
                item.group = state.label
                quota.reserve(state.label)  # every item's slot is released when its line is written
                progressed = True
                yield item
            if quota.full(state.label) or (state.exhausted and not quota.pending[state.label]):
                active.remove(state)
        if active and not progressed:
            await quota.changed()


def note_outcome(spider: IsicSpider, item: Any) -> None:
    states = getattr(spider, "label_states", {})
    if item.kind == "image" and item.group in states:
        tried = states[item.group].tried
        tried[item.outcome or "?"] = tried.get(item.outcome or "?", 0) + 1


def summarise(spider: IsicSpider) -> None:
    """Say which labels ended short and why (the summary prints it); strict makes that a failure."""
    wanted, quota = spider.params.per_label or 0, spider.core.quota
    short = []
    for label, state in getattr(spider, "label_states", {}).items():
        kept = quota.kept[label]
        if kept >= wanted:
            continue
        failures = ", ".join(f"{k} {v}" for k, v in sorted(state.tried.items()) if k not in KEPT_OUTCOMES)
        spider.core.shortfalls.append(f"{label}: {kept}/{wanted}: the selection has no more good images of this "
                                      f"label ({failures or 'no failures'})")
        short.append(label)
    if short and spider.params.strict:
        spider.core.fail(f"strict: {len(short)} label(s) have fewer than {wanted} images: {', '.join(short)}",
                         stop=False)
