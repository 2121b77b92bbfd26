"""Lets a stopping crawl finish closing once its last item is through the pipelines.

Scrapy 2.19 checks whether a closing scraper is idle after each response, but not after an
item yielded by ``start()`` (scrapy/scrapy#7029): a Ctrl-C while such items are in flight
would wait forever. After each item, this checks once more.
"""

from __future__ import annotations

from typing import Any

from scrapy import signals
from scrapy.utils.asyncio import call_later


class FinishClosingWhenDrained:
    def __init__(self, crawler: Any):
        self.crawler = crawler
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(self.item_done, signal=signal)

    @classmethod
    def from_crawler(cls, crawler: Any) -> FinishClosingWhenDrained:
        return cls(crawler)

    def item_done(self, *args: Any, **kwargs: Any) -> None:
        call_later(0, self.check)  # the item leaves the scraper's slot after the signal

    def check(self) -> None:
        scraper = self.crawler.engine.scraper
        slot = scraper.slot
        if slot is None or slot.closing is None or slot.closing.called:
            return
        if slot.is_idle():
            scraper._check_if_closing()
        else:  # the item is counted out of the slot a moment after its signal: look again soon
            call_later(0.05, self.check)
