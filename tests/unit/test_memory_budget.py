"""MemoryBudget and BudgetedDownloads in-process (asyncio, no crawl): reserve, grow, wait,
release, and a download stopped for room that is issued again once there is room."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from scrapy import Request, signals
from scrapy.exceptions import DownloadCancelledError, StopDownload
from scrapy.http import Headers, Response
from scrapy.settings import Settings
from scrapy.signalmanager import SignalManager
from twisted.python.failure import Failure

from dataset_spiders.downloader.encoded_images import IMAGE_META
from dataset_spiders.downloader.memory_budget import BudgetedDownloads, MemoryBudget


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_reserve_within_the_limit_is_immediate_and_release_gives_back_once():
    async def body():
        budget = MemoryBudget(1000)
        a, b = await budget.reserve(600), await budget.reserve(400)
        assert budget.used == 1000
        a.release()
        a.release()  # twice is harmless
        assert budget.used == 400
        b.release()
        assert budget.used == 0

    run(body())


def test_a_reservation_that_does_not_fit_waits_for_room_first_come_first_served():
    async def body():
        budget = MemoryBudget(1000)
        held = await budget.reserve(700)
        order: list[str] = []

        async def take(name: str, size: int):
            reservation = await budget.reserve(size)
            order.append(name)
            return reservation

        big = asyncio.ensure_future(take("big", 900))
        await settle()
        small = asyncio.ensure_future(take("small", 100))  # would fit now, but big asked first
        await settle()
        assert order == [] and budget.used == 700
        held.release()
        await settle()
        assert order == ["big", "small"] and budget.used == 1000
        (await big).release()
        (await small).release()
        assert budget.used == 0

    run(body())


def test_a_body_larger_than_the_whole_budget_goes_alone():
    async def body():
        budget = MemoryBudget(1000)
        small = await budget.reserve(10)
        huge = asyncio.ensure_future(budget.reserve(5000))
        await settle()
        assert not huge.done()
        small.release()
        await settle()
        alone = huge.result()
        assert budget.used == 5000
        later = asyncio.ensure_future(budget.reserve(0))  # even a zero reservation waits its turn
        await settle()
        assert not later.done()
        alone.release()
        await settle()
        assert later.done() and budget.used == 0

    run(body())


def test_grow_never_waits_and_fails_when_there_is_no_room():
    async def body():
        budget = MemoryBudget(1000)
        a = await budget.reserve(0)
        assert a.grow(5000)  # alone: anything fits
        assert a.grow(100)  # shrinking is a no-op
        assert budget.used == 5000 and a.size == 5000
        a.release()
        a, b = await budget.reserve(300), await budget.reserve(300)
        assert a.grow(700) and budget.used == 1000
        assert not b.grow(301) and budget.used == 1000 and b.size == 300
        a.release()
        b.release()
        assert not b.grow(400), "a released reservation cannot grow"
        assert budget.used == 0

    run(body())


def test_a_cancelled_waiter_leaves_the_queue_and_lets_the_next_one_in():
    async def body():
        budget = MemoryBudget(1000)
        held = await budget.reserve(500)
        blocked = asyncio.ensure_future(budget.reserve(800))
        await settle()
        behind = asyncio.ensure_future(budget.reserve(400))  # fits, but queued behind 800
        await settle()
        assert not behind.done()
        blocked.cancel()
        await settle()
        assert blocked.cancelled() and behind.done() and budget.used == 900
        held.release()
        behind.result().release()
        assert budget.used == 0

    run(body())


def test_a_waiter_cancelled_right_after_its_grant_gives_the_bytes_back():
    async def body():
        budget = MemoryBudget(1000)
        held = await budget.reserve(1000)
        waiter = asyncio.ensure_future(budget.reserve(600))
        await settle()
        held.release()  # grants 600 to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs again
        await settle()
        assert waiter.cancelled() and budget.used == 0

    run(body())


# -- BudgetedDownloads: the signal handlers and the restart loop --------------------------------


class FakeCrawler:
    def __init__(self, limit: int, maxsize: int = 0):
        self.settings = Settings({"IMAGES_MEMORY_BUDGET": limit, "DOWNLOAD_MAXSIZE": maxsize})
        self.signals = SignalManager(self)
        self.stats = self
        self.counts: Counter[str] = Counter()

    def inc_value(self, key: str, count: int = 1, **kwargs: Any) -> None:
        self.counts[key] += count


class FakeServer:
    """Sends a body in chunks through the signals, as Scrapy's HTTP handler does, checks the
    budget as each chunk arrives and records the most bytes reserved at any moment."""

    def __init__(self, crawler: FakeCrawler, downloads: BudgetedDownloads):
        self.crawler, self.downloads = crawler, downloads
        self.peak = 0
        self.attempts: Counter[str] = Counter()

    def _send(self, signal: Any, request: Request, **kwargs: Any) -> None:
        for _, result in self.crawler.signals.send_catch_log(signal, request=request, spider=None, **kwargs):
            if isinstance(result, Failure) and isinstance(result.value, StopDownload):
                raise result.value

    async def fetch(self, request: Request, size: int, known: bool = True) -> Response:
        self.attempts[request.url] += 1
        self._send(signals.headers_received, request, headers=Headers(), body_length=size if known else "UNKNOWN")
        maxsize = self.crawler.settings.getint("DOWNLOAD_MAXSIZE")
        if known and maxsize and size > maxsize:
            raise DownloadCancelledError(f"Expected to receive {size} bytes which is larger than download max size")
        for _ in range(0, size, 100):
            await asyncio.sleep(0.001)
            self._send(signals.bytes_received, request, data=b"x" * 100)
            budget = self.downloads.budget
            holding = [b.reservation.size for b in self.downloads._bodies.values() if b.reservation.size]
            assert budget.used <= budget.limit or holding == [budget.used], "over the budget, and not alone"
            self.peak = max(self.peak, budget.used)
        return Response(request.url, body=b"x" * size)


def image(url: str) -> Request:
    return Request(url, meta={IMAGE_META: True})


@pytest.mark.parametrize("known", [True, False], ids=["content-length", "unknown-length"])
def test_downloads_stopped_for_room_are_issued_again_and_all_complete(known):
    async def body():
        crawler = FakeCrawler(limit=1000)
        downloads = BudgetedDownloads(crawler, 1000)
        server = FakeServer(crawler, downloads)
        sizes = {"http://h/a": 600, "http://h/b": 600, "http://h/c": 300, "http://h/huge": 2500}

        async def get(url: str) -> Response:
            return await downloads.download(image(url), lambda r: server.fetch(r, sizes[url], known))

        responses = await asyncio.gather(*(get(url) for url in sizes))
        assert [len(r.body) for r in responses] == list(sizes.values())
        assert downloads.budget.used == 0 and not downloads._bodies
        assert crawler.counts["memory_budget/restarted"] >= 1
        assert sum(server.attempts.values()) > len(sizes)
        assert server.peak <= 2500 * 5 // 4, "only the body larger than the budget went over it, alone"

    run(body())


def test_a_failed_or_cancelled_download_releases_its_reservation():
    async def body():
        crawler = FakeCrawler(limit=1000)
        downloads = BudgetedDownloads(crawler, 1000)
        server = FakeServer(crawler, downloads)

        async def broken(request: Request) -> Response:
            await server.fetch(request, 400)
            raise ConnectionError("reset")

        with pytest.raises(ConnectionError):
            await downloads.download(image("http://h/a"), broken)
        slow = asyncio.ensure_future(downloads.download(image("http://h/b"), lambda r: server.fetch(r, 5000)))
        await asyncio.sleep(0.01)
        assert downloads.budget.used == 5000
        slow.cancel()
        await settle()
        assert downloads.budget.used == 0 and not downloads._bodies

    run(body())


def test_other_requests_and_bodies_over_download_maxsize_are_not_budgeted():
    async def body():
        crawler = FakeCrawler(limit=1000, maxsize=2000)
        downloads = BudgetedDownloads(crawler, 1000)
        server = FakeServer(crawler, downloads)
        page = await downloads.download(Request("http://h/api"), lambda r: server.fetch(r, 1500))
        assert len(page.body) == 1500 and server.peak == 0  # over the budget, but not an image
        # over DOWNLOAD_MAXSIZE: the handler refuses it right after the headers; it never waits for room
        held = await downloads.budget.reserve(900)
        with pytest.raises(DownloadCancelledError):
            await downloads.download(image("http://h/x"), lambda r: server.fetch(r, 2100))
        assert server.attempts["http://h/x"] == 1 and downloads.budget.used == 900
        held.release()

    run(body())
