"""The dataset core: the state of one crawl's dataset, built once and handed to every stage.

Scrapy builds it as an extension (``DATASET_ROOT`` and friends are set by the spider from its
arguments); pipelines, the download handler, extensions and commands get it with
``DatasetCore.of(crawler)`` in their ``from_crawler``. It owns the folders and their lock
(``disk``), the manifest, the quota, the images already seen and the learned placeholders, and
offers a few operations: reserve and release a slot (``quota``), decide keep or reject, commit,
record an outcome, withdraw a kept image. Spiders only list sources and yield items.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object

from .. import signals as our_signals
from ..outcomes import ImageRejected, Outcome, is_permanent
from . import previous_runs as earlier
from . import provenance
from .cleanup import CACHE_DIR, MadeByThisRun
from .decisions import FENCED, LocalMode, SharedGone
from .disk import DatasetDisk, FolderError
from .durability import GroupCommit
from .files import check_writable, unlink_quietly, write_staged
from .formats import in_place
from .hosts import HostHealth
from .identity import KeptRef, PlaceholderLearner, SeenImages, site_of
from .lock import DatasetBusy, DatasetLock
from .manifest import Key, ManifestIndex, ManifestWriter, Record
from .near_copies import MAX_DISTANCE, NearCopies, missing_library
from .old_copies import remove_old_copy
from .provenance import Provenance
from .quota import Plan, Quota
from .selection import set_aside_everything

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from ..items import ImageItem
    from ..scaleout.decisions import WorkerMode

logger = logging.getLogger(__name__)


class DatasetCore:
    """One crawl's dataset; see the module docstring."""

    def __init__(self, crawler: Any):
        s = crawler.settings
        self.crawler = crawler
        self.stats = crawler.stats
        self.folder_names: dict[str, str] = dict(s.getdict("DATASET_FOLDERS"))
        self.disk = DatasetDisk(s["DATASET_ROOT"], list(self.folder_names.values()))
        target = s.get("DATASET_TARGET")
        self.quota = Quota(None if target in (None, "") else int(target), s.getint("DATASET_MAX_IN_FLIGHT"),
                           s.getint("DATASET_EXTRA_IN_FLIGHT"))
        self.plan = Plan(None if target in (None, "") else int(target))  # the spiders say more once they know
        self.shortfalls: list[str] = []  # why a class (or the selection) ended short, for the summary
        self.notes: list[str] = []  # what else the summary should say (classes left as they are, ...)
        self.seen = SeenImages() if s.getbool("DEDUPLICATE_IMAGES") else None
        self.near = NearCopies(s.getint("NEAR_DUPLICATE_DISTANCE")) if s.getbool("NEAR_DUPLICATES") else None
        self.learner = PlaceholderLearner(s.getint("PLACEHOLDER_LEARN_THRESHOLD"),
                                          s.getint("PLACEHOLDER_LEARN_IN_CLASS"))
        self.hosts = HostHealth.from_settings(s)  # which image hosts answer (advisory: never what is kept)
        redis_url = s.get("REDIS_URL") or None
        self.workers: WorkerMode | None = None
        if redis_url:  # the decisions made in Redis, for many workers: loaded only then (no Redis client otherwise)
            self.workers = load_object(s.get("DATASET_WORKER_MODE"))(self, redis_url, s)
        self.mode: LocalMode | WorkerMode = self.workers or LocalMode(self)  # the decisions, behind one seam
        self.index = ManifestIndex(self.disk.manifest_path)
        self.writer = ManifestWriter(self.disk.manifest_path, shared=self.mode.shared)
        self.journal = ManifestWriter(self.disk.journal_path)
        self.commits = GroupCommit(self.writer, self.journal, self.disk.staging_for,
                                   s.getint("DATASET_COMMIT_BATCH"), s.getfloat("DATASET_COMMIT_DELAY"))
        self.lock = DatasetLock(self.disk.root, self.disk.folders[1:], shared=self.mode.shared)
        self.provenance: Provenance | None = None
        self.fatal_error: str | None = None
        self.close_reason: str | None = None
        self.latest: dict[Key, str] = {}  # each image's latest outcome in this run (for the stats)
        self.untouched = False  # the run failed before its first image and removed what it had made
        own = s.getlist("DATASET_OWN_FOLDERS")
        self.made = MadeByThisRun(self.disk.root, [*self.disk.folders, self.disk.staging_dir, *own])
        self.reselect: str | None = None  # set aside every image the folder holds first, for this reason
        self.dry_run = s.getbool("DATASET_DRY_RUN")  # says what it would fetch: no lock, no folder, no file
        self.claim_error = None if self.dry_run else self._near_problem() or self.claim(own)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self._engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Any) -> DatasetCore:
        if not crawler.settings.get("DATASET_ROOT"):
            raise NotConfigured("not a dataset spider")
        return cls(crawler)

    @staticmethod
    def of(crawler: Crawler) -> DatasetCore:
        core = crawler.get_extension(DatasetCore)
        if core is None:
            raise NotConfigured("the dataset core is not enabled (EXTENSIONS)")
        return core

    # --- the run ------------------------------------------------------------------------------

    def _near_problem(self) -> str | None:
        if self.near is None:
            return None
        if not 0 <= self.near.distance <= MAX_DISTANCE:
            return f"NEAR_DUPLICATE_DISTANCE must be 0 to {MAX_DISTANCE} bits, not {self.near.distance}"
        return missing_library()

    def claim(self, own_folders: list[str]) -> str | None:
        """Take the dataset for this run, before any pipeline opens: lock its folders, refuse
        symlinks where we make folders, delete what a stopped run left in staging. Returns why it
        cannot be taken (one line), having touched nothing of another run's."""
        try:
            self.disk.refuse_special_files()  # before the lock: its note must not be a FIFO
            self.lock.acquire()
            self.disk.plan_staging()
            cache = os.path.join(self.disk.root, CACHE_DIR)
            self.disk.refuse_symlinks([self.disk.staging_dir, self.disk.quarantine_dir, cache, *own_folders])
            removed = self.mode.enter()
        except (DatasetBusy, FolderError) as exc:
            self.lock.release()
            return str(exc)
        except OSError as exc:
            self.lock.release()
            return f"cannot write to {exc.filename or self.disk.root}: {exc.strerror or exc}"
        if removed:
            logger.info("Removed %d unfinished file(s) a stopped run left in staging", removed)
        return None

    async def open(self, run: dict[str, Any]) -> bool:
        """Check that every folder can be written, record the run, read what earlier runs left."""
        run = {**run, **self.mode.run_fields()}
        self.provenance = Provenance(self.disk.root, self.disk.staging_dir, run, self.disk.quarantine)
        try:
            await asyncio.to_thread(check_writable, self.disk.folders, self.disk.all_stagings())
            if self.reselect:
                await asyncio.to_thread(self._set_aside_everything, self.reselect)
            await asyncio.to_thread(self.provenance.start)
            found = await asyncio.to_thread(earlier.load, self.disk, self.learner, self.seen, self.near,
                                            not self.mode.shared)  # a file shared by workers is not repaired
        except OSError as exc:
            self.fail(f"cannot write to {exc.filename or self.disk.root}: {exc.strerror or exc}")
            return False
        self.index = found.index
        if found.ignored:
            self.stats.set_value("manifest/ignored_lines", found.ignored)
        if len(self.index):
            logger.info("The manifest lists %d image(s) from earlier runs", len(self.index))
        for ref, sha256, pixels in found.withdraw.values():
            await self.withdraw(ref, sha256, pixels, f"served for too many photo URLs of {site_of(ref.url)}")
        self._flush_every(self.crawler.settings.getfloat("DATASET_FLUSH_INTERVAL"))
        return True

    def _set_aside_everything(self, why: str) -> None:
        """``reselect``: the folder's images (of another selection) leave it before this run reads
        the manifest, so none counts, vouches or deduplicates for the new one. Blocking."""
        runs, _ = provenance.read_resolved(self.disk.root, self.disk.folders[1:])
        descs = [f for run in runs for name, f in run["folders"].items() if name == "descs_dir"]
        descs += [f for name, f in self.folder_names.items() if name == "descs_dir"]
        count = set_aside_everything(self.disk, self.writer, list(dict.fromkeys(descs)), why)
        self.stats.set_value("dataset/set_aside", count)
        logger.info("reselect: %d image(s) of the folder's earlier selection set aside to %s", count,
                    self.disk.quarantine_dir)

    async def join(self, extra: Callable[[], dict[str, set[str]]] | None = None,
                   terms: dict[str, Any] | None = None) -> bool:
        """Join the other workers, if any (see ``scaleout/decisions.py``), on the run's ``terms``;
        False if that failed."""
        try:
            await self.mode.join(extra, terms)
        except SharedGone as exc:
            self.fail(str(exc))
            return False
        return True

    def _flush_every(self, seconds: float) -> None:
        """Lines of images that were not kept reach the file at least this often (a kept image's
        line goes with its commit batch); a crash loses at most these, and they are tried again."""
        def flush() -> None:
            if self.lock.held:
                try:
                    self.writer.flush()
                except OSError as exc:
                    self.fail(f"cannot write to {self.disk.manifest_path}: {exc.strerror or exc}")
                    return
                asyncio.get_running_loop().call_later(seconds, flush)

        asyncio.get_running_loop().call_later(seconds, flush)

    def fail(self, message: str, *, stop: bool = True) -> None:
        """Mark the run failed (the exit status will say so); with ``stop``, no more images go
        in flight. (Closing the engine while items are in the pipelines would hang Scrapy 2.19.)"""
        if self.fatal_error is None:
            self.fatal_error = message
            logger.debug("The run failed: %s", message)  # said once, as the last line (`error: …`)
            self.stats.set_value("dataset/fatal_error", message)
        if stop:
            self.quota.stop()

    def refuse(self, message: str) -> None:
        """The run may not touch this dataset (another spider's or selection's): fail with one
        line and let go of it at once, having changed nothing (no report, no record, no folder)."""
        self.fail(message)
        if self.lock.held and not self.mode.shared:
            self.made.remove_new_empty_folders()
        self.lock.release()

    def results(self) -> dict[str, Any]:
        """What came of the run, for dataset.json: outcomes of its images, the dataset's count per
        class (or of the selection, under ""), what was planned, why anything ended short."""
        stats = self.stats.get_stats()
        return {"outcomes": {k[8:]: v for k, v in sorted(stats.items()) if k.startswith("outcome/") and v},
                "in_dataset": dict(sorted(self.quota.kept.items())), "planned": self.plan.images,
                "shortfalls": self.shortfalls}

    def exit_status(self) -> tuple[int, str | None]:
        """1 and the one-line reason when the run did not do its job, else 0 and None."""
        fatal = self.fatal_error
        if not fatal and self.close_reason == "start_error":
            fatal = "the crawl failed (see the log above)"
        if not fatal and self.close_reason == "shutdown":
            fatal = "interrupted; run the same command again to finish (nothing already kept is fetched again)"
        return (1, fatal) if fatal else (0, None)

    async def _spider_closed(self, spider: Any, reason: str) -> None:
        self.close_reason = reason
        await self.mode.leave()

    def _engine_stopped(self) -> None:
        """The last thing a run does: its lines are written, its end recorded, its lock given back."""
        try:
            self.writer.sync()
            self.writer.close()
            self.journal.close()
            if self.lock.held and self.close_reason == "finished":
                unlink_quietly(self.disk.journal_path)  # every intent now has its durable line
        except OSError as exc:
            self.fail(f"cannot write to {self.disk.manifest_path}: {exc.strerror or exc}")
        self.index.close()
        if self.provenance is not None and self.lock.held:
            try:
                self.provenance.end(*self.exit_status(), self.results())
            except OSError as exc:
                logger.error("cannot record the end of the run in dataset.json: %s", exc.strerror or exc)
        self.mode.leave_folder(finished=self.close_reason == "finished")
        failed_alone = not self.mode.shared and self.lock.held and self.exit_status()[0]
        if failed_alone and self.made.remove_if_unused(self.disk.manifest_path):
            self.untouched = True  # failed before its first image: nothing of it is left
        if self.lock.held:
            self.crawler.signals.send_catch_log(our_signals.dataset_finished, core=self)
        self.lock.release()

    # --- images -------------------------------------------------------------------------------

    def known(self, kind: str, image_id: str) -> Record | None:
        """The last manifest line of an image from earlier runs (read from the file). Blocking-light."""
        return self.index.get(Key(kind, image_id))

    def known_failure(self, kind: str, image_id: str, retry_failed: bool) -> bool:
        """Whether an earlier run recorded a failure that trying again would not mend (a 404,
        not an image, a placeholder): such an image is not asked for again."""
        if retry_failed or Key(kind, image_id) not in self.index:
            return False
        record = self.known(kind, image_id)
        if record is None or not is_permanent(record.outcome):
            return False
        self.stats.inc_value("dataset/skipped_known_failure")
        return True

    async def decide(self, item: ImageItem) -> tuple[str, str] | None:
        """Refuse a checked image (outcome, detail), or admit it: THE keep-or-reject decision,
        made by the mode (in memory, or one atomic step in Redis for many workers)."""
        try:
            return await self.mode.admit(item)
        except SharedGone as exc:
            self.fail(str(exc))
            return Outcome.ERROR, str(exc)

    async def keep(self, item: ImageItem, data: bytes, final: str) -> str:
        """THE keep step, for images and masks alike: the decision, then the staged write and the
        durable rename to ``final``; a write that fails takes the decision back. Returns the
        outcome (kept; present when another worker kept this very image), or raises
        ImageRejected with why not."""
        item.result.path = final  # the decision remembers where it goes
        refused = await self.decide(item)
        if refused and refused[0] == Outcome.PRESENT:  # another worker kept this very image
            if in_place(final) is None:  # not yet (or not at all): never say present of a file not seen
                item.result.path = None
                raise ImageRejected(Outcome.SURPLUS, "another worker holds this image; its file is not in place yet")
            item.result.detail = refused[1]
            return Outcome.PRESENT
        if refused:
            item.result.path = None
            raise ImageRejected(*refused)
        try:
            item.result.staged = await asyncio.to_thread(write_staged, self.disk.staging_for(final), data)
            await self.commit(item, final)
        except Exception as exc:  # a full disk or a read-only folder: nothing more can be kept
            unlink_quietly(item.result.staged)
            await self.undecide(item)
            item.result.path = None
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if self.writer.fenced:  # its staging folder was taken away: it learned so in undecide
                self.fail(FENCED)
            elif isinstance(exc, OSError):
                self.fail(f"cannot write to {self.disk.relative(final)}: {why}")
            raise ImageRejected(Outcome.ERROR, f"cannot write {final}: {why}") from None
        finally:
            item.result.staged = None
        return Outcome.KEPT

    async def undecide(self, item: ImageItem) -> None:
        """Take back an admitted image whose file could not be written."""
        with contextlib.suppress(SharedGone):  # the run stops anyway; a rebuild recounts
            await self.mode.give_back(item, admitted=item.kind == "image")

    async def commit(self, item: ImageItem, final: str) -> None:
        """Rename the staged file of an admitted image to ``final``, durably (see durability.py)."""
        self.disk.make_folder(os.path.dirname(final))
        intent = item.to_record(self.disk.relative(final), Outcome.COMMITTING)
        await self.commits.commit(item.result.staged or "", final, intent)
        if item.kind == "image":
            self.mode.committed()

    async def count_present(self, item: ImageItem) -> None:
        """An image of the selection already in place (or, without images, described) counts."""
        self.quota.add_existing(item.group)
        try:
            await self.mode.count_present(item)
        except SharedGone as exc:
            self.fail(str(exc))

    def record(self, item: ImageItem) -> None:
        """An image's outcome: its manifest line, its stats, what the learner notes, its slot back."""
        if not self.mode.reconcile(item):
            self.mode.settle(item)  # fetched twice after Redis lost its state, and not needed: no line
            return
        if item.kind == "image" and item.result.outcome in (Outcome.KEPT, Outcome.PRESENT) and item.result.path:
            remove_old_copy(self, item)
        self.writer.write(item.to_record(self.disk.relative(item.result.path), item.result.outcome or Outcome.ERROR))
        self.count(item.key, item.result.outcome or Outcome.ERROR)
        self.mode.settle(item)  # with workers, the slot is free once the shared state has it

    def recorded(self, image_id: str) -> bool:
        """Whether this run recorded an outcome for this image already."""
        return Key("image", image_id) in self.latest

    def count(self, key: Key, outcome: str) -> None:
        """Count an image under its latest outcome of this run (surplus then kept, or kept then
        withdrawn, counts once): the stats equal the manifest's last lines."""
        prefix = "outcome" if key.kind == "image" else f"outcome_{key.kind}"
        if key in self.latest:
            self.stats.inc_value(f"{prefix}/{self.latest[key]}", -1)
        self.latest[key] = outcome
        self.stats.inc_value(f"{prefix}/{outcome}")

    async def withdraw(self, ref: KeptRef, sha256: str | None, pixels: str | None, why: str) -> None:
        """Take a kept copy of a learned placeholder out: remove the file, record it, forget its
        bytes, and give its class the slot back (so the class is topped up)."""
        await asyncio.to_thread(self.disk.remove, ref.path)
        self.writer.write(Record(ref.image_id, Outcome.PLACEHOLDER, group=ref.group or None, url=ref.url,
                                 detail=f"withdrawn: {why}", sha256=sha256, learned=True))
        self.count(Key("image", ref.image_id), Outcome.PLACEHOLDER)
        self.stats.inc_value("images/withdrawn")
        try:
            await self.mode.revoke(ref.group, ref.image_id, sha256, pixels, ref.url)
        except SharedGone as exc:
            self.fail(str(exc))
