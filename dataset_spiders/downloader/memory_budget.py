"""A memory budget for image bodies being received at once (``IMAGES_MEMORY_BUDGET``).

Scrapy holds each body in memory until it is complete, so sixteen 1 GiB TIFFs arriving at
once would need 16 GiB. Each image download holds a reservation: its Content-Length when the
headers come (or, when the length is unknown, what has arrived plus a margin, grown as data
comes). A download whose reservation cannot grow is stopped at once, waits until the budget
has room for what it needs, and is issued again: a large image waits its turn, it is never
refused for the timing. One larger than the whole budget goes alone, when nothing else is
reserved. Nothing waits while holding a reservation, so waiting cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from scrapy import Request, signals
from scrapy.exceptions import StopDownload
from scrapy.http import Response

from .encoded_images import IMAGE_META

logger = logging.getLogger(__name__)


class MemoryBudget:
    """At most ``limit`` bytes reserved at once; reservations that do not fit wait in turn.

    ``reserve`` is first come, first served (a large waiter is not overtaken by small ones);
    ``Reservation.grow`` never waits: it is for downloads already under way."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, size: int, held: int = 0) -> bool:
        """Whether ``size`` bytes (of which ``held`` already reserved) fit; alone, anything fits."""
        return self.used == held or self.used - held + size <= self.limit

    async def reserve(self, size: int) -> Reservation:
        """Wait until ``size`` bytes fit after everyone who asked earlier, then hold them."""
        if not self._waiters and self._fits(size):
            self.used += size
            return Reservation(self, size)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, waiter))
        try:
            await waiter
        except BaseException:  # cancelled: the download is no longer wanted
            if waiter.done() and not waiter.cancelled():
                self._give_back(size)  # granted just before the cancel
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove((size, waiter))
                self._wake()  # the head of the queue left: the next one may fit
            raise
        return Reservation(self, size)

    def _give_back(self, size: int) -> None:
        self.used -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, waiter = self._waiters[0]
            if not waiter.done() and not self._fits(size):
                return
            self._waiters.popleft()
            if not waiter.done():
                self.used += size
                waiter.set_result(None)


class Reservation:
    """Bytes held in a ``MemoryBudget`` for one body; ``release`` is safe to call twice."""

    def __init__(self, budget: MemoryBudget, size: int):
        self.budget = budget
        self.size = size
        self.released = False

    def grow(self, size: int) -> bool:
        """Hold ``size`` bytes instead, if they fit now; never waits."""
        if size <= self.size:
            return True
        if self.released or not self.budget._fits(size, held=self.size):
            return False
        self.budget.used += size - self.size
        self.size = size
        return True

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.budget._give_back(self.size)


class NoRoom(StopDownload):
    """Raised from a signal handler to stop a download the budget has no room for yet."""

    def __init__(self, needed: int):
        super().__init__(fail=True)
        self.needed = needed


class _Body:
    """One image body being received: its reservation and the bytes so far."""

    def __init__(self, reservation: Reservation, maxsize: int):
        self.reservation = reservation
        self.maxsize = maxsize  # DOWNLOAD_MAXSIZE for this request: the handler refuses more
        self.received = 0


class BudgetedDownloads:
    """Downloads image requests within one ``MemoryBudget`` per crawl (every download handler
    instance of the crawl shares it: Scrapy builds one per URL scheme)."""

    _by_crawler: weakref.WeakKeyDictionary[Any, BudgetedDownloads] = weakref.WeakKeyDictionary()

    def __init__(self, crawler: Any, limit: int):
        self.budget = MemoryBudget(limit)
        self._crawler = weakref.ref(crawler)  # the crawler is the key of ``_by_crawler``: not held here
        self.default_maxsize = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        self._bodies: dict[Request, _Body] = {}
        self._told = False
        crawler.signals.connect(self._headers_received, signal=signals.headers_received)
        crawler.signals.connect(self._bytes_received, signal=signals.bytes_received)

    @classmethod
    def of(cls, crawler: Any) -> BudgetedDownloads | None:
        """The crawl's budget, or None when ``IMAGES_MEMORY_BUDGET`` is 0 (off)."""
        limit = crawler.settings.getint("IMAGES_MEMORY_BUDGET")
        if limit <= 0:
            return None
        if crawler not in cls._by_crawler:
            cls._by_crawler[crawler] = cls(crawler, limit)
        return cls._by_crawler[crawler]

    async def download(self, request: Request, fetch: Callable[[Request], Awaitable[Response]]) -> Response:
        """``fetch(request)`` within the budget; again, once there is room, if it was stopped."""
        if not request.meta.get(IMAGE_META):
            return await fetch(request)
        needed = 0  # unknown until the headers come
        maxsize = request.meta.get("download_maxsize", self.default_maxsize)
        while True:
            reservation = await self.budget.reserve(needed)
            self._bodies[request] = _Body(reservation, maxsize)
            try:
                return await fetch(request)
            except NoRoom as exc:
                needed = exc.needed
            finally:
                self._bodies.pop(request, None)
                reservation.release()  # always: a leaked reservation would stall the crawl
            crawler = self._crawler()
            if crawler is not None and crawler.stats is not None:
                crawler.stats.inc_value("memory_budget/restarted")
            if not self._told:
                self._told = True
                logger.info(
                    "IMAGES_MEMORY_BUDGET (%d bytes) is full: image downloads wait their turn", self.budget.limit
                )

    def _headers_received(self, body_length: Any, request: Request, **kwargs: Any) -> None:
        body = self._bodies.get(request)
        if body is None or not isinstance(body_length, int):  # Twisted's UNKNOWN_LENGTH: grow as data comes
            return
        if body.maxsize and body_length > body.maxsize:
            return  # the handler refuses it right after this signal (too_large): nothing to hold
        if not body.reservation.grow(body_length):
            raise NoRoom(body_length)

    def _bytes_received(self, data: bytes, request: Request, **kwargs: Any) -> None:
        body = self._bodies.get(request)
        if body is None:
            return
        body.received += len(data)
        if body.received <= body.reservation.size or (body.maxsize and body.received > body.maxsize):
            return  # within the reservation, or over DOWNLOAD_MAXSIZE: the handler refuses it now
        wanted = body.received + body.received // 4  # a margin: fewer, larger steps
        if body.maxsize:
            wanted = min(wanted, body.maxsize)
        if not body.reservation.grow(wanted):
            raise NoRoom(wanted)
