"""The record stage: every image's outcome becomes a manifest line, a stat and a free slot.

Runs last, for every image whatever happened to it, so the manifest and the stats agree. A
failure is logged here, once, at INFO, with its reason. Images that are not in the dataset are
dropped here (quietly: the manifest has the reason).
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy import signals
from scrapy.exceptions import DropItem

from .. import signals as our_signals
from ..dataset import DatasetCore
from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES, Outcome

logger = logging.getLogger(__name__)


class RecordOutcomesPipeline:
    """Hands each image's outcome to the core (manifest line, stats, quota) and tells the spider."""

    def __init__(self, crawler: Any):
        self.crawler = crawler
        self.core = DatasetCore.of(crawler)
        crawler.signals.connect(self.on_item_error, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Any) -> RecordOutcomesPipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageItem):
            return item
        if item.result.outcome is None:
            item.result.decide(Outcome.ERROR, "no stage decided this image's outcome")
        self.record(item)
        if item.result.outcome not in KEPT_OUTCOMES:
            raise DropItem(f"{item.image_id}: {item.result.outcome}", log_level="DEBUG")
        return item

    def on_item_error(self, item: Any, response: Any, spider: Any, failure: Any) -> None:
        """A stage raised: the image still gets its line, and its quota slot back."""
        if isinstance(item, ImageItem):
            item.result.decide(Outcome.ERROR, f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300])
            self.record(item)

    def record(self, item: ImageItem) -> None:
        self.core.record(item)
        if item.result.outcome not in KEPT_OUTCOMES:
            # an outcome, not news: the manifest, the summary and the report have it (-L DEBUG shows each)
            logger.debug("%s %s: %s %s", item.kind, item.image_id, item.result.outcome, item.result.detail)
        if item.result.outcome == Outcome.FILTERED and "offsite" in item.result.detail.lower():
            self.core.fail(f"an image request was filtered as offsite ({item.result.url}): remove allowed_domains")
        self.crawler.signals.send_catch_log(our_signals.image_recorded, item=item)
