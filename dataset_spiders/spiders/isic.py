"""``scrapy crawl isic``: images, descriptions and (v1) masks from the ISIC Archive.

The listing is lazy: a page is fetched only when the images in flight leave room for more,
so ``num_images=25`` costs one page request; failures are topped up from the next records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from scrapy import Request
from scrapy.http import Response

from .. import signals as our_signals
from ..core.quota import Plan
from ..core.shared import SharedGone
from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES, Outcome
from ..sources import isic
from . import look_ahead
from .base import DatasetSpider, SourceError
from .idle_pages import IdlePages, record_key
from .isic_args import IsicParams
from .shared_listing import shared_items

logger = logging.getLogger(__name__)


class IsicSpider(DatasetSpider):
    name = "isic"
    Params = IsicParams
    params: IsicParams
    custom_settings = {
        "IMAGES_MAX_PIXELS": 1_000_000_000,  # ISIC keeps TIFFs of over 100 megapixels
        "IMAGES_DOWNLOAD_TIMEOUT": 300,
    }

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> IsicSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        p = spider.params
        setting = "ISIC_API_URL" if p.api_version == 2 else "ISIC_V1_API_URL"
        spider.api_url = (p.api_url or crawler.settings.get(setting)).rstrip("/")
        spider.images_dir, spider.descs_dir, spider.seg_dir = (p.folder(n) for n in ("images", "descs", "seg"))
        spider.licenses_asked: set[str] = set()
        crawler.signals.connect(spider.on_recorded, signal=our_signals.image_recorded)
        return spider

    def target(self) -> int | None:
        return self.params.num_images

    def folder_names(self) -> dict[str, str]:
        p = self.params
        names = {"descs_dir": p.folder("descs")}
        if not p.no_images:
            names["images_dir"] = p.folder("images")
        if p.segmentation:
            names["seg_dir"] = p.folder("seg")
        return names

    def own_folders(self) -> list[str]:
        labels = (*isic.LABELS, "unlabeled") if self.params.layout == "by_label" else ()
        return [os.path.join(os.path.abspath(self.params.out_dir), "licenses"),
                *(os.path.join(self.params.folder("images"), label) for label in labels)]

    async def items(self) -> AsyncIterator[Any]:
        p = self.params
        if not await self.open_dataset():
            return
        quota = self.core.quota
        if p.segmentation and p.api_version == 2:
            logger.warning("The ISIC API v2 serves no segmentation masks; use api_version=1 for masks. Going on.")
        self.listed: set[str] = set()
        try:
            await self.check_collections()
            records = aiter(self.records())
            if self.core.workers is not None:
                async for item in shared_items(self, records):
                    yield item
            # Room first, then the next record: a page is fetched only when an image can go.
            while self.core.workers is None and await quota.wait_for_room():
                try:
                    record = await anext(records)
                except StopAsyncIteration:
                    break
                item = self.make_item(record)
                if item is not None:
                    quota.reserve()
                    yield item
        except (SearchRejected, SharedGone) as exc:
            self.core.fail(str(exc))
        except SourceError as exc:  # what was listed is still downloaded; the exit status says 1
            self.core.fail(f"{exc}; the listing ends here", stop=False)
        except Exception as exc:  # a bug: still a clean end, a line in the log and exit 1
            logger.exception("The listing failed")
            self.core.fail(f"the listing failed: {type(exc).__name__}: {exc}", stop=False)
        await self.settle()
        if self.core.workers is not None and self.core.workers.state is not None:
            with contextlib.suppress(SharedGone):
                quota.observe("", (await self.core.workers.state.counts([""]))[""])
                logger.info("The dataset (all workers): %d image(s) of the selection", quota.kept[""])
        kept, wanted = quota.kept[""], quota.target
        if wanted is not None and kept < wanted and self.core.fatal_error is None:
            logger.debug("kept %d of the %d images asked for: the selection has no more good images", kept, wanted)
            self.core.shortfalls.append(f"kept {kept} of the {wanted} images asked for: the selection has no more "
                                        "good images")

    # --- listing ------------------------------------------------------------------------

    async def check_collections(self) -> None:
        for collection in self.params.collections:
            url = isic.v2_collection_url(self.api_url, collection)
            status, _ = await self.fetch_json(url, "collection")
            if status == 404:
                raise SearchRejected(f"collections: collection {collection} does not exist ({url} answered 404)")
            if status != 200:
                raise SearchRejected(f"collections: cannot check collection {collection}: HTTP {status} from {url}")

    async def plan_from(self, count: int) -> None:
        """The number of images the run means to keep, and whether their bytes fit on the disk."""
        wanted = self.params.num_images
        self.core.plan = Plan(max(0, min(count - self.params.offset, wanted or count)))
        if self.params.no_images or not self.settings.getbool("DISK_SPACE_CHECK", True):
            return
        _, size = await look_ahead.isic_measure(self, count)
        _, expected = look_ahead.isic_expected(self, count, size)
        if not await asyncio.to_thread(self.check_space, self.params.folder("images"), expected):
            raise SearchRejected(self.core.fatal_error or "not enough disk space")

    async def dry_run(self) -> None:
        await look_ahead.isic_dry_run(self)

    def records(self) -> AsyncIterator[isic.IsicRecord]:
        return self.v2_records() if self.params.api_version == 2 else self.v1_records()

    async def v2_records(self) -> AsyncIterator[isic.IsicRecord]:
        p = self.params
        query = isic.v2_query(p.filter, p.query)
        url: str | None = isic.v2_search_url(self.api_url, query, p.collections)
        seen: set[str] = set()
        to_skip, first = p.offset, True
        idle = IdlePages(self.settings.getint("ISIC_MAX_IDLE_PAGES", 3), "search")
        while url:
            if url in seen:
                raise SourceError(f"the search repeated a page ({url})")
            seen.add(url)
            page = url
            status, data = await self.fetch_json(url, "search page")
            if status == 400:
                message = data.get("message") or data.get("detail") if isinstance(data, dict) else None
                what = f"the search {query!r}" if query else "the listing"
                raise SearchRejected(f"the ISIC API rejected {what}: {message or 'HTTP 400'}")
            if status != 200:
                raise SourceError(f"the search page {url} answered HTTP {status}")
            try:
                results, url, count = isic.v2_page(data, page_url=url)
            except isic.RecordError as exc:
                raise SourceError(f"the search page {url}: {exc}") from None
            if first and count is not None:
                logger.info("%d image(s) match %s", count, query or "(everything)")
                await self.plan_from(count)
            first = False
            if not results and url:
                raise SourceError(f"the search gave an empty page that links to another ({url})")
            if not idle.progress([record_key(raw, "isic_id") for raw in results], page, more=url is not None):
                continue  # every record on it was listed (or skipped by offset) already
            for raw in results:
                if to_skip:
                    to_skip -= 1
                    continue
                try:
                    yield isic.v2_record(raw, page_url=page)
                except isic.RecordError as exc:
                    logger.warning("Skipping a record: %s", exc)

    async def v1_records(self) -> AsyncIterator[isic.IsicRecord]:
        p = self.params
        offset, previous = p.offset, None
        idle = IdlePages(self.settings.getint("ISIC_MAX_IDLE_PAGES", 3), "image list")
        while True:
            url = isic.v1_list_url(self.api_url, offset, p.filter)
            status, data = await self.fetch_json(url, "image list")
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
                        yield isic.v1_record(await self.v1_full(raw), self.api_url)
                    except isic.RecordError as exc:
                        logger.warning("Skipping a v1 record: %s", exc)
            offset += len(data)

    async def v1_full(self, raw: Any) -> Any:
        """The full description of a v1 record, fetched when the server listed only a summary."""
        if not isinstance(raw, dict) or "meta" in raw or not isic.valid_object_id(raw.get("_id")):
            return raw
        url = isic.v1_image_url(self.api_url, raw["_id"])
        status, full = await self.fetch_json(url, "image description")
        if status != 200 or not isinstance(full, dict):
            raise isic.RecordError(f"{url} answered HTTP {status} without a description")
        return full

    # --- items --------------------------------------------------------------------------

    def make_item(self, record: isic.IsicRecord) -> ImageItem | None:
        p = self.params
        if not isic.valid_id(record.isic_id):
            return ImageItem(image_id=record.isic_id[:100], image_urls=[], stems=[], outcome=Outcome.BAD_ID,
                             detail="the id is not ISIC_ and 7 digits")
        if record.isic_id in self.listed:
            self.crawler.stats.inc_value("isic/listed_twice")
            logger.warning("%s is listed twice; the second listing is skipped", record.isic_id)
            return None
        self.listed.add(record.isic_id)
        if self.known_failure("image", record.isic_id):
            return None
        if p.filter and record.label != p.filter:
            self.crawler.stats.inc_value("isic/outside_filter")
            logger.warning("%s is labelled %s, outside filter=%s; skipped", record.isic_id, record.label, p.filter)
            return None
        folder = self.images_dir
        if p.layout == "by_label":
            folder = os.path.join(folder, record.label or "unlabeled")
        urls = [] if p.no_images or not record.image_url else [record.image_url]
        if not urls and not p.no_images:
            return ImageItem(image_id=record.isic_id, image_urls=[], stems=[], outcome=Outcome.NO_URL,
                             detail="the record has no image URL")
        return ImageItem(
            image_id=record.isic_id,
            image_urls=urls,
            stems=[os.path.join(folder, record.isic_id)] * len(urls),
            label=record.label,
            ext=record.ext,
            description=record.raw,
            description_path=os.path.join(self.descs_dir, f"{record.isic_id}.json"),
            source_id=record.source_id,
        )

    # --- follow-ups: licenses and masks -----------------------------------------------------

    def on_recorded(self, item: ImageItem) -> None:
        if item.kind != "image" or item.outcome not in KEPT_OUTCOMES or not item.description:
            return
        if self.params.api_version == 2:
            self.ask_license(item.description.get("copyright_license"))
        elif self.params.segmentation and item.source_id:
            known = self.core.disk.kept_path(self.core.known("mask", item.image_id))
            if known and os.path.isfile(known):
                return
            url = isic.v1_segmentations_url(self.api_url, item.source_id)
            self.crawler.engine.crawl(
                Request(url, callback=self.parse_segmentations, errback=self.segmentations_failed,
                        cb_kwargs={"isic_id": item.image_id}, dont_filter=True)
            )

    def ask_license(self, name: Any) -> None:
        if name not in isic.V2_LICENSES or name in self.licenses_asked:
            return
        self.licenses_asked.add(name)
        if os.path.exists(self.license_path(name)):
            return
        self.crawler.engine.crawl(
            Request(isic.v2_license_url(self.api_url, name), callback=self.save_license,
                    errback=self.license_failed, cb_kwargs={"name": name}, dont_filter=True)
        )

    def license_path(self, name: str) -> str:
        return os.path.join(self.core.disk.root, "licenses", f"{name}.txt")

    async def save_license(self, response: Response, name: str) -> None:
        try:
            await asyncio.to_thread(self.core.disk.write_file, self.license_path(name), response.body)
        except OSError as exc:
            self.core.fail(f"cannot write to {self.license_path(name)}: {exc.strerror or exc}")

    def license_failed(self, failure: Any) -> None:
        logger.warning("Could not fetch a license text: %s", failure.getErrorMessage())

    def parse_segmentations(self, response: Response, isic_id: str) -> Any:
        try:
            candidates = isic.pick_segmentations(response.json(), self.params.seg_level)
        except (ValueError, isic.RecordError) as exc:
            logger.warning("%s: unusable segmentation list: %s", isic_id, exc)
            return
        if not candidates:
            self.crawler.stats.inc_value("isic/no_segmentation")
            logger.info("%s has no segmentation that did not fail", isic_id)
            return
        skills = [c.get("skill") if c.get("skill") in ("novice", "expert") else "unknown" for c in candidates]
        yield ImageItem(
            image_id=isic_id,
            kind="mask",
            image_urls=[isic.v1_mask_url(self.api_url, c["_id"]) for c in candidates],
            stems=[os.path.join(self.seg_dir, f"{isic_id}_{skill}") for skill in skills],
            ext="png",
        )

    def segmentations_failed(self, failure: Any) -> None:
        self.crawler.stats.inc_value("isic/segmentation_list_failed")
        logger.warning("Could not list segmentations: %s", failure.getErrorMessage())


class SearchRejected(SourceError):
    """The server refused the search itself: nothing to download, so the run stops at once."""
