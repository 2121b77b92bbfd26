"""An HTTP download handler that drops an image download as soon as its class is full.

Scrapy has no public way to cancel a download in flight, so a host that hangs would hold the
end of the crawl until its timeout. This handler races each image download of a group (a
class with an exact count) against that group filling up; when the group wins, the download
is cancelled (the connection closed) and the request fails with ``GroupFull``, recorded as
``surplus``. Requests of a group that is already full are refused before they start.
"""

from __future__ import annotations

import asyncio
import contextlib

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.http import Response

from ..outcomes import GroupFull

GROUP_META = "dataset_group"


class CancelWhenFullDownloadHandler(HTTP11DownloadHandler):
    """``HTTP11DownloadHandler`` whose image downloads stop once their group is full."""

    async def download_request(self, request: Request) -> Response:
        group = request.meta.get(GROUP_META)
        quota = getattr(self._crawler.spider, "quota", None)
        if group is None or quota is None or quota.target is None:
            return await super().download_request(request)
        if quota.full(group):
            raise GroupFull(f"{group} is full")
        download = asyncio.ensure_future(super().download_request(request))
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
