"""Step 3: reject "image unavailable" stand-ins that a host serves instead of the photo.

Two signs, both settings: a redirect hop or the final URL matching a known placeholder URL
(Flickr's ``photo_unavailable`` on yimg.com, Imgur's ``removed.png``), and the bytes matching
a known placeholder's digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from ..items import ImageItem
from ..outcomes import PLACEHOLDER
from .download import DOWNLOADED


def _sha1_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


class RejectPlaceholdersPipeline:
    """Marks an image ``placeholder`` when its URLs or its bytes match a known placeholder."""

    def __init__(self, url_patterns: list[str], digests: list[str]):
        self.url_patterns = [re.compile(p) for p in url_patterns]
        self.sha256 = {d.split(":", 1)[1].lower() for d in digests if d.startswith("sha256:")}
        self.sha1 = {d.split(":", 1)[1].lower() for d in digests if d.startswith("sha1:")}

    @classmethod
    def from_crawler(cls, crawler: Any) -> RejectPlaceholdersPipeline:
        s = crawler.settings
        return cls(s.getlist("PLACEHOLDER_URL_PATTERNS"), s.getlist("PLACEHOLDER_DIGESTS"))

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, ImageItem) or item.outcome != DOWNLOADED:
            return item
        for url in [*item.redirect_urls, item.final_url or ""]:
            if any(p.search(url) for p in self.url_patterns):
                item.outcome, item.detail = PLACEHOLDER, f"redirected to the placeholder {url}"
                return item
        if item.sha256 in self.sha256 or (
            self.sha1 and item.staged and await asyncio.to_thread(_sha1_of, item.staged) in self.sha1
        ):
            item.outcome, item.detail = PLACEHOLDER, "the bytes are a known placeholder image"
        return item
