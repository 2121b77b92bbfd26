"""What every dataset spider has: validated arguments, the dataset on disk, the quota, and a
way to stop the run with one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import scrapy
from scrapy import Request, signals
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.misc import load_object

from ..dataset import Dataset, FolderError
from ..lock import DatasetBusy, DatasetLock
from ..outcomes import is_permanent
from ..params import parse_args
from ..pipelines.placeholders import site_of
from ..provenance import Provenance
from ..quota import Quota
from ..seen import KeptRef, PlaceholderLearner, SeenImages

logger = logging.getLogger(__name__)


class SourceError(Exception):
    """A source answered something the spider cannot use; the message is one line."""


class DatasetSpider(scrapy.Spider):
    """Base class: ``Params`` is the argument model, checked before anything is requested."""

    Params: ClassVar[type]
    target_per: ClassVar[str] = "selection"  # what the target counts: the selection, or each class

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.params = parse_args(self.Params, kwargs)
        self.fatal_error: str | None = None
        self.close_reason: str | None = None
        self.dataset: Dataset
        self.quota: Quota
        self.seen: SeenImages | None
        self.learner: PlaceholderLearner

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> DatasetSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.dataset = Dataset(spider.out_dir(), spider.named_folders())
        crawler.signals.connect(spider.on_spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(spider.on_engine_stopped, signal=signals.engine_stopped)
        s = crawler.settings
        spider.quota = Quota(spider.target(), s.getint("DATASET_MAX_IN_FLIGHT"), s.getint("DATASET_EXTRA_IN_FLIGHT"))
        spider.seen = SeenImages() if s.getbool("DEDUPLICATE_IMAGES") else None
        spider.learner = PlaceholderLearner(s.getint("PLACEHOLDER_LEARN_THRESHOLD"))
        crawler.settings.set("IMAGES_STORE", spider.dataset.root, priority="spider")
        spider.lock = DatasetLock(spider.dataset.root, spider.dataset.folders[1:])
        spider.provenance = None
        spider.claim_error = spider.claim()
        return spider

    def claim(self) -> str | None:
        """Take the dataset for this run, before any pipeline opens: lock its folders, refuse
        symlinks where we make folders, and delete what a stopped run left in staging. Returns
        why it cannot be taken (one line), having touched nothing of another run's."""
        root = self.dataset.root
        try:
            self.lock.acquire()
            self.dataset.plan_staging()
            self.dataset.refuse_symlinks(self.own_folders())
            removed = self.dataset.clear_staging()
        except (DatasetBusy, FolderError) as exc:
            self.lock.release()
            return str(exc)
        except OSError as exc:
            self.lock.release()
            return f"cannot write to {exc.filename or root}: {exc.strerror or exc}"
        if removed:
            logger.info("Removed %d unfinished file(s) a stopped run left in staging", removed)
        return None

    async def start(self) -> AsyncIterator[Any]:
        """The spider's ``items()``, with any unexpected error turned into one line and exit 1."""
        if self.claim_error:
            self.fail(self.claim_error)
            return
        try:
            async for item in self.items():
                yield item
        except Exception as exc:
            logger.debug("The crawl failed", exc_info=True)
            self.fail(f"the crawl failed: {type(exc).__name__}: {exc}", stop=False)
            await self.settle()

    def items(self) -> AsyncIterator[Any]:
        raise NotImplementedError

    def on_spider_closed(self, spider: Any, reason: str) -> None:
        self.close_reason = reason

    def on_engine_stopped(self) -> None:
        """The last thing a run does: record how it ended in dataset.json, then unlock."""
        if self.provenance is not None:
            try:
                self.provenance.end(*self.exit_status())
            except OSError as exc:
                logger.error("cannot record the end of the run in dataset.json: %s", exc.strerror or exc)
        self.lock.release()

    def exit_status(self) -> tuple[int, str | None]:
        """1 and the one-line reason when the run did not do its job, else 0 and None."""
        fatal = self.fatal_error
        if not fatal and self.close_reason == "start_error":
            fatal = "the crawl failed (see the log above)"
        if not fatal and self.close_reason == "shutdown":
            fatal = "interrupted; run the same command again to finish (nothing already kept is fetched again)"
        return (1, fatal) if fatal else (0, None)

    def out_dir(self) -> str:
        return self.params.out_dir  # type: ignore[attr-defined, no-any-return]

    def named_folders(self) -> list[str]:
        """The output folders the user may name (and may put outside ``out_dir``)."""
        return []

    def own_folders(self) -> list[str]:
        """Folders the spider makes itself: a symlink there is refused."""
        return [self.dataset.staging_dir, self.dataset.quarantine_dir]

    def provenance_record(self) -> dict[str, Any]:
        """This run's selection, target, sources and folders, for dataset.json."""
        target = self.target()
        return {
            "spider": self.name,
            **({"command": command} if (command := self.settings.getlist("DATASET_COMMAND_LINE")) else {}),
            "sources": self.sources(),
            "arguments": dataclasses.asdict(self.params),
            "settings": {k: v for k, v in self.settings.copy_to_dict().items()
                         if self.settings.getpriority(k) == SETTINGS_PRIORITIES["cmdline"]},
            "target": {"images": target, "per": self.target_per} if target is not None else None,
            "folders": {"out_dir": self.dataset.root, **self.folder_names()},
        }

    def folder_names(self) -> dict[str, str]:
        return {}

    def sources(self) -> dict[str, str | None]:
        """Where this run's images are listed, for dataset.json."""
        return {"api_url": getattr(self, "api_url", None)}

    def target(self) -> int | None:
        """How many images to keep per group (None: all there are)."""
        return None

    def fail(self, message: str, *, stop: bool = True) -> None:
        """Mark the run failed (the exit status will say so); with ``stop``, list no more images.

        The images in flight finish and are recorded; ``start()`` then ends and Scrapy closes.
        (Closing the engine while items from ``start()`` are in the pipelines would hang.)
        """
        if self.fatal_error is None:
            self.fatal_error = message
            logger.error(message)
            self.crawler.stats.set_value("dataset/fatal_error", message)
        if stop:
            self.quota.stop()

    def known_failure(self, kind: str, image_id: str) -> bool:
        """Whether an earlier run recorded a failure that trying again would not mend (a 404,
        not an image, a placeholder): such an image is not asked for again. Timeouts, 5xx
        and dropped connections are."""
        entry = self.dataset.entry(kind, image_id)
        if entry is None or not is_permanent(entry.outcome) or getattr(self.params, "retry_failed", False):
            return False
        self.crawler.stats.inc_value("dataset/skipped_known_failure")
        return True

    async def settle(self) -> None:
        """Wait for every image in flight to finish its pipelines.

        Scrapy notices that a spider whose ``start()`` has ended is idle only at its next
        5-second heartbeat; ending ``start()`` once the last item is through lets it close
        at once.
        """
        await self.quota.wait_until_settled()
        slot = self.crawler.engine.scraper.slot
        for _ in range(500):
            if slot is None or slot.is_idle():
                return
            await asyncio.sleep(0.01)

    def check_pipelines(self) -> bool:
        """Scrapy disables a pipeline that raises NotConfigured (an ``s3://`` store without
        botocore, say) with a mere warning, and the crawl "succeeds" with no images: stop instead."""
        configured = [load_object(path) for path, order in self.settings.getdict("ITEM_PIPELINES").items()
                      if order is not None]
        enabled = {type(p) for p in self.crawler.engine.scraper.itemproc.middlewares}
        for cls in configured:
            if cls not in enabled:
                self.fail(f"the item pipeline {cls.__name__} is disabled (the warning above says why); stopping")
                return False
        return True

    async def prepare_dataset(self, folders: list[str]) -> bool:
        """Check the pipelines, that every output folder can be written, and read the manifest."""
        if not self.check_pipelines():
            return False
        self.provenance = Provenance(self.dataset.root, self.dataset.staging_dir, self.provenance_record(),
                                     self.dataset.quarantine)
        try:
            await asyncio.to_thread(_check_writable, [self.dataset.root, *folders])
            await asyncio.to_thread(self.provenance.start)
            await asyncio.to_thread(self.dataset.load)
        except OSError as exc:
            where = exc.filename or self.dataset.root
            self.fail(f"cannot write to {where}: {exc.strerror or exc}")
            return False
        if self.dataset.ignored_lines:
            self.crawler.stats.set_value("manifest/ignored_lines", self.dataset.ignored_lines)
        if self.dataset.index:
            logger.info("The manifest lists %d image(s) from earlier runs", len(self.dataset.index))
        await self.remember_earlier_runs()
        return True

    async def remember_earlier_runs(self) -> None:
        """Images kept and placeholders learned by earlier runs count in this one, so a re-run
        after a crash refuses the same duplicates and placeholders an uninterrupted run would.
        Kept images that turn out to be a placeholder (served for too many URLs, counting
        earlier runs) are withdrawn now."""
        # A big manifest takes seconds to go through: off the reactor (nothing else runs yet).
        withdraw = await asyncio.to_thread(self._scan_earlier_runs)
        for ref, sha256 in withdraw.values():
            await self.withdraw(ref, sha256, None, f"served for too many photo URLs of {site_of(ref.url)}")

    async def withdraw(self, ref: KeptRef, sha256: str | None, pixels: str | None, why: str) -> None:
        """Take a kept copy of a learned placeholder out: remove the file, record it, forget its
        bytes, and give its class the slot back (so the class is topped up)."""
        await asyncio.to_thread(self.dataset.remove, ref.path)
        self.dataset.writer.write(
            {"id": ref.image_id, "kind": "image", "group": ref.group or None, "url": ref.url,
             "outcome": "placeholder", "detail": f"withdrawn: {why}", "sha256": sha256}
        )
        self.dataset.count_outcome(self.crawler.stats, "image", ref.image_id, "placeholder")
        self.crawler.stats.inc_value("images/withdrawn")
        if self.seen is not None:
            self.seen.forget(sha256, pixels)
        self.quota.revoke(ref.group)

    def _scan_earlier_runs(self) -> dict[str, tuple[KeptRef, str | None]]:
        """Feed the manifest's entries to the learner and the duplicate index; returns the kept
        images to withdraw."""
        for url, sha256 in self.dataset.learned_placeholders:
            self.learner.add_learned(site_of(url), sha256)
        withdraw: dict[str, tuple[KeptRef, str | None]] = {}
        for key, entry in self.dataset.index.items():
            if ":" in key or not entry.sha256:
                continue
            site = site_of(entry.url)
            ref = None
            path = self.dataset.kept_path("image", key)
            if path:
                ref = KeptRef(key, entry.group or "", path, entry.url or "")
                self.learner.note_kept_ref(site, entry.sha256, ref, entry.pixels)
            # every copy counts as one more URL serving those bytes, kept or not (duplicate, surplus)
            for earlier, _ in self.learner.observe(site, entry.sha256, entry.url or "") or []:
                withdraw[earlier.image_id] = (earlier, entry.sha256)
            if ref is None:
                continue
            if self.learner.is_placeholder(site, entry.sha256):
                withdraw[key] = (ref, entry.sha256)
            elif self.seen is not None:
                self.seen.add_known(entry.sha256, entry.pixels, ref)
        return withdraw

    async def fetch(self, url: str, what: str) -> scrapy.http.Response:
        """GET ``url`` through the downloader middlewares (retries, proxy, Retry-After)."""
        try:
            return await self.crawler.engine.download_async(Request(url, dont_filter=True))
        except Exception as exc:
            raise SourceError(f"cannot fetch the {what} {url}: {type(exc).__name__}: {exc}") from None

    async def fetch_json(self, url: str, what: str) -> tuple[int, Any]:
        """Status and decoded JSON of ``url``; SourceError when the body is not JSON."""
        response = await self.fetch(url, what)
        try:
            return response.status, json.loads(response.body)
        except (ValueError, RecursionError):
            kind = response.headers.get(b"Content-Type", b"?").decode("latin-1")
            raise SourceError(
                f"the {what} {url} answered HTTP {response.status} with {kind}, not JSON"
            ) from None


def _check_writable(folders: list[str]) -> None:
    for folder in dict.fromkeys(os.path.abspath(f) for f in folders):
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{uuid.uuid4().hex[:8]}")
        try:
            with open(probe, "wb") as f:
                f.write(b"ok")
        finally:
            if os.path.exists(probe):
                os.unlink(probe)
