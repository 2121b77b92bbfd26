"""Step 1: fetch each item's image with Scrapy's ImagesPipeline and stage the bytes as served.

What we change of the stock pipeline, hook by hook:
- ``media_to_download``: an image already in the dataset is ``present``, whatever its age
  (the stock check re-downloads after ``IMAGES_EXPIRES`` days);
- ``media_downloaded``: the bytes are staged untouched (the stock pipeline re-encodes every
  image as JPEG) and hashed in a worker thread; nothing is decoded here;
- ``media_failed``: the real reason is kept, not a bare ``FileException``;
- ``process_item``: an item's URLs are alternatives, tried in order while they are gone.
The checks and the rename into place are the next pipelines' work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn

from scrapy import Request
from scrapy.pipelines.images import ImagesPipeline
from scrapy.pipelines.media import FileInfo, FileInfoOrError, MediaPipeline
from twisted.python.failure import Failure

from ..items import ImageItem
from ..middlewares.cancel_when_full import GROUP_META
from ..middlewares.encoded_images import IMAGE_META
from ..middlewares.retry_after import RATE_LIMITED_META
from ..outcomes import (
    DOWNLOADED,
    DUPLICATE,
    EMPTY,
    ERROR,
    PRESENT,
    RATE_LIMITED,
    ImageRejected,
    classify,
    http_outcome,
)
from .store import StagingFilesStore
from .validate import Limits

logger = logging.getLogger(__name__)

#: Outcomes after which the next alternative URL of an item is tried.
TRY_NEXT = frozenset({"http_404", "http_410"})


class _RecordedFailures(logging.Filter):
    """Drops the traceback Scrapy's media pipeline logs for every failed image: our failures
    are expected, and each one is recorded, with its reason, in the manifest and the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ImageRejected))


logging.getLogger("scrapy.pipelines.media").addFilter(_RecordedFailures())


class DatasetImagesPipeline(ImagesPipeline):
    """Downloads one image per item and stages its bytes for the checks that follow."""

    STORE_SCHEMES = {**ImagesPipeline.STORE_SCHEMES, "": StagingFilesStore, "file": StagingFilesStore}
    LOG_FAILED_RESULTS = False  # every failure is recorded in the manifest instead

    store: StagingFilesStore

    def __init__(self, store_uri: str, download_func: None = None, *, crawler: Any):
        super().__init__(store_uri, crawler=crawler)
        self.timeout: float = crawler.settings.getfloat("IMAGES_DOWNLOAD_TIMEOUT", 0) or 0
        self.limits = Limits.from_settings(crawler.settings)
        retry_times = crawler.settings.get("IMAGES_RETRY_TIMES")
        self.retry_times: int | None = None if retry_times in (None, "") else int(retry_times)

    async def process_item(self, item: Any, spider: Any = None) -> Any:
        if not isinstance(item, ImageItem) or item.outcome is not None or not item.image_urls:
            return item
        urls = item.image_urls
        try:
            for url, stem in zip(urls, item.stems, strict=True):
                item.url, item.stem, item.image_urls = url, stem, [url]
                await super().process_item(item)
                if item.outcome not in TRY_NEXT:
                    break
        finally:
            item.image_urls = urls
        return item

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        meta: dict[str, Any] = {"dont_cache": True, IMAGE_META: True}  # no transfer encoding; memory budget
        if self.timeout:
            meta["download_timeout"] = self.timeout
        if self.retry_times is not None:
            meta["max_retry_times"] = self.retry_times
        if item.group:
            meta[GROUP_META] = item.group  # lets the download be cancelled once the class is full
        return [Request(item.url, meta=meta)]

    def file_path(self, request: Request, response: Any = None, info: Any = None, *, item: Any = None) -> str:
        return f"{item.stem}.{item.ext or 'img'}"

    async def media_to_download(
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> FileInfo | None:
        dataset = self.crawler.spider.dataset
        found = await asyncio.to_thread(dataset.find_present, item.kind, item.image_id, item.stem, self.limits)
        if found is None:
            return None
        item.path, item.size, item.sha256 = found.path, found.bytes, found.sha256
        item.width, item.height, item.pixels = found.width, found.height, found.pixels
        self.inc_stats(PRESENT)
        return {"url": request.url, "path": found.path or "", "checksum": found.sha256, "status": PRESENT}

    async def media_downloaded(
        self, response: Any, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> FileInfo:
        item.final_url = response.url
        item.redirect_urls = list(response.meta.get("redirect_urls", []))
        if RATE_LIMITED_META in response.meta:
            wait = response.meta[RATE_LIMITED_META]
            detail = f"HTTP {response.status}: asked to wait {wait:.0f} s, over RETRY_AFTER_MAX"
            raise ImageRejected(RATE_LIMITED, detail)
        if response.status != 200:
            raise ImageRejected(http_outcome(response.status), f"HTTP {response.status} from {response.url}")
        if not response.body:
            raise ImageRejected(EMPTY, f"empty body from {response.url}")
        self.inc_stats(DOWNLOADED)
        try:
            staging = self.crawler.spider.dataset.staging_for(item.stem)
            item.staged, item.sha256 = await asyncio.to_thread(self.store.stage, response.body, staging)
        except OSError as exc:  # a full disk or a read-only folder: nothing more can be kept
            self.crawler.spider.fail(f"cannot write to {staging}: {exc.strerror or exc}")
            raise ImageRejected(ERROR, f"cannot stage the bytes: {exc.strerror or exc}") from None
        item.size = len(response.body)
        return {"url": request.url, "path": item.staged, "checksum": item.sha256, "status": DOWNLOADED}

    def media_failed(self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo) -> NoReturn:
        outcome, detail = classify(failure.value)
        # Not chained: Scrapy caches each failure for the whole run, and the original exception's
        # traceback holds the response (a gzip bomb's buffer once held a GiB per failed image).
        raise ImageRejected(outcome, detail) from None

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        for ok, value in results:
            if ok and value["status"] == DOWNLOADED and item.staged is None:
                # Scrapy hands a URL fetched earlier in the run its first result, not the bytes.
                item.outcome, item.detail = DUPLICATE, f"{item.url} was already fetched in this run"
            elif ok:
                item.outcome = PRESENT if value["status"] == PRESENT else DOWNLOADED
            else:
                item.outcome, item.detail = classify(value.value)
        return item
