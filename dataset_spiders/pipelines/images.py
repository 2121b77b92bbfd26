"""The image stage: fetch, check and commit each item's image, in one subclass of Scrapy's
``ImagesPipeline`` whose hooks do the work, as ``FilesPipeline`` does for its own files.

What we change of the stock pipeline, hook by hook:
- ``media_to_download``: an image already in the dataset is ``present``, whatever its age
  (the stock check re-downloads after ``IMAGES_EXPIRES`` days); a file that cannot be there
  (its folder's listing at start says so) costs no disk access at all;
- ``media_downloaded``: the bytes are kept as served (the stock pipeline re-encodes every
  image as JPEG); one worker-thread call hashes them, matches known placeholders and decodes
  them in full; then, on the reactor, the learned placeholders and the core's keep-or-reject
  decision; then the staged file is renamed into place by the core's group commit;
- ``media_failed``: the real reason is kept, not a bare ``FileException``, and logged once,
  at INFO, by the record stage;
- ``process_item``: an item's URLs are alternatives, tried in order while they are gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, NoReturn

from scrapy import Request
from scrapy.pipelines.images import ImagesPipeline
from scrapy.pipelines.media import FileInfo, FileInfoOrError, MediaPipeline
from twisted.python.failure import Failure

from ..dataset import DatasetCore
from ..dataset.formats import extension_for
from ..dataset.validation import Limits, Placeholders, examine, opted_out
from ..downloader.encoded_images import IMAGE_META
from ..downloader.handler import GROUP_META
from ..downloader.retries import RATE_LIMITED_META, RETRY_LATER_META
from ..items import ImageItem
from ..outcomes import ImageRejected, Outcome, classify, http_outcome, is_permanent
from .store import StagingFilesStore

logger = logging.getLogger(__name__)

#: Outcomes after which the next alternative URL of an item is tried.
TRY_NEXT = frozenset({"http_404", "http_410"})


class _RecordedFailures(logging.Filter):
    """Drops the traceback Scrapy's media pipeline logs at ERROR for every failed image (from
    inside ``_process_request``, which has no hook): our failures are outcomes, each recorded in
    the manifest and logged once, at INFO, by the record stage."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ImageRejected))

    @classmethod
    def install(cls) -> None:
        """Once per process, when an image stage is made (never on import)."""
        media = logging.getLogger("scrapy.pipelines.media")
        if not any(isinstance(f, cls) for f in media.filters):
            media.addFilter(cls())


class DatasetImagesPipeline(ImagesPipeline):
    """Fetches one image per item, checks it, and keeps it or says why not (``item.result.outcome``)."""

    STORE_SCHEMES = {**ImagesPipeline.STORE_SCHEMES, "": StagingFilesStore, "file": StagingFilesStore}
    LOG_FAILED_RESULTS = False  # every failure is recorded in the manifest instead

    def __init__(self, store_uri: str, download_func: None = None, *, crawler: Any):
        super().__init__(store_uri, crawler=crawler)
        _RecordedFailures.install()
        s = crawler.settings
        self.core = DatasetCore.of(crawler)
        self.timeout: float = s.getfloat("IMAGES_DOWNLOAD_TIMEOUT", 0) or 0
        self.limits = Limits.from_settings(s)
        self.mask_limits = Limits(max_pixels=self.limits.max_pixels)  # a mask is as large as its image
        self.placeholders = Placeholders(s.getlist("PLACEHOLDER_URL_PATTERNS"), s.getlist("PLACEHOLDER_DIGESTS"))
        self.honour_noai = s.getbool("IMAGES_HONOUR_NOAI")
        retry_times = s.get("IMAGES_RETRY_TIMES")
        self.retry_times: int | None = None if retry_times in (None, "") else int(retry_times)

    async def process_item(self, item: Any, spider: Any = None) -> Any:
        if not isinstance(item, ImageItem) or item.result.outcome is not None:
            return item
        if not item.image_urls:  # no_images: the description is what is kept
            item.result.outcome = Outcome.DESCRIBED
            if item.kind == "image":
                await self.core.count_present(item)
            return item
        urls = item.image_urls
        try:
            for url, stem in zip(urls, item.stems, strict=True):
                item.result.url, item.result.stem, item.image_urls = url, stem, [url]
                self.forget_failure(url)
                await super().process_item(item)
                if item.result.outcome not in TRY_NEXT:
                    break
        finally:
            item.image_urls = urls
        return item

    def forget_failure(self, url: str) -> None:
        """Scrapy's media pipeline answers a URL it met before in the run from its cache
        (``spiderinfo.downloaded``, by request fingerprint). A failure that may mend (a timeout, a
        refused connection, a host that was down, a class that was full) is forgotten, so a
        candidate tried again later (behind its class, after its host's probe) is really asked."""
        cache = self.spiderinfo.downloaded
        fingerprint = self._fingerprinter.fingerprint(Request(url))
        cached = cache.get(fingerprint)
        if isinstance(cached, Failure) and not is_permanent(classify(cached.value)[0]):
            del cache[fingerprint]

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        meta: dict[str, Any] = {
            "dont_cache": True,
            IMAGE_META: True,  # no transfer encoding; the memory budget; the concurrency caps
            "give_up_log_level": logging.DEBUG,  # a dead image is an outcome, logged once by the record stage
        }
        if self.timeout:
            meta["download_timeout"] = self.timeout
        if self.retry_times is not None:
            meta["max_retry_times"] = self.retry_times
        if item.group:
            meta[GROUP_META] = item.group  # lets the download be cancelled once the class is full
        if item.retry_later:
            meta[RETRY_LATER_META] = True  # the spider retries a failed connection behind its class's other candidates
        return [Request(item.result.url, meta=meta)]

    def file_path(self, request: Request, response: Any = None, info: Any = None, *, item: Any = None) -> str:
        return f"{item.result.stem}.{item.ext or 'img'}"

    # Scrapy's annotation names a Deferred only, but its caller (MediaPipeline._process_request)
    # awaits whatever this returns through ensure_awaitable: a coroutine is taken as well.
    async def media_to_download(  # type: ignore[override]
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> FileInfo | None:
        disk, stem = self.core.disk, item.result.stem
        folder = os.path.dirname(stem)
        if item.key not in self.core.index:
            if not disk.has_listing(folder):
                await asyncio.to_thread(disk.listed, folder)
            if not disk.may_hold(stem):
                return None  # nothing under this name when the run started: download it
        limits = self.mask_limits if item.kind == "mask" else self.limits
        known = self.core.known(item.kind, item.image_id)
        found = await asyncio.to_thread(disk.find_present, known, stem, limits)
        if found is None:
            return None
        result = item.result
        result.path, result.size, result.sha256 = found.path, found.bytes, found.sha256
        result.width, result.height, result.pixels, result.phash = found.width, found.height, found.pixels, found.phash
        result.outcome = Outcome.PRESENT
        if item.kind == "image":
            await self.core.count_present(item)
        self.inc_stats(Outcome.PRESENT)
        return {"url": request.url, "path": found.path or "", "checksum": found.sha256, "status": Outcome.PRESENT}

    async def media_downloaded(
        self, response: Any, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> FileInfo:
        result = item.result
        result.final_url = response.url
        result.redirect_urls = list(response.meta.get("redirect_urls", []))
        if RATE_LIMITED_META in response.meta:
            wait = response.meta[RATE_LIMITED_META]
            detail = f"HTTP {response.status}: asked to wait {wait:.0f} s, over RETRY_AFTER_MAX"
            raise ImageRejected(Outcome.RATE_LIMITED, detail)
        if response.status != 200:
            raise ImageRejected(http_outcome(response.status), f"HTTP {response.status} from {response.url}")
        if not response.body:
            raise ImageRejected(Outcome.EMPTY, f"empty body from {response.url}")
        if self.honour_noai and (refusal := opted_out(response.headers.getlist(b"X-Robots-Tag"))):
            raise ImageRejected(Outcome.OPTED_OUT, f"X-Robots-Tag: {refusal} from {response.url}")
        why = self.placeholders.by_url([*result.redirect_urls, response.url])
        if why:
            raise ImageRejected(Outcome.PLACEHOLDER, why)
        result.size = len(response.body)
        limits = self.mask_limits if item.kind == "mask" else self.limits
        try:
            result.sha256, decoded = await asyncio.to_thread(examine, response.body, limits, self.placeholders)
        except ImageRejected as exc:
            result.sha256 = exc.sha256
            raise
        result.width, result.height, result.format = decoded.width, decoded.height, decoded.format
        result.pixels, result.phash = decoded.pixels, decoded.phash
        await self.core.mode.learn(item)  # a placeholder learned now is refused (ImageRejected)
        status = await self.keep(item, response.body)
        if item.size_hint is not None and result.size != item.size_hint:
            result.detail = (f"{result.size} bytes, the record said {item.size_hint} (a hint, not a checksum: the "
                             "archive writes IPTC metadata into its JPEGs); kept, every check passed")
        return {"url": request.url, "path": result.path or "", "checksum": result.sha256, "status": status}

    async def keep(self, item: ImageItem, data: bytes) -> str:
        """The core's keep step (decide, stage, rename durably), under the image's final name."""
        return await self.core.keep(item, data, f"{item.result.stem}.{extension_for(item.result.format, item.ext)}")

    def media_failed(self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo) -> NoReturn:
        outcome, detail = classify(failure.value)
        # Not chained: Scrapy caches each failure for the whole run, and the original exception's
        # traceback holds the response (a gzip bomb's buffer once held a GiB per failed image).
        raise ImageRejected(outcome, detail) from None

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        for _, value in results:  # (True, FileInfo) or (False, Failure)
            if isinstance(value, Failure):
                item.result.decide(*classify(value.value))
            elif item.result.sha256 is None:
                # Scrapy hands a URL fetched earlier in the run its first result, not the bytes.
                item.result.decide(Outcome.DUPLICATE, f"{item.result.url} was already fetched in this run")
            else:
                item.result.outcome = value["status"]
        return item
