"""The Retry-After middleware: pauses the host's download slot; an absurd wait gives up instead."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from scrapy import Request
from scrapy.core.downloader import Slot
from scrapy.http import Response
from scrapy.settings import Settings
from scrapy.statscollectors import MemoryStatsCollector

from dataset_spiders import settings as project_settings
from dataset_spiders.downloader.retries import RATE_LIMITED_META, RetryAfterMiddleware


class FakeDownloader:
    def __init__(self):
        self.slots = {"a.example": Slot(8, 0.0, 0.0), "b.example": Slot(8, 0.0, 0.0)}

    def get_slot_key(self, request):
        return request.url.split("/")[2]

    def _latercall(self, slot):
        slot.latercall = None


def middleware(**overrides):
    settings = Settings()
    settings.setmodule(project_settings)
    settings.setdict(overrides, priority="cmdline")
    crawler = SimpleNamespace(settings=settings)
    crawler.spider = SimpleNamespace(name="t", settings=settings, crawler=crawler)
    crawler.stats = MemoryStatsCollector(crawler)
    crawler.engine = SimpleNamespace(downloader=FakeDownloader())
    mw = RetryAfterMiddleware(settings)
    mw.crawler = crawler
    return mw, crawler.engine.downloader


def in_loop(test):
    """Run the test inside an asyncio loop, where the middleware schedules its pause."""

    def run():
        async def body():
            test()

        asyncio.run(body())

    run.__name__ = test.__name__
    return run


@in_loop
def test_a_429_with_retry_after_pauses_that_host_only_and_retries():
    mw, downloader = middleware()
    request = Request("http://a.example/x.jpg")
    result = mw.process_response(request, Response(request.url, status=429, headers={"Retry-After": "5"}))
    assert isinstance(result, Request)  # retried, after the pause
    assert downloader.slots["a.example"].latercall is not None
    assert downloader.slots["b.example"].latercall is None
    downloader.slots["a.example"].latercall.cancel()


@in_loop
def test_an_absurd_retry_after_gives_up_and_pauses_the_host_for_the_cap_only():
    mw, downloader = middleware(RETRY_AFTER_MAX=30)
    request = Request("http://a.example/x.jpg")
    response = Response(request.url, status=503, headers={"Retry-After": "86400"}, request=request)
    assert mw.process_response(request, response) is response  # not retried: recorded as rate_limited
    assert request.meta[RATE_LIMITED_META] == 86400
    assert downloader.slots["a.example"].latercall is not None
    assert mw.crawler.stats.get_value("retry_after/capped") == 1
    downloader.slots["a.example"].latercall.cancel()
