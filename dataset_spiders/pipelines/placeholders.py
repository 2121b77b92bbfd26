"""Step 3: reject "image unavailable" stand-ins that a host serves instead of the photo.

Three signs: a redirect hop or the final URL matching a known placeholder URL (Flickr's
``photo_unavailable`` on yimg.com, Imgur's ``removed.png``); the bytes matching a known
placeholder's digest (both lists are settings); and, learned during the crawl, the same bytes
served for ``PLACEHOLDER_LEARN_THRESHOLD`` distinct photo URLs of one site. Copies kept before
such a placeholder was recognised are withdrawn, and their classes topped up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Any
from urllib.parse import urlsplit

from ..items import ImageItem
from ..outcomes import DOWNLOADED, PLACEHOLDER
from ..sources.imagenet import registrable_domain

logger = logging.getLogger(__name__)




#: Registrable domains that are one site: Flickr serves its photos (and its placeholder) from both.
SITE_ALIASES = {"staticflickr.com": "flickr.com"}


def site_of(url: str | None) -> str:
    """The site of a URL: its host's registrable domain (``farm3.static.flickr.com`` -> ``flickr.com``)."""
    domain = registrable_domain(urlsplit(url or "").hostname or "")
    return SITE_ALIASES.get(domain, domain)


class RejectPlaceholdersPipeline:
    """Marks an image ``placeholder`` when its URLs or its bytes show it is one."""

    def __init__(self, crawler: Any, url_patterns: list[str], digests: list[str]):
        self.crawler = crawler
        self.url_patterns = [re.compile(p) for p in url_patterns]
        self.sha256 = {d.split(":", 1)[1].lower() for d in digests if d.startswith("sha256:")}
        self.sha1 = {d.split(":", 1)[1].lower() for d in digests if d.startswith("sha1:")}
        self.md5 = {d.split(":", 1)[1].lower() for d in digests if d.startswith("md5:")}
        self.sizes = {int(d.split(":", 1)[1]) for d in digests if d.startswith("size:")}

    @classmethod
    def from_crawler(cls, crawler: Any) -> RejectPlaceholdersPipeline:
        s = crawler.settings
        return cls(crawler, s.getlist("PLACEHOLDER_URL_PATTERNS"), s.getlist("PLACEHOLDER_DIGESTS"))

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageItem) or item.outcome != DOWNLOADED:
            return item
        for url in [*item.redirect_urls, item.final_url or ""]:
            if any(p.search(url) for p in self.url_patterns):
                item.outcome, item.detail = PLACEHOLDER, f"redirected to the placeholder {url}"
                return item
        if item.size in self.sizes:
            item.outcome, item.detail = PLACEHOLDER, f"{item.size} bytes: the size of a known placeholder image"
            return item
        if item.sha256 in self.sha256 or (
            (self.sha1 or self.md5) and item.staged and await asyncio.to_thread(self.other_digests, item.staged)
        ):
            item.outcome, item.detail = PLACEHOLDER, "the bytes are a known placeholder image"
            return item
        await self.learn(item)
        return item

    def other_digests(self, path: str) -> bool:
        """Whether the file's SHA-1 or MD5 is a known placeholder's (published digests). Blocking."""
        with open(path, "rb") as f:
            data = f.read()
        return hashlib.sha1(data).hexdigest() in self.sha1 or hashlib.md5(data).hexdigest() in self.md5

    async def learn(self, item: ImageItem) -> None:
        spider = self.crawler.spider
        site = site_of(item.url)
        known = spider.learner.is_placeholder(site, item.sha256 or "")
        withdraw = spider.learner.observe(site, item.sha256 or "", item.url or "")
        if withdraw is None:
            return
        item.outcome = PLACEHOLDER
        item.detail = f"the same image was served for {spider.learner.threshold}+ photo URLs of {site}"
        if not known:
            logger.warning(
                "Learned a placeholder of %s (the same image for %d URLs); withdrawing %d image(s) kept before",
                site,
                spider.learner.threshold,
                len(withdraw),
            )
        for ref, pixels in withdraw:
            await spider.withdraw(ref, item.sha256, pixels, item.detail)
