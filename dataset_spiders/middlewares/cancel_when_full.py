"""The HTTP download handler of both spiders: image downloads stay within the memory budget
(``memory_budget.py``), and an image download is dropped as soon as its class is full.

Scrapy has no public way to cancel a download in flight, so a host that hangs would hold the
end of the crawl until its timeout. This handler races each image download of a group (a
class with an exact count) against that group filling up; when the group wins, the download
is cancelled (the connection closed) and the request fails with ``GroupFull``, recorded as
``surplus``. Requests of a group that is already full are refused before they start; one
still waiting for room in the memory budget is dropped the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.exceptions import DownloadCancelledError
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.endpoints import HostnameEndpoint

from ..core import DatasetCore
from ..outcomes import GroupFull
from .encoded_images import IMAGE_META
from .memory_budget import BudgetedDownloads

GROUP_META = "dataset_group"

#: Twisted's HostnameEndpoint reports a refused connection only when its next "happy eyeballs"
#: attempt would start, 0.3 s later: a dead image host cost 0.3 s per try, and a list of dead
#: URLs went at 20-30 candidates a second. Attempts to a host's next address now start 10 ms
#: apart, and a refusal is known at once. (No public setting reaches it through Scrapy's agent.)
HostnameEndpoint._DEFAULT_ATTEMPT_DELAY = 0.01


class ImageConcurrency:
    """``CONCURRENT_REQUESTS`` and ``CONCURRENT_REQUESTS_PER_DOMAIN`` for image downloads.

    The media pipeline sends its requests through ``engine.download``, which skips the
    scheduler and the engine's back-out check, so Scrapy caps them per download slot only, and
    not in total: the caps are enforced here, before a download starts (its timeout starts with
    it). One per crawl, shared by the handler instances (one per URL scheme)."""

    _by_crawler: weakref.WeakKeyDictionary[Any, ImageConcurrency] = weakref.WeakKeyDictionary()

    def __init__(self, total: int, per_host: int):
        self.total = asyncio.Semaphore(max(1, total))
        self.per_host_limit = max(1, per_host)
        self.per_host: dict[str, asyncio.Semaphore] = {}

    @classmethod
    def of(cls, crawler: Any) -> ImageConcurrency:
        if crawler not in cls._by_crawler:
            s = crawler.settings
            cls._by_crawler[crawler] = cls(s.getint("CONCURRENT_REQUESTS"), s.getint("CONCURRENT_REQUESTS_PER_DOMAIN"))
        return cls._by_crawler[crawler]

    @contextlib.asynccontextmanager
    async def slot(self, request: Request) -> AsyncIterator[None]:
        host = urlparse_cached(request).hostname or ""
        per_host = self.per_host.setdefault(host, asyncio.Semaphore(self.per_host_limit))
        async with self.total, per_host:
            yield


class CancelWhenFullDownloadHandler(HTTP11DownloadHandler):
    """``HTTP11DownloadHandler`` whose image downloads share a memory budget and stop once
    their group is full."""

    def __init__(self, crawler: Any):
        super().__init__(crawler)
        self._budgeted = BudgetedDownloads.of(crawler)
        core = crawler.get_extension(DatasetCore)
        self._quota = core.quota if core is not None else None
        # a worker that lost Redis for good can keep nothing more: its downloads stop at once
        self._stop_with_run = core is not None and core.workers is not None
        self._caps = ImageConcurrency.of(crawler)

    async def _fetch(self, request: Request) -> Response:
        if not request.meta.get(IMAGE_META):
            return await super().download_request(request)
        async with self._caps.slot(request):
            if self._budgeted is None:
                return await super().download_request(request)
            return await self._budgeted.download(request, super().download_request)

    async def download_request(self, request: Request) -> Response:
        group = request.meta.get(GROUP_META)
        quota = self._quota
        if group is None or quota is None or quota.target is None:
            return await self._fetch(request)
        if quota.full(group):
            raise GroupFull(f"{group} is full")
        if self._stop_with_run and quota.stopped:
            raise DownloadCancelledError("the run is stopping")
        download = asyncio.ensure_future(self._fetch(request))
        full = asyncio.ensure_future(quota.wait_full(group))
        stopped = asyncio.ensure_future(quota.wait_stopped() if self._stop_with_run else asyncio.Future())
        try:
            await asyncio.wait({download, full, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            full.cancel()
            stopped.cancel()
        if not download.done():
            download.cancel()  # cancels the Twisted download under it: the connection is closed
            with contextlib.suppress(BaseException):
                await download
            if quota.stopped and not quota.full(group):
                raise DownloadCancelledError("the run is stopping")
            raise GroupFull(f"{group} filled up while this image was downloading")
        return download.result()
