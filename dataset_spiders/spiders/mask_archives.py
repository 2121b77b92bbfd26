"""Remote ZIP archives read by HTTP Range through Scrapy: their central directories (cached in
the dataset between runs) and single members, never the whole archive when the server serves
ranges. A server that answers a Range request with the whole body (200) has sent the archive
anyway: it is kept once in the cache and read there from then on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from scrapy import Request, signals
from scrapy.http import Response

from ..dataset.files import open_regular, unlink_quietly
from ..sources import zip_ranges
from ..sources.zip_ranges import Member, ZipError

if TYPE_CHECKING:
    from .base import DatasetSpider

logger = logging.getLogger(__name__)

CACHE_FOLDER = os.path.join(".cache", "isic-masks")  # under out_dir
LOCAL_SLACK = 128  # bytes read past a local header's name for its extra field, which may differ from the central one
CACHE_VERSION = 1


class ArchiveChanged(ZipError):
    """The archive's size is not the one its cached directory was read from."""


class RangeRefused(ZipError):
    """The server did not answer a range request with the range (``status``: its answer)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class Archive:
    """One archive: its URL, size, the members that matter, and where its bytes come from."""

    url: str
    total: int
    members: list[Member]
    whole: str | None = None  # the cached copy, when the server sends no ranges


class ArchiveReader:
    """Reads archives for a spider: byte ranges through its engine, and the cache folder."""

    def __init__(self, spider: DatasetSpider, root: str):
        self.spider = spider
        self.stats = spider.crawler.stats
        self.cache = os.path.join(root, CACHE_FOLDER)

    # --- requests -------------------------------------------------------------------------

    async def get(self, url: str, byte_range: str) -> Response:
        """GET ``url`` with a ``Range`` header, through the downloader middlewares (retries, proxy)."""
        request = Request(url, headers={"Range": byte_range, "Accept-Encoding": "identity"}, dont_filter=True,
                          meta={"give_up_log_level": logging.DEBUG, "dont_cache": True})
        response = await self.spider.crawler.engine.download_async(request)
        self.stats.inc_value("isic_masks/archive_requests")
        self.stats.inc_value("isic_masks/archive_bytes", len(response.body))
        return response

    async def read(self, archive: Archive, start: int, length: int) -> bytes:
        """``length`` bytes of ``archive`` from ``start`` (fewer at its end)."""
        length = min(length, archive.total - start)
        if length <= 0:
            return b""
        if archive.whole:
            return await asyncio.to_thread(_read_file, archive.whole, start, length)
        response = await self.get(archive.url, f"bytes={start}-{start + length - 1}")
        got = _content_range(response)
        if response.status != 206 or got is None:
            raise RangeRefused(f"{archive.url} answered HTTP {response.status} to a Range request, not 206 with a "
                               "range", response.status)
        if got[2] is not None and got[2] != archive.total:
            self.forget(archive.url)
            raise ArchiveChanged(f"{archive.url} is now {got[2]} bytes, not {archive.total}: its cached directory "
                                 "is dropped; run again")
        if got[0] != start or len(response.body) != length:
            raise ZipError(f"{archive.url} sent bytes {got[0]}-{got[1]} ({len(response.body)}) for "
                           f"{start}-{start + length - 1}")
        return response.body

    # --- the central directory ------------------------------------------------------------

    async def open(self, url: str, wanted: Any) -> Archive:
        """The archive at ``url`` with the members ``wanted(name)`` accepts: from the cache, or
        its tail and central directory by Range (or whole, once, from a server without ranges)."""
        cached = await asyncio.to_thread(self._cached, url)
        if cached is not None:
            self.stats.inc_value("isic_masks/directories_cached")
            return cached
        with WholeDownloadProgress(self.spider, url):
            response = await self.get(url, f"bytes=-{zip_ranges.TAIL}")
        if response.status == 206:
            got = _content_range(response)
            if got is None or got[2] is None or got[1] != got[2] - 1:
                raise ZipError(f"{url} answered a Range request without a usable Content-Range")
            archive, tail = Archive(url, got[2], []), response.body
        elif response.status == 200:
            archive = await asyncio.to_thread(self._keep_whole, url, response.body)
            tail = response.body[-zip_ranges.TAIL:]
        else:
            raise ZipError(f"{url} answered HTTP {response.status}")
        tail_start = archive.total - len(tail)
        try:
            directory = zip_ranges.locate_directory(tail, tail_start)
        except zip_ranges.NeedBytes as need:
            directory = zip_ranges.parse_eocd64(await self.read(archive, need.offset, need.length), need.offset)
        if directory.offset >= tail_start:
            listing = tail[directory.offset - tail_start:directory.offset - tail_start + directory.size]
        else:
            listing = await self.read(archive, directory.offset, directory.size)
        archive.members = [m for m in zip_ranges.parse_directory(listing, directory.entries) if wanted(m.name)]
        await asyncio.to_thread(self._save, archive)
        return archive

    async def member(self, archive: Archive, member: Member) -> bytes:
        """A member's bytes, checked against its size and CRC-32: one range request, two when its
        local header's extra field is longer than the slack."""
        head = zip_ranges.LOCAL_SIZE + len(member.name.encode("utf-8")) + LOCAL_SLACK
        chunk = await self.read(archive, member.offset, head + member.compressed)
        start = zip_ranges.data_offset(chunk, member) - member.offset
        data = chunk[start:start + member.compressed]
        if len(data) < member.compressed:
            data = await self.read(archive, member.offset + start, member.compressed)
        return await asyncio.to_thread(zip_ranges.extract, member, data)

    # --- the cache ------------------------------------------------------------------------

    def path(self, url: str, suffix: str) -> str:
        return os.path.join(self.cache, hashlib.sha1(url.encode()).hexdigest()[:20] + suffix)

    def _cached(self, url: str) -> Archive | None:
        """The cached directory of ``url`` (never through a symlink: a planted one is no cache), or None."""
        try:
            with _open_no_link(self.path(url, ".json")) as f:
                obj = json.loads(f.read().decode("utf-8"))
            if obj.get("version") != CACHE_VERSION or obj.get("url") != url:
                return None
            whole = self.path(url, ".zip") if obj.get("whole") else None
            if whole and (os.path.islink(whole) or os.path.getsize(whole) != obj["total"]):
                return None
            return Archive(url, int(obj["total"]), [Member.from_json(m) for m in obj["members"]], whole)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self, archive: Archive) -> None:
        os.makedirs(self.cache, exist_ok=True)
        obj = {"version": CACHE_VERSION, "url": archive.url, "total": archive.total, "whole": bool(archive.whole),
               "members": [m.to_json() for m in archive.members]}
        self.spider.core.disk.write_file(self.path(archive.url, ".json"), json.dumps(obj).encode())

    def _keep_whole(self, url: str, body: bytes) -> Archive:
        os.makedirs(self.cache, exist_ok=True)
        path = self.path(url, ".zip")
        self.spider.core.disk.write_file(path, body)
        logger.info("%s: the whole archive (%.1f MB) is kept in %s and read there from now on",
                    url, len(body) / 1e6, path)
        return Archive(url, len(body), [], path)

    def forget(self, url: str) -> None:
        for suffix in (".json", ".zip"):
            unlink_quietly(self.path(url, suffix))


class WholeDownloadProgress:
    """While the first request to an archive runs: if the answer is longer than the tail asked
    for (a server that ignores Range sends the whole archive), say so, then its progress."""

    def __init__(self, spider: Any, url: str):
        self.crawler, self.url = spider.crawler, url
        self.interval = spider.settings.getfloat("PROGRESS_INTERVAL", 5) or 5
        self.expected, self.got, self.said = 0, 0, 0.0

    def __enter__(self) -> WholeDownloadProgress:
        self.crawler.signals.connect(self.headers, signal=signals.headers_received)
        self.crawler.signals.connect(self.received, signal=signals.bytes_received)
        return self

    def __exit__(self, *exc: object) -> None:
        self.crawler.signals.disconnect(self.headers, signal=signals.headers_received)
        self.crawler.signals.disconnect(self.received, signal=signals.bytes_received)

    def headers(self, headers: Any, body_length: int, request: Any, spider: Any) -> None:
        if request.url == self.url and body_length > zip_ranges.TAIL:
            self.expected, self.said = body_length, time.monotonic()
            logger.warning("%s does not answer Range requests: downloading the whole archive (%.1f MB) once, "
                           "into the dataset's cache", self.url, body_length / 1e6)

    def received(self, data: bytes, request: Any, spider: Any) -> None:
        if request.url != self.url or not self.expected:
            return
        self.got += len(data)
        if time.monotonic() - self.said >= self.interval:
            self.said = time.monotonic()
            logger.info("%s: %.1f of %.1f MB", self.url, self.got / 1e6, self.expected / 1e6)


def _content_range(response: Response) -> tuple[int, int, int | None] | None:
    """The response's ``Content-Range``, read (None: none, or none we can use)."""
    value = response.headers.get(b"Content-Range")
    return zip_ranges.content_range(value.decode("latin-1") if value is not None else None)


def _open_no_link(path: str) -> IO[bytes]:
    """``path`` opened for reading, refusing a symlink (OSError)."""
    return open_regular(path, follow=False)


def _read_file(path: str, start: int, length: int) -> bytes:
    with _open_no_link(path) as f:
        f.seek(start)
        return f.read(length)
