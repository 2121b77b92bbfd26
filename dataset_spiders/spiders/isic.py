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
from ..dataset.decisions import SharedGone
from ..dataset.isic_files import read_description, recorded_split
from ..dataset.quota import Plan
from ..items import ImageItem, ImageResult
from ..outcomes import KEPT_OUTCOMES, Outcome
from ..sources import isic, splits
from . import isic_access, isic_labels, isic_masks, isic_v1
from . import preflight as look_ahead
from .base import DatasetSpider, SearchRejected, SourceError
from .idle_pages import IdlePages, record_key
from .isic_args import IsicParams
from .isic_workers import shared_items

logger = logging.getLogger(__name__)


class IsicSpider(DatasetSpider):
    name = "isic"
    Params = IsicParams
    params: IsicParams
    masks: isic_masks.IsicMasks | None = None  # v2 masks from the challenge archives (segmentation=true)
    # set in from_crawler:
    api_url: str
    images_dir: str
    descs_dir: str
    seg_dir: str
    licenses_asked: set[str]
    token: str | None
    ledger: splits.Ledger | None  # with splits: each group's split, from the dataset on disk, then as met
    # set while listing:
    labels: isic_labels.LabelFeed | None = None  # per_label: each label's search, fed in turn
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
        spider.licenses_asked = set()
        spider.token = isic_access.resolve_token(p.token, crawler.settings)
        spider.ledger = None
        if p.per_label:
            spider.target_per = "label"
        crawler.signals.connect(spider.on_recorded, signal=our_signals.image_recorded)
        return spider

    def target(self) -> int | None:
        return self.params.per_label or self.params.num_images

    def api_headers(self, url: str) -> dict[str, str]:
        return isic_access.headers_for(url, self.api_url, self.token)

    def folder_names(self) -> dict[str, str]:
        p = self.params
        names = {"descs_dir": p.folder("descs")}
        if not p.no_images:
            names["images_dir"] = p.folder("images")
        if p.segmentation:
            names["seg_dir"] = p.folder("seg")
        return names

    def own_folders(self) -> list[str]:
        p, images = self.params, self.params.folder("images")
        labels = (*isic.LABELS, "unlabeled") if p.layout in ("by_label", "by_split") else ()
        splits = [os.path.join(images, name) for name, _ in p.splits] if p.layout == "by_split" else []
        masks = [os.path.join(os.path.abspath(p.out_dir), ".cache", "isic-masks")] if p.segmentation else []
        return [os.path.join(os.path.abspath(p.out_dir), "licenses"), *splits, *masks, *self.default_folders(),
                *(os.path.join(parent, label) for parent in splits or [images] for label in labels)]

    async def items(self) -> AsyncIterator[Any]:
        p = self.params
        problem = await asyncio.to_thread(isic_access.size_problem, self)
        if problem is None and p.per_label and (p.api_version != 2 or self.core.mode.shared):
            problem = "per_label: only with the v2 API, and not with REDIS_URL (workers share one count)"
        if problem:
            self.core.fail(problem)
            return
        if not await self.open_dataset():
            return
        if p.splits:
            self.ledger = await asyncio.to_thread(self.read_ledger)
        quota = self.core.quota
        self.listed: set[str] = set()
        try:
            await self.check_collections()
            if p.segmentation and p.api_version == 2:  # masks from the challenge archives (isic_masks.py)
                self.masks = isic_masks.IsicMasks(self)
                await self.masks.open()
            if p.per_label:
                self.labels = isic_labels.LabelFeed(self)
                self.core.plan = Plan(p.per_label * len(self.labels.states), len(self.labels.states))
                feed = self.labels.items()
            elif self.core.mode.shared:
                feed = shared_items(self, aiter(self.records()))
            else:
                feed = self.selection_items(aiter(self.records()))
            async for item in feed:
                yield item
        except (SearchRejected, SharedGone) as exc:
            self.core.fail(str(exc))
        except SourceError as exc:  # what was listed is still downloaded; the exit status says 1
            self.core.fail(f"{exc}; the listing ends here", stop=False)
        except Exception as exc:  # a bug: still a clean end, a line in the log and exit 1
            logger.exception("The listing failed")
            self.core.fail(f"the listing failed: {type(exc).__name__}: {exc}", stop=False)
        await self.settle()
        with contextlib.suppress(SharedGone):
            shared = await self.core.mode.counts([""])
            if shared is not None:  # other workers kept images too: the count is theirs and ours
                quota.observe("", shared[""])
                logger.info("The dataset (all workers): %d image(s) of the selection", quota.kept[""])
        if p.per_label:
            if self.labels is not None and self.core.fatal_error is None:
                self.labels.summarise()
            return
        kept, wanted = quota.kept[""], quota.target
        if wanted is not None and kept < wanted and self.core.fatal_error is None:
            logger.debug("kept %d of the %d images asked for: the selection has no more good images", kept, wanted)
            self.core.shortfalls.append(f"kept {kept} of the {wanted} images asked for: the selection has no more "
                                        "good images")

    async def selection_items(self, records: AsyncIterator[isic.IsicRecord]) -> AsyncIterator[ImageItem]:
        """Room first, then the next record: a page is fetched only when an image can go."""
        quota = self.core.quota
        while await quota.wait_for_room():
            try:
                record = await anext(records)
            except StopAsyncIteration:
                break
            item = self.make_item(record)
            if item is not None:
                quota.reserve()
                yield item

    def read_ledger(self) -> splits.Ledger:
        """The splits of the groups the dataset holds (its kept images, their groups from their
        descriptions), which never move; new groups are stratified, except with workers, who
        give them the plain rule (see ``sources/splits.py``). Blocking."""
        p = self.params
        ledger = splits.Ledger(splits.Scheme(p.splits, p.seed), stratify=not self.core.mode.shared)
        for record in self.core.index.records():
            if record.kind == "image" and record.kept:
                described = read_description(self.descs_dir, record.id)
                clinical = described.clinical if described else None
                ledger.known(splits.group_key(record.id, clinical), recorded_split(record, clinical, ledger.scheme),
                             record.label)
        return ledger

    # --- listing ------------------------------------------------------------------------

    async def check_collections(self) -> None:
        for collection in self.params.collections:
            url = isic.v2_collection_url(self.api_url, collection)
            status, _ = await self.fetch_json(url, "collection")
            if status == 404:
                raise SearchRejected(f"collections: collection {collection} does not exist ({url} answered 404)")
            if status != 200:
                raise SearchRejected(f"collections: cannot check collection {collection}: HTTP {status} from {url}")

    async def plan_from(self, count: int, label: str | None = None, first_page: Any = None) -> None:
        """The number of images the run means to keep, and whether their bytes fit on the disk
        (per_label: each label's search adds its share to what is expected); ``first_page``: the
        search's first results, whose own sizes check what the API says of the selection's."""
        wanted = self.params.num_images
        if not self.params.per_label:
            self.core.plan = Plan(max(0, min(count - self.params.offset, wanted or count)))
        if self.params.no_images or not self.settings.getbool("DISK_SPACE_CHECK", True):
            return
        _, size = await look_ahead.isic_measure(self, count, label, first_page)
        _, expected = look_ahead.isic_expected(self, count, size)
        if expected is not None:
            self.expected_bytes = expected = getattr(self, "expected_bytes", 0) + expected
        if not await asyncio.to_thread(self.check_space, self.params.folder("images"), expected):
            raise SearchRejected(self.core.fatal_error or "not enough disk space")

    async def dry_run(self) -> None:
        await look_ahead.isic_dry_run(self)

    def records(self) -> AsyncIterator[isic.IsicRecord]:
        if self.masks is not None and self.params.masks_required:
            return self.masks.records()  # only ids the mask archives cover, searched in batches
        return self.v2_records() if self.params.api_version == 2 else isic_v1.v1_records(self)

    async def v2_records(self, label_filter: str | None = None) -> AsyncIterator[isic.IsicRecord]:
        p = self.params
        query = isic.v2_query(label_filter or p.filter, p.query)
        to_skip, first = p.offset, True
        async for page, results, count in self.search_pages(query, set()):
            if first and count is not None:
                where = f" in collection(s) {', '.join(map(str, p.collections))}" if p.collections else ""
                logger.info("%d image(s) match %s%s", count, query or "every record", where)
                await self.plan_from(count, label_filter, results)
            first = False
            records, to_skip = isic.page_records(results, page, to_skip)
            for record in records:
                yield record

    async def search_pages(self, query: str | None,
                           seen: set[str]) -> AsyncIterator[tuple[str, list[Any], int | None]]:
        """Each page of one v2 search, in order: its URL, its records (none when it listed nothing
        new) and the count the API gives. A page met before (``seen``), an empty page that links
        on, or ``ISIC_MAX_IDLE_PAGES`` pages in a row with nothing new end it with SourceError."""
        url: str | None = isic.v2_search_url(self.api_url, query, self.params.collections)
        idle = IdlePages(self.settings.getint("ISIC_MAX_IDLE_PAGES", 3), "search")
        while url:
            if url in seen:
                raise SourceError(f"the search repeated a page ({url})")
            seen.add(url)
            page = url
            results, url, count = await self.search_page(url, query)
            if not results and url:
                raise SourceError(f"the search gave an empty page that links to another ({url})")
            fresh = idle.progress([record_key(raw, "isic_id") for raw in results], page, more=url is not None)
            yield page, results if fresh else [], count  # (every record on it was listed, or skipped by offset)

    async def search_page(self, url: str, query: str | None) -> tuple[list[Any], str | None, int | None]:
        """One v2 search page: its records, the next page's URL and the count. A search the API
        refuses (400, or 401/403 for the token) is SearchRejected; any other bad answer, SourceError."""
        status, data = await self.fetch_json(url, "search page")
        if status == 400:
            message = data.get("message") or data.get("detail") if isinstance(data, dict) else None
            what = f"the search {query[:200]!r}" if query else "the listing"
            raise SearchRejected(f"the ISIC API rejected {what}: {message or 'HTTP 400'}"
                                 + isic.retired_fields_hint(query))
        if status in (401, 403):
            raise SearchRejected(isic_access.refused(status, self.token, "the search"))
        if status != 200:
            raise SourceError(f"the search page {url} answered HTTP {status}")
        try:
            return isic.v2_page(data, page_url=url)
        except isic.RecordError as exc:
            raise SourceError(f"the search page {url}: {exc}") from None

    # --- items --------------------------------------------------------------------------

    def make_item(self, record: isic.IsicRecord) -> ImageItem | None:
        p = self.params
        position = getattr(self, "listing_position", p.offset)  # the record's place in the listing (offset included)
        self.listing_position = position + 1
        if not isic.valid_id(record.isic_id):
            return ImageItem(image_id=record.isic_id[:100], image_urls=[], stems=[],
                             result=ImageResult(Outcome.BAD_ID, "the id is not ISIC_ and 7 digits"))
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
        thumbnail = p.image_size == "thumbnail_256"
        url = record.thumbnail_url if thumbnail else record.image_url
        urls = [] if p.no_images or not url else [url]
        if not urls and not p.no_images:
            why = f"the record has no {'thumbnail_256' if thumbnail else 'image'} URL"
            return ImageItem(image_id=record.isic_id, image_urls=[], stems=[], result=ImageResult(Outcome.NO_URL, why))
        split = self.ledger.split_of(record.isic_id, record.clinical, record.label) if self.ledger else None
        folder = self.images_dir
        if p.layout == "by_split" and split:  # {split}/{label}/: no patient or lesion in two splits
            folder = os.path.join(folder, split)
        if p.layout in ("by_label", "by_split"):
            folder = os.path.join(folder, record.label or splits.UNLABELED)
        return ImageItem(
            image_id=record.isic_id,
            image_urls=urls,
            stems=[os.path.join(folder, record.isic_id)] * len(urls),
            label=record.label,
            ext=isic.url_extension(url) if thumbnail and url else record.ext,
            variant=p.image_size if urls else None,
            size_hint=None if thumbnail else record.full_size,
            description=record.raw,
            description_path=os.path.join(self.descs_dir, f"{record.isic_id}.json"),
            source_id=record.source_id,
            position=position,
            split=split,
        )

    # --- follow-ups: licenses and masks -----------------------------------------------------

    def on_recorded(self, item: ImageItem) -> None:
        if self.labels is not None:
            self.labels.note_outcome(item)
        if item.kind != "image" or item.result.outcome not in KEPT_OUTCOMES or not item.description:
            return
        if self.params.api_version == 2:
            self.ask_license(item.description.get("copyright_license"))
            if self.masks is not None:
                self.masks.follow(item)
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
        return isic_v1.parse_segmentations(self, response, isic_id)

    def segmentations_failed(self, failure: Any) -> None:
        self.crawler.stats.inc_value("isic/segmentation_list_failed")
        logger.warning("Could not list segmentations: %s", failure.getErrorMessage())
