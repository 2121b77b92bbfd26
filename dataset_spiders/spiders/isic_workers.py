"""ISIC with workers (``REDIS_URL``): one worker at a time lists the archive, every worker downloads.

The worker that holds the listing role (a lease in Redis) pages through the search and puts
the records in a shared queue, a few at a time, when the queue runs dry; each record is taken
by one worker. If the lister stops, another takes the role over and lists again from the
start; records already queued are not queued twice. A listing that failed fails every worker
the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..items import ImageItem
from ..scaleout.decisions import WorkerMode
from ..sources.isic import IsicRecord
from .base import SourceError

if TYPE_CHECKING:
    from .isic import IsicSpider

logger = logging.getLogger(__name__)

DONE, FAILED = "done", "failed: "


async def shared_items(spider: IsicSpider, records: AsyncIterator[IsicRecord]) -> AsyncIterator[ImageItem]:
    """With REDIS_URL: records come from the shared queue (one worker lists), each to one worker."""
    workers = spider.core.workers
    assert workers is not None
    if not await spider.core.join(terms=spider.run_terms()):
        return
    window = spider.settings.getint("DATASET_MAX_IN_FLIGHT")
    slack = spider.settings.getint("DATASET_EXTRA_IN_FLIGHT")
    async for record, flight in shared_records(workers, records, window, slack):
        item = None if record.isic_id in await workers.decided() else spider.make_item(record)
        if item is None:
            await workers.release("", flight)
            continue
        item.flight = flight
        spider.core.quota.reserve()
        yield item


async def shared_records(
    workers: WorkerMode, records: AsyncIterator[IsicRecord], window: int, slack: int
) -> AsyncIterator[tuple[IsicRecord, str]]:
    """The records this worker is to download, each with its shared candidate (``flight``)."""
    state = workers.state
    assert state is not None
    listing: AsyncIterator[IsicRecord] | None = None
    while True:
        if workers.core.quota.pending[""] >= window:  # this worker's own room is full
            await asyncio.sleep(0.02)
            continue
        answer = await workers.dequeue(slack)
        if answer.verdict == "take":
            yield IsicRecord(**json.loads(answer.record)), f"\0{answer.index}"
            continue
        if answer.verdict == "full":
            return
        if answer.verdict == "empty":
            note = await state.flag("listing")
            if note is not None and note.startswith(FAILED):
                raise SourceError(note[len(FAILED):])
            if note == DONE:
                if not answer.pending:
                    return  # listed, handed out and settled: nothing more will come
            elif await state.try_lead("listing"):
                if listing is None:
                    listing = records  # this worker lists from now on (from the start: queued ones are skipped)
                    logger.info("This worker lists the archive for all workers")
                await _list_some(workers, listing, window)
                continue
        await asyncio.sleep(0.05)


async def _list_some(workers: WorkerMode, listing: AsyncIterator[IsicRecord], count: int) -> None:
    """Queue up to ``count`` more records; mark the listing done, or failed, at its end."""
    state = workers.state
    assert state is not None
    try:
        for _ in range(max(1, count)):
            try:
                record = await anext(listing)
            except StopAsyncIteration:
                await state.flag("listing", DONE)
                return
            await workers.enqueue(record.isic_id, json.dumps(dataclasses.asdict(record), default=str))
    except SourceError as exc:
        await state.flag("listing", FAILED + str(exc))
        raise
