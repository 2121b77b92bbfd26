"""``scrapy crawl imagenet``: exactly ``per_class`` valid, distinct images per WordNet class.

Candidates come from the geturls endpoint or a URL list file and are tried in list order;
each failed or rejected one is replaced by the next, so a class ends with min(N, good URLs).
A class never has more than N + ``DATASET_EXTRA_IN_FLIGHT`` images kept or in flight, and
the core's quota makes sure no more than N are ever renamed into place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import signals as our_signals
from ..dataset import class_folders as stock
from ..dataset.disk import FolderError
from ..dataset.hosts import host_of
from ..dataset.quota import Plan
from ..dataset.validation import Limits
from ..items import ImageItem
from ..outcomes import KEPT_OUTCOMES, HostDown, Outcome
from ..sources import imagenet
from ..sources.isic import url_extension
from . import preflight as look_ahead
from .base import DatasetSpider, SourceError
from .feeding import feed_groups
from .imagenet_args import ImagenetParams
from .imagenet_classes import ClassState, asked_classes
from .imagenet_workers import shared_items

logger = logging.getLogger(__name__)


class ImagenetSpider(DatasetSpider):
    name = "imagenet"
    Params = ImagenetParams
    params: ImagenetParams
    # set in from_crawler:
    api_url: str
    domains: list[str] | None  # flickr_only: the hosts a URL must be on
    images_dir: str
    outcomes: defaultdict[str, Counter[str]]  # class -> outcome -> images
    requeued: set[str]  # surplus images put back once, for a withdrawal to use
    retried: Counter[str]  # image id -> failed connections tried again behind the others
    host_pending: Counter[str]  # host -> our candidates on it in flight
    asking: dict[str, str]  # image id in flight -> its host
    short_probe_after: float
    stall_after: float
    retry_times: int
    # set while crawling:
    from_file: dict[str, list[imagenet.Candidate]] | None = None  # urls_file: each class's candidates, read once
    custom_settings = {
        "IMAGES_DOWNLOAD_TIMEOUT": 60,  # the whole download: slow but living hosts keep their big images
        "IMAGES_FIRST_BYTE_TIMEOUT": 15,  # silent hosts (hung, black-holed) are given up on this soon
        "HOSTS_DOWN_AFTER": 3,  # ImageNet's lists point at tens of thousands of hosts, many gone
        "IMAGES_RETRY_TIMES": 1,
        # Pillow's own warning limit (its MAX_IMAGE_PIXELS): every kept photo opens in a default
        # Pillow without a DecompressionBombWarning; a larger one is too_large
        "IMAGES_MAX_PIXELS": 89_478_485,
        "IMAGES_MIN_WIDTH": 32,
        "IMAGES_MIN_HEIGHT": 32,
        "DOWNLOAD_MAXSIZE": 64 * 1024 * 1024,
        "DATASET_EXTRA_IN_FLIGHT": 2,
        "DEDUPLICATE_IMAGES": True,
        "PLACEHOLDER_LEARN_THRESHOLD": 3,
        "PLACEHOLDER_LEARN_IN_CLASS": 2,  # two photos of one class, byte for byte the same: a stand-in
    }

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> ImagenetSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.api_url = spider.params.api_url or crawler.settings.get("IMAGENET_API_URL")
        spider.domains = crawler.settings.getlist("FLICKR_DOMAINS") if spider.params.flickr_only else None
        spider.images_dir = spider.params.folder()
        spider.outcomes = defaultdict(Counter)
        spider.candidate_of = {}
        spider.requeued = set()
        spider.retried = Counter()
        spider.host_pending = Counter()
        spider.asking = {}
        spider.short_probe_after = crawler.settings.getfloat("HOSTS_SHORT_PROBE_AFTER")
        spider.stall_after = crawler.settings.getfloat("HOSTS_STALL_AFTER")
        retry_times = crawler.settings.get("IMAGES_RETRY_TIMES")
        spider.retry_times = crawler.settings.getint("RETRY_TIMES") if retry_times in (None, "") else int(retry_times)
        crawler.signals.connect(spider.on_recorded, signal=our_signals.image_recorded)
        return spider

    target_per = "class"

    def target(self) -> int | None:
        return self.params.per_class

    def folder_names(self) -> dict[str, str]:
        return {"images_dir": self.params.folder()}

    def sources(self) -> dict[str, str | None]:
        urls_file = self.params.urls_file
        if urls_file and urls_file != "-":
            return {"urls_file": os.path.abspath(urls_file)}
        return super().sources()

    # --- the crawl ----------------------------------------------------------------------------

    async def items(self) -> AsyncIterator[Any]:
        if not await self.open_dataset():
            return
        quota = self.core.quota
        try:
            classes = await asyncio.to_thread(self.load_classes)
            planned = self.params.per_class * len(classes)
            self.core.plan = Plan(planned, len(classes))
            expected = planned * self.settings.getint("IMAGENET_AVERAGE_IMAGE_BYTES")
            if not await asyncio.to_thread(self.check_space, self.images_dir, expected):
                return
            from_file = await asyncio.to_thread(self.read_urls_file, classes) if self.params.urls_file else None
            self.from_file = from_file
            await asyncio.to_thread(self.write_classes_txt, classes)  # once the list was read whole
        except (ValueError, FolderError, OSError, EOFError, zlib.error) as exc:
            plain = isinstance(exc, (ValueError, FolderError))
            self.core.fail(str(exc) if plain else f"cannot read the class list or URL file: {exc}")
            return
        self.may_tidy = await asyncio.to_thread(self.core.mode.works_alone)
        for state in classes:
            if self.may_tidy:  # never while other workers are live: a file may be theirs, its line not yet written
                state.present -= stock.adopt(self.core, state.wnid, state.label, state.unlisted)
            for _ in state.present:
                quota.add_existing(state.wnid)
        self.urls_used: dict[str, str] = {}  # URL -> the class that listed it first
        self.candidate_of: dict[str, tuple[ClassState, imagenet.Candidate]] = {}  # in flight
        if self.core.mode.shared:
            async for item in shared_items(self, classes, from_file):
                yield item
            return
        waiting: deque[ClassState] = deque(classes)
        while waiting and not quota.stopped:
            async for item in self.feed(waiting):
                yield item
            await self.settle()
            # An image withdrawn late (a placeholder learned after its class was done) leaves
            # room that only a new pass over the classes can fill.
            waiting.extend(c for c in classes if not quota.full(c.wnid) and (not c.loaded or not c.exhausted))
        self.summarise(classes)

    async def feed(self, waiting: deque[ClassState]) -> AsyncIterator[ImageItem]:
        """Yield candidates, class by class, while each has room, until every class is done."""
        async for item in feed_groups(self, waiting, self.core.quota, self.settings.getint("IMAGENET_ACTIVE_CLASSES")):
            yield item

    # --- the feed's questions about a class (spiders/feeding.py GroupSource) -------------------

    def group_name(self, group: ClassState) -> str:
        return group.wnid

    def group_exhausted(self, group: ClassState) -> bool:
        return group.exhausted

    async def load_groups(self, groups: list[ClassState]) -> None:
        await asyncio.gather(*(self.load_candidates(s, self.from_file) for s in groups if not s.loaded))

    def begin_round(self, group: ClassState) -> None:
        self.recall_deferred(group)

    async def next_item(self, group: ClassState) -> ImageItem | None:
        """The item for the next candidate, or None when it needs no download."""
        return self.item_for(group, group.next_candidate())

    def revive_group(self, group: ClassState) -> bool:
        return self.revive_skipped(group)

    def load_classes(self) -> list[ClassState]:
        """The classes asked for, in order, with their folders and the images already there."""
        p = self.params
        pairs = asked_classes(self.params, self.domains)
        states = []
        limits = Limits.from_settings(self.settings)
        for index, (wnid, label) in enumerate(pairs):
            name = wnid
            if p.layout == "name_wnid" and label:
                name = f"{imagenet.safe_label(imagenet.first_lemma(label))}_{wnid}"
            state = ClassState(index, wnid, label, os.path.join(self.images_dir, name))
            vouched, state.unlisted = stock.take(self.core, state.folder, limits)
            state.present = set(vouched) | set(state.unlisted)
            state.on_disk = {**vouched, **state.unlisted}
            state.vouched = set(vouched)
            states.append(state)
        return states

    async def dry_run(self) -> None:
        await look_ahead.imagenet_dry_run(self)

    def write_classes_txt(self, classes: list[ClassState]) -> None:
        """``classes.txt`` (index, folder, wnid, label; the index ImageFolder and imagefolder
        assign: sorted folder names) and ``classes_given.txt`` (index, wnid, label in the order
        given). ``classes.txt`` is written again from the folders there when the spider closes."""
        from scrapy import signals

        from ..dataset.loaders import ClassIndex

        folders = [(c.index, c.wnid, c.label, os.path.basename(c.folder)) for c in classes]
        self.class_index = ClassIndex(self.images_dir, folders, self.core.disk.write_file)
        self.class_index.write(start=True)
        self.crawler.signals.connect(self.rewrite_classes_txt, signal=signals.spider_closed)

    async def rewrite_classes_txt(self, spider: Any, reason: str) -> None:
        if not self.core.lock.held:
            return
        try:
            await asyncio.to_thread(self.class_index.write, start=False)
        except OSError as exc:
            self.core.fail(f"cannot write {self.images_dir}/classes.txt: {exc.strerror or exc}", stop=False)

    def read_urls_file(self, classes: list[ClassState]) -> dict[str, list[imagenet.Candidate]]:
        self.listed_in_file: Counter[str] = Counter()
        return imagenet.scan_url_file(self.params.urls_file or "", {c.wnid for c in classes}, self.domains,
                                      self.listed_in_file)

    async def load_candidates(self, state: ClassState, from_file: dict[str, list[imagenet.Candidate]] | None) -> None:
        if self.core.quota.full(state.wnid) and not state.unlisted and len(state.present) <= self.params.per_class:
            return  # not loaded: a withdrawal may still make room, and a later pass loads it
        state.loaded = True
        await self._load_candidates(state, from_file)
        if not self.may_tidy:
            return
        await stock.learn(self.core, state.wnid, state.unlisted, {c.image_id: c.url for c in state.candidates})
        state.unlisted = {}
        state.present -= await stock.trim(self.core, state.wnid, state.label, state.on_disk, state.vouched,
                                          [c.image_id for c in state.candidates], self.params.per_class)

    async def _load_candidates(
        self, state: ClassState, from_file: dict[str, list[imagenet.Candidate]] | None
    ) -> None:
        if from_file is not None:
            state.candidates = [c for c in from_file.get(state.wnid, []) if self.usable(c.url)]
            state.listed = self.listed_in_file[state.wnid]
            if not state.listed:
                state.unknown = True
                state.no_urls = "unknown: the URL list has no line for it"
            elif not state.candidates:
                state.no_urls = self.none_usable(state.listed)
            return
        url = geturls_url(self.api_url, state.wnid)
        try:
            response = await self.fetch(url, "URL list")
            if response.status != 200:
                raise SourceError(f"{url} answered HTTP {response.status}")
            candidates = imagenet.parse_geturls(response.body, state.wnid)
        except (SourceError, imagenet.NoUrls) as exc:
            state.no_urls = str(exc)
            state.unknown = isinstance(exc, imagenet.NoUrls)
            logger.warning("%s: no URLs: %s", state.wnid, exc)
            return
        state.listed = len(candidates)
        state.candidates = [c for c in candidates if self.usable(c.url)]
        if not candidates:
            state.unknown = True
            state.no_urls = f"unknown: {url} lists no URL for it"
        elif not state.candidates:
            state.no_urls = self.none_usable(len(candidates))

    def none_usable(self, listed: int) -> str:
        """Why a class the source lists URLs for has no candidate: the host filter, or bad URLs."""
        if self.params.flickr_only:
            return (f"none of its {listed} URLs is on Flickr's hosts (flickr_only=true keeps only those; "
                    "flickr_only=false tries them all)")
        return f"none of its {listed} URLs is a usable http(s) URL"

    def usable(self, url: str) -> bool:
        try:
            if not urlsplit(url).hostname:
                return False
        except ValueError:  # e.g. "http://a[b@host/": not a URL a download can use
            return False
        return self.domains is None or imagenet.host_matches(url, self.domains)

    def item_for(self, state: ClassState, candidate: imagenet.Candidate) -> ImageItem | None:
        if candidate.image_id in state.present or self.known_failure("image", candidate.image_id):
            return None
        hosts, host = self.core.hosts, host_of(candidate.url)
        if self.probing_enough(host):
            state.deferred.append(candidate)  # its host has not answered yet: the class moves on meanwhile
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
            item.result.decide(Outcome.DUPLICATE, f"the same URL is listed in {first}, which came first")
        elif hosts.enabled and hosts.is_down(host):
            item.result.decide(Outcome.HOST_DOWN, str(HostDown(host, hosts.skip(host))))  # not asked
        else:
            self.host_pending[host] += 1
            self.asking[candidate.image_id] = host
        item.retry_later = not self.core.mode.shared  # workers retry at once (candidates are shared)
        return item

    def probing_enough(self, host: str) -> bool:
        """Whether ``host`` has stayed silent (asked ``HOSTS_STALL_AFTER`` seconds ago, no answer
        yet) with as many of our candidates in flight as an unproven host may get
        (``HOSTS_UNPROVEN_CONCURRENCY``): more would only wait on it, so the class moves on. (A
        host that answers at once is never put off: candidates go in list order.)"""
        hosts = self.core.hosts
        return (not self.core.mode.shared and hosts.unproven > 0 and self.host_pending[host] >= hosts.unproven
                and not hosts.proven(host) and not hosts.is_down(host)
                and hosts.silent_for(host) >= self.stall_after)

    def recall_deferred(self, state: ClassState) -> None:
        """Candidates put off while their host was silent go again (first, in list order) once it
        has answered, gone down (they are then recorded host_down at once) or has room to probe."""
        if not state.deferred:
            return
        ready = [c for c in state.deferred if not self.probing_enough(host_of(c.url))]
        if ready:
            chosen = {id(c) for c in ready}
            state.deferred = [c for c in state.deferred if id(c) not in chosen]
            state.spare.extendleft(reversed(ready))
    def revive_skipped(self, state: ClassState) -> bool:
        """Before a class ends short, the candidates it skipped on down hosts get their host's
        probe: those whose host is back go again; for each host not probed since it went down, one
        candidate goes as its probe once the host has been down ``HOSTS_SHORT_PROBE_AFTER``
        seconds (sooner than its cool-down: a short class does not wait a minute on a dead host);
        those whose host failed a probe since they were skipped stay host_down (a re-run tries
        them). True while the class waits on a probe (it stays active; a timer wakes the feed)."""
        hosts = self.core.hosts
        if state.deferred:
            return True  # its silent hosts answer, or fail, in time: a record wakes the feed
        if not state.skipped or not hosts.enabled:
            return False
        now, again, waiting, probes = time.monotonic(), [], [], set()
        wake = float("inf")
        for candidate, when in state.skipped:
            host = host_of(candidate.url)
            found = hosts.hosts.get(host)
            if found is None or found.down_since is None:
                again.append(candidate)  # back up
                continue
            if found.probe_failed_at >= when:
                continue  # its host failed a probe since: host_down stands
            due = min(found.retry_at, found.down_since + self.short_probe_after)
            if due <= now and not found.probing and host not in probes:
                probes.add(host)
                hosts.probe_now(host)
                again.append(candidate)  # the probe
            else:
                waiting.append((candidate, when))
                wake = min(wake, due if due > now else now + 0.25)
        state.skipped = waiting
        state.candidates.extend(again)
        if waiting and not again and wake < float("inf"):
            asyncio.get_running_loop().call_later(max(0.05, wake - now), self.core.quota.poke)
        return bool(again or waiting)

    # --- the end ------------------------------------------------------------------------------

    def on_recorded(self, item: ImageItem) -> None:
        if item.kind == "image" and item.group:
            self.outcomes[item.group][item.result.outcome or "?"] += 1
            found = self.candidate_of.pop(item.image_id, None)
            if (host := self.asking.pop(item.image_id, None)) is not None:
                self.host_pending[host] -= 1
            surplus = item.result.outcome == Outcome.SURPLUS
            if found and not item.flight and surplus and item.image_id not in self.requeued:
                self.requeued.add(item.image_id)  # once: not needed now, wanted if a withdrawal makes room
                found[0].spare.append(found[1])
            elif found and item.result.outcome == Outcome.HOST_DOWN and item.retry_later:
                found[0].skipped.append((found[1], time.monotonic()))  # its host's probe decides
            elif (found and item.retry_later and item.result.outcome in (Outcome.TIMEOUT, Outcome.CONNECTION)
                  and self.retried[item.image_id] < self.retry_times):
                self.retried[item.image_id] += 1
                if self.core.hosts.is_down(host_of(item.result.url)):
                    # it failed as its host went down: the host's probe decides, as for a skipped one
                    found[0].skipped.append((found[1], time.monotonic()))
                else:
                    found[0].candidates.append(found[1])  # tried again behind the class's other candidates

    def summarise(self, classes: list[ClassState]) -> None:
        wanted = self.params.per_class
        short = []
        for state in classes:
            kept = self.core.quota.kept[state.wnid]
            name = f"{state.wnid} ({state.label.split(',')[0]})" if state.label else state.wnid
            if kept >= wanted:
                logger.debug("%s: %d/%d", name, kept, wanted)
                continue
            failures = {k: v for k, v in self.outcomes[state.wnid].items() if k not in KEPT_OUTCOMES}
            usable = len({c.image_id for c in state.candidates})
            dropped = (f" ({state.listed - usable} of its {state.listed} URLs not on Flickr's hosts: "
                       "flickr_only=true)") if self.params.flickr_only and state.listed > usable else ""
            why = state.no_urls or (
                f"out of candidates after {usable} URLs{dropped}; "
                + (", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "no failures")
            )
            logger.debug("%s: only %d/%d images: %s", name, kept, wanted, why)  # the summary says it
            self.core.shortfalls.append(f"{name}: {kept}/{wanted}: {why}")
            short.append(state.wnid)
        full = len(classes) - len(short)
        logger.info("%d of %d classes have %d images", full, len(classes), wanted)
        self.note_classes_not_asked(classes)
        if self.core.fatal_error is None:
            self.fail_if_empty(classes)  # nothing at all: the source itself may be wrong, said first
        if short and self.params.strict:
            self.core.fail(f"strict: {len(short)} class(es) have fewer than {wanted} images: {', '.join(short[:10])}",
                      stop=False)
        unknown = [c.wnid for c in classes if c.unknown]
        if unknown and self.core.fatal_error is None:
            shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            self.core.fail(f"{len(unknown)} unknown wnid(s), for which the source lists no URL: {shown} (the other "
                           "classes were downloaded)", stop=False)

    def note_classes_not_asked(self, classes: list[ClassState]) -> None:
        """Class folders an earlier run made that this run did not ask for stay as they are: say so."""
        asked = {os.path.basename(c.folder) for c in classes}
        try:
            with os.scandir(self.images_dir) as entries:
                others = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False) and e.name not in asked
                                and not e.name.startswith("."))
        except OSError:
            return
        if others:
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            self.core.notes.append(f"{len(others)} class folder(s) of earlier runs not asked this time are left as "
                                   f"they are: {shown}")

    def fail_if_empty(self, classes: list[ClassState]) -> None:
        """Nothing in the dataset for what was asked, or no class got its URLs: that is no success."""
        tried = [c for c in classes if c.loaded]
        held = sum(self.core.quota.kept[c.wnid] for c in classes)  # classes full before this run are not tried
        if tried and all(c.no_urls for c in tried) and not held:
            first = tried[0].no_urls or ""
            first = first if first.startswith(tried[0].wnid) else f"{tried[0].wnid}: {first}"
            self.core.fail(f"no class could get its list of URLs ({len(tried)} tried; the first: {first})", stop=False)
        elif not held:
            failures: Counter[str] = Counter()
            for state in classes:
                failures.update({k: v for k, v in self.outcomes[state.wnid].items() if k not in KEPT_OUTCOMES})
            kinds = ", ".join(f"{k} {v}" for k, v in failures.most_common(5)) or "nothing was tried"
            self.core.fail(f"no image in the dataset for the {len(classes)} class(es) asked: {kinds}", stop=False)


def geturls_url(api_url: str, wnid: str) -> str:
    """``api_url`` with ``wnid`` set in its query (it may already hold other parameters, or ``wnid=``)."""
    parts = urlsplit(api_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "wnid"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("wnid", wnid)])))


