"""Step 5: save each kept image's description, the source's full record, as indented JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES
from .store import atomic_write


class SaveDescriptionsPipeline:
    """Writes ``description`` to ``description_path`` for images in the dataset."""

    def __init__(self, crawler: Any):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Any) -> SaveDescriptionsPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if (
            isinstance(item, ImageItem)
            and item.description is not None
            and item.description_path
            and item.outcome in KEPT_OUTCOMES
        ):
            data = json.dumps(item.description, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
            try:
                staging = self.crawler.spider.dataset.staging_for(item.description_path)
                await asyncio.to_thread(atomic_write, item.description_path, data, staging)
            except OSError as exc:  # the image is complete and stays; a re-run writes the description
                self.crawler.spider.fail(f"cannot write to {item.description_path}: {exc.strerror or exc}")
        return item
