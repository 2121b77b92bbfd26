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
from typing import Any

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.http import Response

from ..outcomes import GroupFull
from .memory_budget import BudgetedDownloads

GROUP_META = "dataset_group"


class CancelWhenFullDownloadHandler(HTTP11DownloadHandler):
    """``HTTP11DownloadHandler`` whose image downloads share a memory budget and stop once
    their group is full."""

    def __init__(self, crawler: Any):
        super().__init__(crawler)
        self._budgeted = BudgetedDownloads.of(crawler)

    async def _fetch(self, request: Request) -> Response:
        if self._budgeted is None:
            return await super().download_request(request)
        return await self._budgeted.download(request, super().download_request)

    async def download_request(self, request: Request) -> Response:
        group = request.meta.get(GROUP_META)
        quota = getattr(self._crawler.spider, "quota", None)
        if group is None or quota is None or quota.target is None:
            return await self._fetch(request)
        if quota.full(group):
            raise GroupFull(f"{group} is full")
        download = asyncio.ensure_future(self._fetch(request))
        full = asyncio.ensure_future(quota.wait_full(group))
        try:
            await asyncio.wait({download, full}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            full.cancel()
        if not download.done():
            download.cancel()  # cancels the Twisted download under it: the connection is closed
            with contextlib.suppress(BaseException):
                await download
            raise GroupFull(f"{group} filled up while this image was downloading")
        return download.result()
