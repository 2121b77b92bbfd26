"""The HTTP download handler of both spiders: image downloads stay within the memory budget
(``downloader/memory_budget.py``), an image download is dropped as soon as its class is full, and dead
hosts cost a few failures, not one timeout per URL (``dataset/hosts.py``).

Scrapy has no public way to cancel a download in flight, so a host that hangs would hold the
end of the crawl until its timeout. This handler races each image download of a group (a
class with an exact count) against that group filling up; when the group wins, the download
is cancelled (the connection closed) and the request fails with ``GroupFull``, recorded as
``surplus``. Requests of a group that is already full are refused before they start; one
still waiting for room in the memory budget is dropped the same way.

Each image download is also watched (``_Watch``): it must connect within
``IMAGES_CONNECT_TIMEOUT`` and get the first byte of its answer within
``IMAGES_FIRST_BYTE_TIMEOUT`` (the whole download keeps ``IMAGES_DOWNLOAD_TIMEOUT``, long for big
images from slow but living hosts); its host learns whether it answered (host health); and a
download that has waited ``HOSTS_STALL_AFTER`` seconds without an answer lets its class start
another candidate (the surplus is cancelled once the class is full, as above).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from scrapy import Request, signals
from scrapy.exceptions import DownloadCancelledError, DownloadTimeoutError
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached

from ..dataset import DatasetCore
from ..dataset.hosts import HostHealth, host_of
from ..outcomes import GroupFull
from .encoded_images import IMAGE_META
from .memory_budget import BudgetedDownloads
from .scrapy_compat import CONNECT_TIMEOUT_META, ConnectLimitedDownloadHandler, engine_closing, quick_refusals

GROUP_META = "dataset_group"
FIRST_BYTE_META = "download_first_byte_timeout"  # seconds from the start to the first byte of the answer
NO_ANSWER_META = "dataset_no_answer"  # set on a request that failed before its host said anything


class FirstByteTimeout(DownloadTimeoutError):
    """The host did not begin to answer in time (a host that accepts and never answers)."""



class _Gate:
    """At most ``limit`` requests at once to a host that has not answered yet; once it answers
    (or goes down: then they fail at once, not asked) every waiter goes through."""

    def __init__(self, limit: int):
        self.limit = limit
        self.inside = 0
        self.opened = False
        self._turn = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._turn:
            await self._turn.wait_for(lambda: self.opened or self.inside < self.limit)
            self.inside += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._turn:
            self.inside -= 1
            self._turn.notify_all()

    async def open(self) -> None:
        async with self._turn:
            self.opened = True
            self._turn.notify_all()


class ImageConcurrency:
    """``CONCURRENT_REQUESTS`` and ``CONCURRENT_REQUESTS_PER_DOMAIN`` for image downloads.

    The media pipeline sends its requests through ``engine.download``, which skips the
    scheduler and the engine's back-out check, so Scrapy caps them per download slot only, and
    not in total: the caps are enforced here, before a download starts (its timeout starts with
    it). One per crawl, shared by the handler instances (one per URL scheme)."""

    _by_crawler: weakref.WeakKeyDictionary[Any, ImageConcurrency] = weakref.WeakKeyDictionary()

    def __init__(self, total: int, per_host: int, health: HostHealth | None = None):
        self.total = asyncio.Semaphore(max(1, total))
        self.per_host_limit = max(1, per_host)
        self.per_host: dict[str, asyncio.Semaphore] = {}
        self.health = health
        self.unproven: dict[str, _Gate] = {}  # hosts that never answered: a probe, not a flood

    @classmethod
    def of(cls, crawler: Any, health: HostHealth | None = None) -> ImageConcurrency:
        if crawler not in cls._by_crawler:
            s = crawler.settings
            cls._by_crawler[crawler] = cls(s.getint("CONCURRENT_REQUESTS"), s.getint("CONCURRENT_REQUESTS_PER_DOMAIN"),
                                           health)
        return cls._by_crawler[crawler]

    @contextlib.asynccontextmanager
    async def slot(self, request: Request) -> AsyncIterator[None]:
        host = urlparse_cached(request).hostname or ""
        per_host = self.per_host.setdefault(host, asyncio.Semaphore(self.per_host_limit))
        health = self.health
        origin = host_of(request.url)
        if health is None or not health.unproven or health.proven(origin):
            async with self.total, per_host:
                yield
            return
        # Until the host has answered once, at most ``unproven`` of its requests go at a time
        # (waiting here holds no other slot), so silent hosts cannot take every slot.
        gate = self.unproven.setdefault(origin, _Gate(health.unproven))
        async with gate, self.total, per_host:
            yield

    async def settled(self, origin: str) -> None:
        """``origin`` answered, or went down: its gate no longer holds anyone back."""
        gate = self.unproven.pop(origin, None)
        if gate is not None:
            await gate.open()


class _Watch:
    """One image request in the handler: its stall mark (from the moment it arrives, so a request
    waiting on a silent host's gate counts too) and, per attempt, its first-byte timer and whether
    its host answered."""

    def __init__(self, handler: CancelWhenFullDownloadHandler, request: Request):
        self.handler, self.request = handler, request
        self.host = host_of(request.url)
        self.answered = False  # in this attempt
        self.ever_answered = False
        self.timed_out = False
        self.stalled_group: str | None = None
        self.task: asyncio.Future[Response] | None = None
        self.first_byte: asyncio.TimerHandle | None = None
        self.stall: asyncio.TimerHandle | None = None
        group, quota, stall = request.meta.get(GROUP_META), handler._quota, handler._stall_after
        if group is not None and quota is not None and stall > 0:
            self.stall = asyncio.get_running_loop().call_later(stall, self._stalled, group)

    def begin(self, task: asyncio.Future[Response]) -> None:
        """An attempt starts (the memory budget may restart one): its own first-byte timer."""
        self.task, self.answered, self.timed_out = task, False, False
        if first_byte := self.request.meta.get(FIRST_BYTE_META):
            self.first_byte = asyncio.get_running_loop().call_later(first_byte, self._no_first_byte)

    def _no_first_byte(self) -> None:
        if not self.answered and self.task is not None and not self.task.done():
            self.timed_out = True
            self.task.cancel()

    def _stalled(self, group: str) -> None:
        if not self.ever_answered and self.handler._quota is not None:
            self.stalled_group = group
            self.handler._quota.stall(group, +1)

    def headers(self) -> None:
        self.answered = self.ever_answered = True
        self._unstall()

    def _unstall(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
        if self.stalled_group is not None and self.handler._quota is not None:
            self.handler._quota.stall(self.stalled_group, -1)
            self.stalled_group = None

    def end_attempt(self) -> None:
        if self.first_byte is not None:
            self.first_byte.cancel()

    def close(self) -> None:
        self.end_attempt()
        self._unstall()


class CancelWhenFullDownloadHandler(ConnectLimitedDownloadHandler):
    """``HTTP11DownloadHandler`` whose image downloads share a memory budget, stop once their
    group is full, fail fast on silent hosts and teach host health (module docstring)."""

    def __init__(self, crawler: Any):
        super().__init__(crawler)
        quick_refusals()
        self._budgeted = BudgetedDownloads.of(crawler)
        core = crawler.get_extension(DatasetCore)
        self._quota = core.quota if core is not None else None
        self._health: HostHealth | None = core.hosts if core is not None else None
        # a worker that lost Redis for good can keep nothing more: its downloads stop at once
        self._stop_with_run = core is not None and core.mode.shared
        self._caps = ImageConcurrency.of(crawler, self._health)
        s = crawler.settings
        self._connect = s.getfloat("IMAGES_CONNECT_TIMEOUT")
        self._first_byte = s.getfloat("IMAGES_FIRST_BYTE_TIMEOUT")
        self._stall_after = s.getfloat("HOSTS_STALL_AFTER")
        self._watches: dict[int, _Watch] = {}  # id(request) -> its watch, while in this handler
        crawler.signals.connect(self._headers_received, signal=signals.headers_received)

    def _headers_received(self, request: Request, **kwargs: Any) -> None:
        watch = self._watches.get(id(request))
        if watch is not None:
            watch.headers()
            if self._health is not None:
                self._health.flight_answered(id(request))

    async def _fetch(self, request: Request) -> Response:
        async with self._caps.slot(request):
            if engine_closing(self._crawler) and self._quota is not None:
                self._quota.stop()  # a Ctrl-C: no more images go in flight
            if self._quota is not None and self._quota.stopped:  # the run stops: not started, not asked
                raise DownloadCancelledError("the run is stopping")
            if self._budgeted is None:
                return await self._watched(request)
            return await self._budgeted.download(request, self._watched)

    async def _watched(self, request: Request) -> Response:
        """One attempt, timed to its first byte; its host learns whether it answered."""
        meta = request.meta
        meta.pop(NO_ANSWER_META, None)
        if self._connect and not meta.get(CONNECT_TIMEOUT_META):
            meta[CONNECT_TIMEOUT_META] = self._connect
        if self._first_byte and not meta.get(FIRST_BYTE_META):
            meta[FIRST_BYTE_META] = self._first_byte
        health = self._health
        if health is not None:
            health.admit(host_of(request.url))  # HostDown, unless it is up or this is its probe
        watch = self._watches.get(id(request)) or _Watch(self, request)
        task = asyncio.ensure_future(super().download_request(request))
        watch.begin(task)
        try:
            response = await task
        except BaseException as exc:
            error = exc
            if watch.timed_out and isinstance(exc, asyncio.CancelledError):
                error = FirstByteTimeout(f"no answer from {watch.host} within {meta[FIRST_BYTE_META]:g} s "
                                         "(IMAGES_FIRST_BYTE_TIMEOUT)")
            if health is not None and watch.host:
                if watch.answered:  # it answered, then the body failed: alive all the same
                    health.answered(watch.host)
                    await self._caps.settled(watch.host)
                elif _connection_level(error):
                    meta[NO_ANSWER_META] = True
                    health.failed(watch.host, f"{type(error).__name__}: {str(error)[:120]}")
                    if health.is_down(watch.host):
                        await self._caps.settled(watch.host)
                else:
                    health.abandoned(watch.host)
            if error is not exc:
                raise error from None
            raise
        finally:
            watch.end_attempt()
        if health is not None and watch.host:
            if meta.get("proxy") and response.status in (502, 504):  # the proxy could not reach the host
                meta[NO_ANSWER_META] = True
                health.failed(watch.host, f"HTTP {response.status} from the proxy")
            else:
                health.answered(watch.host)
            if health.proven(watch.host) or health.is_down(watch.host):
                await self._caps.settled(watch.host)  # its gate's waiters go (or fail at once)
        return response

    async def download_request(self, request: Request) -> Response:
        if not request.meta.get(IMAGE_META):
            return await super().download_request(request)  # API pages: Scrapy's handler as it is
        if self._health is not None:
            self._health.refuse_if_down(host_of(request.url))  # HostDown: not asked
        watch = self._watches[id(request)] = _Watch(self, request)
        if self._health is not None:
            self._health.flight_started(id(request), watch.host)  # what progress says a stall waits on
        try:
            return await self._within_group(request)
        finally:
            watch.close()
            self._watches.pop(id(request), None)
            if self._health is not None:
                self._health.flight_ended(id(request))

    async def _within_group(self, request: Request) -> Response:
        """The download, cancelled once its group (an exact count) is full."""
        group = request.meta.get(GROUP_META)
        quota = self._quota
        if group is None or quota is None or quota.target is None:
            return await self._fetch(request)
        if quota.full(group):
            raise GroupFull(f"{group} is full")
        if self._stop_with_run and quota.stopped:
            raise DownloadCancelledError("the run is stopping")
        download = asyncio.ensure_future(self._fetch(request))
        full = asyncio.ensure_future(quota.wait_full(group))
        stopped = asyncio.ensure_future(quota.wait_stopped() if self._stop_with_run else asyncio.Future())
        try:
            await asyncio.wait({download, full, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            full.cancel()
            stopped.cancel()
        if not download.done():
            download.cancel()  # cancels the Twisted download under it: the connection is closed
            with contextlib.suppress(BaseException):
                await download
            if quota.stopped and not quota.full(group):
                raise DownloadCancelledError("the run is stopping")
            raise GroupFull(f"{group} filled up while this image was downloading")
        return download.result()


def _connection_level(exc: BaseException) -> bool:
    """Whether a failure with no answer from the host counts against it: not our own cancelling
    (the class filled up, the run stops)."""
    if isinstance(exc, FirstByteTimeout):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, (DownloadCancelledError, GroupFull))
