"""Step 6: record every image's outcome: a manifest line, a stat, and a free quota slot.

Runs last, for every image whatever happened to it, so the manifest and the stats agree.
Images that are not in the dataset are dropped here (quietly: the manifest has the reason).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from scrapy import signals
from scrapy.exceptions import DropItem

from .. import signals as our_signals
from ..items import ImageItem
from ..outcomes import DOWNLOADED, ERROR, FILTERED, KEPT, KEPT_OUTCOMES, PLACEHOLDER
from .placeholders import site_of

logger = logging.getLogger(__name__)





class RecordOutcomesPipeline:
    """Appends the manifest line and updates the stats and the quota for each image."""

    def __init__(self, crawler: Any):
        self.crawler = crawler
        crawler.signals.connect(self.on_item_error, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Any) -> RecordOutcomesPipeline:
        return cls(crawler)

    def close_spider(self) -> None:
        spider = self.crawler.spider
        try:
            spider.dataset.writer.close()
        except OSError as exc:
            spider.fail(f"cannot write to {spider.dataset.manifest_path}: {exc.strerror or exc}")

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageItem):
            return item
        if item.outcome in (None, DOWNLOADED):
            item.outcome, item.detail = ERROR, "no pipeline decided this image's outcome"
        self.record(item)
        if item.outcome not in KEPT_OUTCOMES:
            raise DropItem(f"{item.image_id}: {item.outcome}", log_level="DEBUG")
        return item

    def on_item_error(self, item: Any, response: Any, spider: Any, failure: Any) -> None:
        """A pipeline raised: the image still gets its line, and its quota slot back."""
        if isinstance(item, ImageItem):
            item.outcome, item.detail = ERROR, f"{failure.type.__name__}: {failure.getErrorMessage()}"[:300]
            self.record(item)

    def record(self, item: ImageItem) -> None:
        spider = self.crawler.spider
        dataset = spider.dataset
        site = site_of(item.url)
        if item.outcome == KEPT and spider.learner.is_placeholder(site, item.sha256 or ""):
            self.withdraw_late(item)
        if item.kind == "image" and item.outcome in KEPT_OUTCOMES and item.path:
            self.remove_old_copy(item)
        try:
            dataset.writer.write(self.line(item))
        except OSError as exc:
            spider.fail(f"cannot write to {dataset.manifest_path}: {exc.strerror or exc}")
        dataset.count_outcome(self.crawler.stats, item.kind, item.image_id, item.outcome or ERROR)
        if item.outcome not in KEPT_OUTCOMES:
            logger.info("%s %s: %s %s", item.kind, item.image_id, item.outcome, item.detail)
        if item.outcome == FILTERED and "offsite" in item.detail.lower():
            spider.fail(f"an image request was filtered as offsite ({item.url}): remove allowed_domains")
        if item.outcome == KEPT:
            spider.learner.note_kept(site, item)
        if item.kind == "image":
            spider.quota.release(item.group)
        self.crawler.signals.send_catch_log(our_signals.image_recorded, item=item)

    def remove_old_copy(self, item: ImageItem) -> None:
        """An image kept under a new path (ISIC relabelled it, or the layout changed) loses its
        old copy in the image folder, now that the new one is in place: one id, one file. Removed
        before the line is written, so a crash in between leaves the old line to redo this."""
        spider = self.crawler.spider
        old = spider.dataset.kept_path("image", item.image_id)
        new = os.path.abspath(item.path or "")
        images_dir = getattr(spider, "images_dir", None)
        if not old or old == new or not images_dir or not old.startswith(os.path.join(images_dir, "")):
            return
        if os.path.lexists(old) and spider.dataset.remove(old):
            note = f"moved from {spider.dataset.relative(old)} (the old copy was removed)"
            item.detail = f"{item.detail}; {note}" if item.detail else note
            self.crawler.stats.inc_value("images/moved")
            logger.info("%s %s", item.image_id, note)

    def withdraw_late(self, item: ImageItem) -> None:
        """A placeholder was learned while this copy was being kept: take it back out."""
        spider = self.crawler.spider
        if item.path:
            spider.dataset.remove(item.path)
        spider.quota.revoke(item.group)
        if spider.seen is not None:
            spider.seen.forget(item.sha256, item.pixels)
        item.path = None
        item.outcome, item.detail = PLACEHOLDER, "withdrawn: the same image was served for many photo URLs of this site"

    def line(self, item: ImageItem) -> dict[str, Any]:
        return {
            "id": item.image_id,
            "kind": item.kind,
            "group": item.group or None,
            "label": item.label,
            "url": item.url or (item.image_urls[0] if item.image_urls else None),
            "final_url": item.final_url,
            "outcome": item.outcome,
            "detail": item.detail or None,
            "path": self.crawler.spider.dataset.relative(item.path),
            "bytes": item.size,
            "sha256": item.sha256,
            "width": item.width,
            "height": item.height,
            "pixels": item.pixels,
        }
