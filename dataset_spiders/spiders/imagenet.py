"""``scrapy crawl imagenet``: exactly ``per_class`` valid, distinct images per WordNet class.

Candidates come from the geturls endpoint or a URL list file and are tried in list order;
each failed or rejected one is replaced by the next, so a class ends with min(N, good URLs).
A class never has more than N + ``DATASET_EXTRA_IN_FLIGHT`` images kept or in flight, and
the commit pipeline's quota makes sure no more than N are ever renamed into place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import signals as our_signals
from ..dataset import FolderError
from ..items import ImageItem
from ..outcomes import DUPLICATE, KEPT_OUTCOMES, SURPLUS
from ..pipelines.placeholders import site_of
from ..pipelines.store import atomic_write
from ..pipelines.validate import Limits
from ..seen import KeptRef
from ..sources import imagenet
from ..sources.isic import url_extension
from .base import DatasetSpider, SourceError
from .imagenet_args import ILSVRC, ImagenetParams
from .imagenet_classes import ClassState, over_target

logger = logging.getLogger(__name__)


class ImagenetSpider(DatasetSpider):
    name = "imagenet"
    Params = ImagenetParams
    params: ImagenetParams
    handler = "dataset_spiders.middlewares.cancel_when_full.CancelWhenFullDownloadHandler"
    custom_settings = {
        "IMAGES_DOWNLOAD_TIMEOUT": 15,  # old photo hosts hang; the next candidate is better than waiting
        "IMAGES_RETRY_TIMES": 1,
        "IMAGES_MIN_WIDTH": 32,
        "IMAGES_MIN_HEIGHT": 32,
        "DOWNLOAD_MAXSIZE": 64 * 1024 * 1024,
        "DATASET_EXTRA_IN_FLIGHT": 2,
        "DEDUPLICATE_IMAGES": True,
        "PLACEHOLDER_LEARN_THRESHOLD": 3,
        "DOWNLOAD_HANDLERS": {"http": handler, "https": handler},
    }

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> ImagenetSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.api_url = spider.params.api_url or crawler.settings.get("IMAGENET_API_URL")
        spider.domains = crawler.settings.getlist("FLICKR_DOMAINS") if spider.params.flickr_only else None
        spider.images_dir = spider.params.folder()
        spider.outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        spider.candidate_of = {}
        spider.requeued: set[str] = set()
        crawler.signals.connect(spider.on_recorded, signal=our_signals.image_recorded)
        return spider

    target_per = "class"

    def target(self) -> int | None:
        return self.params.per_class

    def named_folders(self) -> list[str]:
        return [self.params.folder()]

    def folder_names(self) -> dict[str, str]:
        return {"images_dir": self.params.folder()}

    def sources(self) -> dict[str, str | None]:
        urls_file = self.params.urls_file
        if urls_file and urls_file != "-":
            return {"urls_file": os.path.abspath(urls_file)}
        return super().sources()

    # --- the crawl ----------------------------------------------------------------------------

    async def items(self) -> AsyncIterator[Any]:
        if not await self.prepare_dataset([self.images_dir]):
            return
        try:
            classes = await asyncio.to_thread(self.load_classes)
            await asyncio.to_thread(self.write_classes_txt, classes)
            from_file = await asyncio.to_thread(self.read_urls_file, classes) if self.params.urls_file else None
        except (ValueError, FolderError, OSError, EOFError, zlib.error) as exc:
            plain = isinstance(exc, (ValueError, FolderError))
            self.fail(str(exc) if plain else f"cannot read the class list or URL file: {exc}")
            return
        for state in classes:
            self.adopt_unlisted(state)
            for _ in state.present:
                self.quota.add_existing(state.wnid)
        self.urls_used: dict[str, str] = {}  # URL -> the class that listed it first
        self.candidate_of: dict[str, tuple[ClassState, imagenet.Candidate]] = {}  # in flight
        waiting: deque[ClassState] = deque(classes)
        while waiting and not self.quota.stopped:
            async for item in self.feed(waiting, from_file):
                yield item
            await self.settle()
            # An image withdrawn late (a placeholder learned after its class was done) leaves
            # room that only a new pass over the classes can fill.
            waiting.extend(c for c in classes if not self.quota.full(c.wnid) and (not c.loaded or not c.exhausted))
        self.summarise(classes)

    async def feed(
        self, waiting: deque[ClassState], from_file: dict[str, list[imagenet.Candidate]] | None
    ) -> AsyncIterator[ImageItem]:
        """Yield candidates, class by class, while each has room, until every class is done."""
        active: list[ClassState] = []
        max_active = self.settings.getint("IMAGENET_ACTIVE_CLASSES")
        while (waiting or active) and not self.quota.stopped:
            starting = [waiting.popleft() for _ in range(min(len(waiting), max_active - len(active)))]
            await asyncio.gather(*(self.load_candidates(s, from_file) for s in starting if not s.loaded))
            active.extend(starting)
            progressed = False
            for state in list(active):
                while not state.exhausted and self.quota.has_room(state.wnid):
                    item = self.next_item(state)
                    if item is not None:
                        self.quota.reserve(state.wnid)
                        progressed = True
                        yield item
                if self.quota.full(state.wnid) or (state.exhausted and not self.quota.pending[state.wnid]):
                    active.remove(state)
            if active and not progressed:
                await self.quota.changed()

    def load_classes(self) -> list[ClassState]:
        """The classes asked for, in order, with their folders and the images already there."""
        p = self.params
        if p.wnids == (ILSVRC,):
            pairs: list[tuple[str, str | None]] = list(imagenet.ilsvrc1000())
        elif p.wnids:
            labels = dict(imagenet.ilsvrc1000())
            pairs = [(w, labels.get(w)) for w in p.wnids]
        elif p.wnids_file == "-":
            pairs = imagenet.parse_wnid_lines(sys.stdin, "standard input")
        elif p.wnids_file:
            with open(p.wnids_file, encoding="utf-8", errors="replace") as f:
                pairs = imagenet.parse_wnid_lines(f, p.wnids_file)
        else:
            counts = imagenet.count_url_file(p.urls_file or "", self.domains)
            chosen = imagenet.choose_classes(counts, p.num_classes or 0, p.min_urls or p.per_class, p.seed)
            labels = dict(imagenet.ilsvrc1000())
            pairs = [(w, labels.get(w)) for w in chosen]
        if not pairs:
            raise ValueError("the class list is empty")
        states = []
        for index, (wnid, label) in enumerate(pairs):
            name = wnid
            if p.layout == "name_wnid" and label:
                name = f"{imagenet.safe_label(imagenet.first_lemma(label))}_{wnid}"
            state = ClassState(index, wnid, label, os.path.join(self.images_dir, name))
            self.dataset.refuse_symlinks([state.folder])
            vouched, state.unlisted = self.dataset.take_stock(state.folder, Limits.from_settings(self.settings))
            state.present = set(vouched) | set(state.unlisted)
            state.on_disk = {**vouched, **state.unlisted}
            state.vouched = set(vouched)
            states.append(state)
        return states

    def adopt_unlisted(self, state: ClassState) -> None:
        """Files a crash left without their manifest line: checked like new downloads (not a
        duplicate, not a known placeholder), then recorded as present; the others moved aside."""
        for stem, entry in state.unlisted.items():
            ref = KeptRef(stem, state.wnid, entry.path or "", "")
            if (self.seen and self.seen.by_bytes.get(entry.sha256 or "")) or self.learner.is_sha_learned(entry.sha256):
                self.dataset.quarantine(entry.path or "")
                state.present.discard(stem)
                continue
            if self.seen is not None:
                self.seen.add_known(entry.sha256, entry.pixels, ref)
            self.dataset.writer.write(
                {"id": stem, "kind": "image", "group": state.wnid, "label": state.label, "outcome": "present",
                 "detail": "found without a manifest line", "path": self.dataset.relative(entry.path),
                 "bytes": entry.bytes, "sha256": entry.sha256, "width": entry.width, "height": entry.height,
                 "pixels": entry.pixels}
            )

    def write_classes_txt(self, classes: list[ClassState]) -> None:
        """``classes.txt``: index, wnid and label in the order given, to map ImageFolder's indices back."""
        lines = [f"{c.index}\t{c.wnid}\t{c.label or ''}\n" for c in classes]
        data = "".join(lines).encode("utf-8")
        path = os.path.join(self.images_dir, "classes.txt")
        atomic_write(path, data, self.dataset.staging_for(path))

    def read_urls_file(self, classes: list[ClassState]) -> dict[str, list[imagenet.Candidate]]:
        return imagenet.scan_url_file(self.params.urls_file or "", {c.wnid for c in classes}, self.domains)

    async def load_candidates(self, state: ClassState, from_file: dict[str, list[imagenet.Candidate]] | None) -> None:
        if self.quota.full(state.wnid) and not state.unlisted and len(state.present) <= self.params.per_class:
            return  # not loaded: a withdrawal may still make room, and a later pass loads it
        state.loaded = True
        await self._load_candidates(state, from_file)
        await self.learn_from_unlisted(state)
        await self.trim(state)

    async def trim(self, state: ClassState) -> None:
        """A class folder that held more than ``per_class`` images when the run started (placed
        by hand, an older run with a larger N) is brought back to N: the surplus is moved to
        ``.quarantine`` and recorded, never deleted."""
        surplus = await asyncio.to_thread(over_target, state, self.params.per_class)
        if not surplus:
            return
        moved_to = None
        for stem, entry in surplus:
            aside = await asyncio.to_thread(self.dataset.quarantine, entry.path or "")
            if aside is None:
                continue
            moved_to = os.path.dirname(aside)
            state.present.discard(stem)
            self.quota.revoke(state.wnid)
            if self.seen is not None:
                self.seen.forget(entry.sha256, entry.pixels)
            detail = f"trimmed: the class held more than per_class={self.params.per_class} images; moved to "
            self.dataset.writer.write(
                {"id": stem, "kind": "image", "group": state.wnid, "label": state.label, "outcome": SURPLUS,
                 "detail": detail + (self.dataset.relative(aside) or ""), "bytes": entry.bytes, "sha256": entry.sha256}
            )
            self.dataset.count_outcome(self.crawler.stats, "image", stem, SURPLUS)
            self.crawler.stats.inc_value("images/trimmed")
        logger.warning("%s held %d images, over per_class=%d: moved %d to %s", state.wnid,
                       len(state.present) + len(surplus), self.params.per_class, len(surplus), moved_to)

    async def learn_from_unlisted(self, state: ClassState) -> None:
        """Files a crash left without their manifest line count towards learning placeholders as
        their downloads would have; now that the candidates are known, so are their URLs."""
        urls = {c.image_id: c.url for c in state.candidates}
        for stem, entry in state.unlisted.items():
            url = urls.get(stem)
            if url is None or not entry.sha256:
                continue
            site, ref = site_of(url), KeptRef(stem, state.wnid, entry.path or "", url)
            self.learner.note_kept_ref(site, entry.sha256, ref, entry.pixels)
            withdraw = {r.image_id: (r, px) for r, px in self.learner.observe(site, entry.sha256, url) or []}
            if self.learner.is_placeholder(site, entry.sha256):
                withdraw[stem] = (ref, entry.pixels)
            for r, px in withdraw.values():
                await self.withdraw(r, entry.sha256, px, f"the same image was served for many photo URLs of {site}")
        state.unlisted = {}

    async def _load_candidates(
        self, state: ClassState, from_file: dict[str, list[imagenet.Candidate]] | None
    ) -> None:
        if from_file is not None:
            state.candidates = [c for c in from_file.get(state.wnid, []) if self.usable(c.url)]
            if not state.candidates:
                state.no_urls = "the URL list has no usable URL for it"
            return
        url = geturls_url(self.api_url, state.wnid)
        try:
            response = await self.fetch(url, "URL list")
            if response.status != 200:
                raise SourceError(f"{url} answered HTTP {response.status}")
            candidates = imagenet.parse_geturls(response.body, state.wnid)
        except (SourceError, imagenet.NoUrls) as exc:
            state.no_urls = str(exc)
            logger.warning("%s: no URLs: %s", state.wnid, exc)
            return
        state.candidates = [c for c in candidates if self.usable(c.url)]
        if not state.candidates:
            state.no_urls = f"none of its {len(candidates)} URLs is usable (flickr_only={self.params.flickr_only})"

    def usable(self, url: str) -> bool:
        try:
            if not urlsplit(url).hostname:
                return False
        except ValueError:  # e.g. "http://a[b@host/": not a URL a download can use
            return False
        return self.domains is None or imagenet.host_matches(url, self.domains)

    def next_item(self, state: ClassState) -> ImageItem | None:
        """The item for the next candidate, or None when it needs no download."""
        candidate = state.next_candidate()
        if candidate.image_id in state.present or self.known_failure("image", candidate.image_id):
            return None
        item = ImageItem(
            image_id=candidate.image_id,
            image_urls=[candidate.url],
            stems=[os.path.join(state.folder, candidate.image_id)],
            group=state.wnid,
            label=state.label,
            ext=url_extension(candidate.url),
        )
        self.candidate_of[candidate.image_id] = (state, candidate)
        first = self.urls_used.setdefault(candidate.url, state.wnid)
        if first != state.wnid:
            item.outcome, item.detail = DUPLICATE, f"the same URL is listed in {first}, which came first"
        return item

    # --- the end ------------------------------------------------------------------------------

    def on_recorded(self, item: ImageItem) -> None:
        if item.kind == "image" and item.group:
            self.outcomes[item.group][item.outcome or "?"] += 1
            found = self.candidate_of.pop(item.image_id, None)
            if found and item.outcome == SURPLUS and item.image_id not in self.requeued:
                self.requeued.add(item.image_id)  # once: not needed now, wanted if a withdrawal makes room
                found[0].spare.append(found[1])

    def summarise(self, classes: list[ClassState]) -> None:
        wanted = self.params.per_class
        short = []
        for state in classes:
            kept = self.quota.kept[state.wnid]
            name = f"{state.wnid} ({state.label.split(',')[0]})" if state.label else state.wnid
            if kept >= wanted:
                logger.info("%s: %d/%d", name, kept, wanted)
                continue
            failures = {k: v for k, v in self.outcomes[state.wnid].items() if k not in KEPT_OUTCOMES}
            why = state.no_urls or (
                f"out of candidates after {len(state.candidates)} URLs; "
                + (", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "no failures")
            )
            logger.warning("%s: only %d/%d images: %s", name, kept, wanted, why)
            short.append(state.wnid)
        full = len(classes) - len(short)
        logger.info("%d of %d classes have %d images", full, len(classes), wanted)
        if short and self.params.strict:
            self.fail(f"strict: {len(short)} class(es) have fewer than {wanted} images: {', '.join(short[:10])}",
                      stop=False)


def geturls_url(api_url: str, wnid: str) -> str:
    """``api_url`` with ``wnid`` set in its query (it may already hold other parameters, or ``wnid=``)."""
    parts = urlsplit(api_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wnid"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("wnid", wnid)])))


