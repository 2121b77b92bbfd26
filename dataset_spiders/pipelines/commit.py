"""Step 4: the last step before the dataset: rename a checked image into place, or drop it.

The quota's ``admit`` and the rename happen here and only here, so no count can go past its
target however many downloads finish at once. A write that fails (read-only folder, full
disk) stops the run: the files already in place are complete and stay as they are.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..dataset import extension_for
from ..items import ImageItem
from ..outcomes import DESCRIBED, DOWNLOADED, DUPLICATE, ERROR, KEPT, PLACEHOLDER, PRESENT, SURPLUS
from .placeholders import site_of
from .store import StagingFilesStore

logger = logging.getLogger(__name__)


class CommitImagesPipeline:
    """Moves staged images that passed every check to their final names."""

    def __init__(self, crawler: Any):
        self.crawler = crawler
        self.store = StagingFilesStore(crawler.settings["IMAGES_STORE"])

    @classmethod
    def from_crawler(cls, crawler: Any) -> CommitImagesPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageItem):
            return item
        spider = self.crawler.spider
        quota = spider.quota
        counted = item.kind == "image"
        if item.outcome is None and not item.image_urls:
            item.outcome = DESCRIBED
            if counted:
                quota.add_existing(item.group)
        elif item.outcome == PRESENT and counted:
            quota.add_existing(item.group)
        elif item.outcome == DOWNLOADED:
            await self._commit(item, spider, counted)
        if item.staged:
            self.store.discard(item.staged)
            item.staged = None
        return item

    def decide(self, item: ImageItem, spider: Any, counted: bool) -> tuple[str, str] | None:
        """Refuse the image (outcome, detail), or admit it. Synchronous: nothing can interleave."""
        if spider.learner.is_placeholder(site_of(item.url), item.sha256 or ""):
            return PLACEHOLDER, "the same image was served for many photo URLs of this site"
        seen = spider.seen if counted else None
        if seen is not None and (first := seen.duplicate_of(item)):
            where = f" in {first.group}" if first.group else ""
            return DUPLICATE, f"the same image as {first.image_id}{where} ({first.url})"
        if counted and not spider.quota.admit(item.group):
            return SURPLUS, f"{item.group or 'the selection'} was already full"
        item.path = f"{item.stem}.{extension_for(item.format, item.ext)}"
        if seen is not None:
            seen.add(item)
        return None

    async def _commit(self, item: ImageItem, spider: Any, counted: bool) -> None:
        refused = self.decide(item, spider, counted)
        if refused:
            item.outcome, item.detail = refused
            return
        final = item.path
        assert final is not None
        try:
            await asyncio.to_thread(self.store.commit, item.staged, final)
        except OSError as exc:
            if counted:
                spider.quota.revoke(item.group)
            if spider.seen is not None:
                spider.seen.forget(item.sha256, item.pixels)
            item.path = None
            item.outcome, item.detail = ERROR, f"cannot write {final}: {exc.strerror or exc}"
            spider.fail(f"cannot write to {spider.dataset.relative(final)}: {exc.strerror or exc}")
            return
        item.staged = None
        item.outcome = KEPT
