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
from ..outcomes import DESCRIBED, ERROR, KEPT, PRESENT, SURPLUS
from .download import DOWNLOADED
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

    async def _commit(self, item: ImageItem, spider: Any, counted: bool) -> None:
        if counted and not spider.quota.admit(item.group):
            item.outcome, item.detail = SURPLUS, f"{item.group or 'the selection'} was already full"
            return
        final = f"{item.stem}.{extension_for(item.format, item.ext)}"
        try:
            await asyncio.to_thread(self.store.commit, item.staged, final)
        except OSError as exc:
            if counted:
                spider.quota.revoke(item.group)
            item.outcome, item.detail = ERROR, f"cannot write {final}: {exc.strerror or exc}"
            spider.fail(f"cannot write to {spider.dataset.relative(final)}: {exc.strerror or exc}")
            return
        item.staged = None
        item.path = final
        item.outcome = KEPT
