"""The describe stage: save each kept image's description, the source's full record, as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..dataset import DatasetCore
from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES


class SaveDescriptionsPipeline:
    """Writes ``description`` to ``description_path`` (atomically) for images in the dataset."""

    def __init__(self, crawler: Any):
        self.core = DatasetCore.of(crawler)

    @classmethod
    def from_crawler(cls, crawler: Any) -> SaveDescriptionsPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if (
            isinstance(item, ImageItem)
            and item.description is not None
            and item.description_path
            and item.result.outcome in KEPT_OUTCOMES
        ):
            data = json.dumps(item.description, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
            try:
                await asyncio.to_thread(self.core.disk.write_file, item.description_path, data)
            except OSError as exc:  # the image is complete and stays; a re-run writes the description
                self.core.fail(f"cannot write to {item.description_path}: {exc.strerror or exc}")
        return item
