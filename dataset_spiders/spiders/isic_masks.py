"""Lesion masks for v2 images, from the challenge ground-truth ZIP archives (``ISIC_MASK_ARCHIVES``).

At start, each archive's central directory says which ids it has a mask for (member base names
``ISIC_nnnnnnn…segmentation.png``, any case, any folder); the first archive listed wins an id.
Once an image is in the dataset, its mask member alone is fetched by Range, inflated, checked
(a PNG of the image's dimensions) and kept byte for byte as ``{seg_dir}/{isic_id}_segmentation.png``;
an image no archive covers gets a ``no_mask`` line. With ``masks_required``, the selection is
searched among the ids that have a mask, in batches, instead of paging through the archive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from scrapy import Request

from ..dataset import DatasetCore
from ..dataset.quota import Plan
from ..dataset.validation import Limits, Placeholders, examine
from ..items import ImageItem, ImageResult
from ..outcomes import ImageRejected, Outcome, classify, http_outcome
from ..sources import isic
from ..sources.zip_ranges import Member, ZipError
from .mask_archives import Archive, ArchiveChanged, ArchiveReader, RangeRefused

logger = logging.getLogger(__name__)

MASK_NAME = re.compile(r"(ISIC_[0-9]{7})[^/]*segmentation\.png", re.IGNORECASE)  # a member's base name
SEARCH_BATCH = 50  # ids per search of masks_required (one page of at most 100 records)
MAX_MEMBER = 256 * 1024 * 1024  # bytes: a larger mask member is too_large, never fetched


def mask_id(name: str) -> str | None:
    """The ISIC id a member holds the mask of, from its base name, or None."""
    m = MASK_NAME.fullmatch(name.rsplit("/", 1)[-1])
    return m[1].upper() if m else None


class IsicMasks:
    """The index of masks over the archives, and the mask of each image kept."""

    def __init__(self, spider: Any):
        self.spider = spider
        self.core: DatasetCore = spider.core
        self.urls = [u.strip() for u in spider.settings.getlist("ISIC_MASK_ARCHIVES") if u.strip()]
        self.reader = ArchiveReader(spider, self.core.disk.root)
        self.index: dict[str, tuple[Archive, Member]] = {}
        self.limits = Limits(max_pixels=spider.settings.getint("IMAGES_MAX_PIXELS"))

    async def open(self) -> None:
        """Read (or recall) every archive's directory; an archive that cannot be read stops the run."""
        from .base import SearchRejected

        if not self.urls:
            raise SearchRejected("segmentation=true on v2 needs ISIC_MASK_ARCHIVES, the ground-truth ZIP archives")
        for url in self.urls:
            try:
                archive = await self.reader.open(url, lambda name: mask_id(name) is not None)
            except (ZipError, OSError) as exc:
                raise SearchRejected(f"the mask archive {url}: {exc}") from None
            except Exception as exc:  # the download itself failed (after retries)
                raise SearchRejected(f"cannot read the mask archive {url}: {classify(exc)[1]}") from None
            for member in archive.members:
                self.index.setdefault(mask_id(member.name) or "", (archive, member))
        logger.info("%d image id(s) have a mask in %d archive(s)", len(self.index), len(self.urls))

    # --- masks_required: the selection among the ids that have a mask ----------------------

    async def records(self) -> AsyncIterator[isic.IsicRecord]:
        """The records of the selection that have a mask: their ids searched in batches (sorted),
        each batch's records in the archive's order; ``offset`` skips the first K of them."""

        spider, p = self.spider, self.spider.params
        ids = sorted(self.index)
        base = isic.v2_query(p.filter, p.query)
        self.core.plan = Plan(min(len(ids), p.num_images or len(ids)))
        to_skip, seen = p.offset, set[str]()
        for start in range(0, len(ids), SEARCH_BATCH):
            terms = " OR ".join(f"isic_id:{i}" for i in ids[start:start + SEARCH_BATCH])
            query = f"({base}) AND ({terms})" if base else terms
            async for page, results, _ in spider.search_pages(query, seen):
                records, to_skip = isic.page_records(results, page, to_skip)
                for record in records:
                    yield record

    # --- the mask of each image in the dataset ----------------------------------------------

    def follow(self, image: ImageItem) -> None:
        """After an image is in the dataset: its mask, in a request of its own (a ``data:`` one
        that costs no network: the mask's own range requests are made in its callback)."""
        known = self.core.disk.kept_path(self.core.known("mask", image.image_id))
        if known and os.path.isfile(known):
            return
        if self.spider.known_failure("mask", image.image_id):
            return
        self.spider.crawler.engine.crawl(
            Request("data:,", callback=self.mask_items, cb_kwargs={"image": image}, dont_filter=True)
        )

    async def mask_items(self, response: Any, image: ImageItem) -> AsyncIterator[ImageItem]:
        yield await self.mask(image)

    async def mask(self, image: ImageItem) -> ImageItem:
        """The mask item of ``image``, its outcome decided: kept, no_mask, or why not."""
        isic_id = image.image_id
        stem = os.path.join(self.spider.seg_dir, f"{isic_id}_segmentation")
        item = ImageItem(image_id=isic_id, image_urls=[], stems=[stem], kind="mask", ext="png",
                         result=ImageResult(stem=stem))
        found = self.index.get(isic_id)
        if found is None:
            item.result.decide(Outcome.NO_MASK, f"none of the {len(self.urls)} mask archive(s) has one")
            return item
        archive, member = found
        item.result.url, item.result.origin = archive.url, f"{archive.url}!{member.name}"
        try:
            if member.size > MAX_MEMBER or member.compressed > MAX_MEMBER:
                raise ImageRejected(Outcome.TOO_LARGE, f"{member.name} is {member.size} bytes")
            data = await self.reader.member(archive, member)
            await self.check(item, data, expected_size(image))
            item.result.outcome = await self.keep(item, data)
        except ImageRejected as exc:
            item.result.decide(exc.outcome, exc.detail)
        except (RangeRefused, ArchiveChanged) as exc:  # the server, not the member: may mend
            status = exc.status if isinstance(exc, RangeRefused) else 0
            item.result.outcome = http_outcome(status) if status >= 400 else Outcome.ERROR
            item.result.detail = str(exc)[:300]
        except ZipError as exc:
            item.result.decide(Outcome.CORRUPT, str(exc)[:300])
        except Exception as exc:  # the range request failed after its retries
            item.result.decide(*classify(exc))
        return item

    async def check(self, item: ImageItem, data: bytes, expected: tuple[int, int] | None) -> None:
        """A PNG that decodes in full, of the image's dimensions."""
        item.result.size = len(data)
        try:
            item.result.sha256, decoded = await asyncio.to_thread(examine, data, self.limits, Placeholders([], []))
        except ImageRejected as exc:
            item.result.sha256 = exc.sha256
            raise
        item.result.width, item.result.height, item.result.format = decoded.width, decoded.height, decoded.format
        if decoded.format != "PNG":
            raise ImageRejected(Outcome.NOT_IMAGE, f"a {decoded.format}, not a PNG")
        if expected is not None and (decoded.width, decoded.height) != expected:
            raise ImageRejected(Outcome.WRONG_SIZE,
                                f"{decoded.width}x{decoded.height}, not its image's {expected[0]}x{expected[1]}")

    async def keep(self, item: ImageItem, data: bytes) -> str:
        """The core's keep step (decide, stage, rename durably), as for images."""
        return await self.core.keep(item, data, f"{item.result.stem}.png")


def expected_size(image: ImageItem) -> tuple[int, int] | None:
    """The image's full dimensions: the record's ``pixels_x``/``pixels_y``, else the file's."""
    acquisition = ((image.description or {}).get("metadata") or {}).get("acquisition") or {}
    x, y = acquisition.get("pixels_x"), acquisition.get("pixels_y")
    if type(x) is int and type(y) is int and x > 0 and y > 0:
        return x, y
    if image.result.width and image.result.height and image.variant in (None, "full"):
        return image.result.width, image.result.height
    return None
