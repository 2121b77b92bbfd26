"""``scrapy crawl imagenet`` with workers (``REDIS_URL``): the classes' candidates are handed out
by the shared state, each to one worker, in list order; the crawl ends when every class is full
or out of candidates for every worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..dataset import class_folders as stock
from ..dataset.decisions import SharedGone
from ..items import ImageItem
from ..sources import imagenet
from .imagenet_classes import ClassState

if TYPE_CHECKING:
    from .imagenet import ImagenetSpider

logger = logging.getLogger(__name__)


async def shared_items(
    spider: ImagenetSpider, classes: list[ClassState], from_file: dict[str, list[imagenet.Candidate]] | None
) -> AsyncIterator[ImageItem]:
    """With REDIS_URL: the classes' candidates are handed out by the shared state, each to one
    worker, in list order; the crawl ends when every class is full or out of candidates."""
    workers = spider.core.workers
    assert workers is not None
    if not await spider.core.join(lambda: {c.wnid: stock.image_stems(c.folder) for c in classes},
                                  terms=spider.run_terms()):
        return
    try:
        assert workers.state is not None
        for wnid, kept in (await workers.state.counts([c.wnid for c in classes])).items():
            spider.core.quota.observe(wnid, kept)
        while not spider.core.quota.stopped:
            async for item in feed_shared(spider, deque(classes), from_file):
                yield item
            await spider.settle()
            if await all_done(spider, classes):
                break
            await asyncio.sleep(0.2)  # another worker's images are still in flight
        counts = await workers.state.counts([c.wnid for c in classes])
    except SharedGone as exc:
        spider.core.fail(str(exc))
        await spider.settle()
        return
    for wnid, kept in counts.items():
        spider.core.quota.observe(wnid, kept)
    logger.info("The dataset (all workers): %d image(s) in %d class(es)", sum(counts.values()), len(counts))
    spider.summarise(classes)

async def all_done(spider: ImagenetSpider, classes: list[ClassState]) -> bool:
    """Whether every class is full or out of candidates, for every worker (a late withdrawal
    may have made room again)."""
    workers, p = spider.core.workers, spider.params
    assert workers is not None
    for state in classes:
        if state.loaded:
            answer = await workers.take(state.wnid, len(state.candidates), 0, 0)  # wanting 0 takes nothing
            if answer.verdict not in ("full", "done"):
                return False
        elif not spider.core.quota.full(state.wnid) and p.per_class:
            return False
    return True

async def feed_shared(
    spider: ImagenetSpider, waiting: deque[ClassState], from_file: dict[str, list[imagenet.Candidate]] | None
) -> AsyncIterator[ImageItem]:
    """Take candidates of the active classes in batches (one Redis call for many), up to this
    worker's own window per class. A class with no room left for this worker (the others hold
    what it still needs) is parked, so this worker moves on to the next classes, and is asked
    again after a moment; a class with room is asked again once one of this worker's own
    images of it settles. Ends when every class is full or out of candidates."""
    workers, quota = spider.core.workers, spider.core.quota
    assert workers is not None
    window = spider.settings.getint("DATASET_MAX_IN_FLIGHT")
    slack = spider.settings.getint("DATASET_EXTRA_IN_FLIGHT")
    max_active = spider.settings.getint("IMAGENET_ACTIVE_CLASSES")
    loop = asyncio.get_running_loop()
    active: list[ClassState] = []
    parked: deque[tuple[float, ClassState]] = deque()  # (ask again after, class)
    asked: dict[str, tuple[float, int]] = {}  # class -> (ask again after, its own in flight then)
    while (waiting or active or parked) and not quota.stopped:
        starting: list[ClassState] = []
        while len(active) + len(starting) < max_active and (waiting or (parked and parked[0][0] <= loop.time())):
            starting.append(waiting.popleft() if waiting else parked.popleft()[1])
        await asyncio.gather(*(spider.load_candidates(s, from_file) for s in starting if not s.loaded))
        active.extend(s for s in starting if s.loaded)
        for state in list(active):
            mine = quota.pending[state.wnid]
            after, then = asked.get(state.wnid, (0.0, 0))
            if mine > window // 2 or quota.stopped or (loop.time() < after and mine >= then):
                continue  # refilled in batches: once half of this worker's window for it is free
            answer = await workers.take(state.wnid, len(state.candidates), slack, window - mine, mine)
            if answer.verdict in ("full", "done"):
                active.remove(state)
                continue
            if answer.verdict == "wait" and not mine:
                active.remove(state)  # nothing of it here: make room for another class
                parked.append((loop.time() + 0.25, state))
                continue
            asked[state.wnid] = (loop.time() + 0.25, mine + len(answer.indices))
            decided = await workers.decided()
            for index in answer.indices:
                flight = f"{state.wnid}\0{index}"
                candidate = state.candidates[index]
                done = candidate.image_id in decided or candidate.image_id in spider.candidate_of  # (in flight here)
                item = None if done or spider.core.recorded(candidate.image_id) else spider.item_for(state, candidate)
                if item is None:
                    await workers.release(state.wnid, flight)
                    continue
                item.flight, item.spare = flight, index
                quota.reserve(state.wnid)
                yield item
        if active or parked:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(quota.changed(), 0.05)
