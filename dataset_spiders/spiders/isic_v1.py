"""The legacy v1 (Girder) API: its listing by offset, and its segmentation masks (the only API
that serves masks itself; v2 masks come from the challenge archives, ``isic_masks.py``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy.http import Response

from ..items import ImageItem
from ..sources import isic
from .base import SearchRejected, SourceError
from .idle_pages import IdlePages, record_key

if TYPE_CHECKING:
    from .isic import IsicSpider

logger = logging.getLogger(__name__)


async def v1_records(spider: IsicSpider) -> AsyncIterator[isic.IsicRecord]:
    p = spider.params
    offset, previous = p.offset, None
    idle = IdlePages(spider.settings.getint("ISIC_MAX_IDLE_PAGES", 3), "image list")
    while True:
        url = isic.v1_list_url(spider.api_url, offset, p.filter)
        status, data = await spider.fetch_json(url, "image list")
        if status == 400:
            message = data.get("message") if isinstance(data, dict) else None
            raise SearchRejected(f"the ISIC API v1 rejected the listing: {message or 'HTTP 400'}")
        if status != 200 or not isinstance(data, list):
            raise SourceError(
                f"the image list {url} answered HTTP {status} without a JSON list"
            )
        names = [r.get("name") if isinstance(r, dict) else None for r in data]
        if data and names == previous:
            raise SourceError(f"the image list repeated a page at offset {offset}")
        previous = names
        if not data:  # IA's own client pages until an empty list: a server may cap `limit`
            return
        if idle.progress([record_key(raw, "name") for raw in data], url, more=True):
            for raw in data:
                try:
                    yield isic.v1_record(await v1_full(spider, raw), spider.api_url)
                except isic.RecordError as exc:
                    logger.warning("Skipping a v1 record: %s", exc)
        offset += len(data)

async def v1_full(spider: IsicSpider, raw: Any) -> Any:
    """The full description of a v1 record, fetched when the server listed only a summary."""
    if not isinstance(raw, dict) or "meta" in raw or not isic.valid_object_id(raw.get("_id")):
        return raw
    url = isic.v1_image_url(spider.api_url, raw["_id"])
    status, full = await spider.fetch_json(url, "image description")
    if status != 200 or not isinstance(full, dict):
        raise isic.RecordError(f"{url} answered HTTP {status} without a description")
    return full


def parse_segmentations(spider: IsicSpider, response: Response, isic_id: str) -> Any:
    try:
        # the body, not response.json(): Scrapy makes a plain Response (no json()) of a body it finds binary
        candidates = isic.pick_segmentations(json.loads(response.body), spider.params.seg_level)
    except (ValueError, isic.RecordError) as exc:
        logger.warning("%s: unusable segmentation list: %s", isic_id, exc)
        return
    if not candidates:
        spider.crawler.stats.inc_value("isic/no_segmentation")
        logger.info("%s has no segmentation that did not fail", isic_id)
        return
    skills = [c.get("skill") if c.get("skill") in ("novice", "expert") else "unknown" for c in candidates]
    yield ImageItem(
        image_id=isic_id,
        kind="mask",
        image_urls=[isic.v1_mask_url(spider.api_url, c["_id"]) for c in candidates],
        stems=[os.path.join(spider.seg_dir, f"{isic_id}_{skill}") for skill in skills],
        ext="png",
    )
