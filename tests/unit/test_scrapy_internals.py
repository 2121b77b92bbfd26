"""Each Scrapy internal we rely on (docs/design.md: "Scrapy internals we rely on"), checked against the
installed Scrapy: a test here fails first when an upgrade changes one."""

from __future__ import annotations

import gzip
import logging
import sys

import pytest
from scrapy import Request
from scrapy.core.downloader import Downloader, Slot
from scrapy.core.scraper import Scraper
from scrapy.downloadermiddlewares.httpcompression import HttpCompressionMiddleware
from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.test import get_crawler

from dataset_spiders.outcomes import Outcome, classify


def test_a_download_slot_is_held_through_latercall_and_released_by_the_downloader():
    """downloader/retries.py pauses a host as DOWNLOAD_DELAY does."""
    slot = Slot(concurrency=1, delay=0, jitter=0)
    assert hasattr(slot, "latercall") and slot.latercall is None
    for name in ("_latercall", "get_slot_key"):
        assert callable(getattr(Downloader, name))
    assert "slots" in Downloader.__init__.__code__.co_names


def test_a_closing_scraper_can_be_asked_to_check_again():
    """extensions/drain.py works around scrapy/scrapy#7029 with these."""
    assert callable(Scraper._check_if_closing)
    from scrapy.core.scraper import Slot as ScraperSlot

    slot = ScraperSlot()
    assert slot.closing is None and slot.is_idle()


def test_scrapy_says_why_it_refused_a_body_only_in_words():
    """outcomes.classify tells too_large and redirect loops from other refusals by the text."""
    from scrapy.core.downloader.handlers.http11 import get_maxsize_msg
    from scrapy.exceptions import DownloadCancelledError

    text = get_maxsize_msg(10, 5, Request("http://example.com/x.jpg"), expected=True)
    assert classify(DownloadCancelledError(text))[0] == Outcome.TOO_LARGE
    assert classify(DownloadCancelledError("cancelled"))[0] == Outcome.CANCELLED

    crawler = get_crawler(settings_dict={"DOWNLOAD_MAXSIZE": 100})
    inflating = HttpCompressionMiddleware.from_crawler(crawler)
    request = Request("http://example.com/x.jpg")
    body = gzip.compress(b"\0" * 10_000)
    with pytest.raises(IgnoreRequest) as refused:
        inflating.process_response(request, Response(request.url, body=body, headers={"Content-Encoding": "gzip"}))
    assert classify(refused.value)[0] == Outcome.TOO_LARGE

    redirects = RedirectMiddleware.from_crawler(get_crawler(settings_dict={"REDIRECT_MAX_TIMES": 0}))
    moved = Response(request.url, status=302, headers={"Location": "http://example.com/y.jpg"})
    with pytest.raises(IgnoreRequest) as looped:
        redirects.process_response(request, moved)
    assert classify(looped.value)[0] == Outcome.REDIRECT


def test_the_media_pipeline_logs_each_failure_on_its_own_logger():
    """pipelines/images.py filters that logger's tracebacks (our failures are outcomes), once the
    image stage is made, and once only; importing it changes nothing."""
    from scrapy.pipelines import media

    assert media.logger.name == "scrapy.pipelines.media"
    from dataset_spiders.outcomes import ImageRejected, Outcome
    from dataset_spiders.pipelines.images import _RecordedFailures

    logger = logging.getLogger("scrapy.pipelines.media")
    saved = list(logger.filters)
    try:
        for f in saved:
            logger.removeFilter(f)
        _RecordedFailures.install()
        _RecordedFailures.install()
        assert [type(f) for f in logger.filters] == [_RecordedFailures]
        try:
            raise ImageRejected(Outcome.CORRUPT, "x")
        except ImageRejected:
            ours = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "File", (), sys.exc_info())
        assert not logger.filter(ours)
        try:
            raise ValueError("a bug")
        except ValueError:
            bug = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "File", (), sys.exc_info())
        assert logger.filter(bug)
    finally:
        for f in list(logger.filters):
            logger.removeFilter(f)
        for f in saved:
            logger.addFilter(f)


def test_a_refused_connection_is_not_held_back_by_the_happy_eyeballs_delay():
    """downloader/scrapy_compat.py lowers Twisted's attempt delay (when the handler is made), which
    Scrapy's agent leaves at its default: a dead host's refusal was reported 0.3 s late."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint

    from dataset_spiders.downloader.scrapy_compat import quick_refusals

    saved = HostnameEndpoint._DEFAULT_ATTEMPT_DELAY
    try:
        quick_refusals()
        assert HostnameEndpoint(reactor, b"example.com", 80)._attemptDelay == 0.01
    finally:
        HostnameEndpoint._DEFAULT_ATTEMPT_DELAY = saved


def test_the_connect_limit_reaches_the_agents_endpoint_not_the_whole_timeout():
    """downloader/scrapy_compat.py: Scrapy's agent takes its connect timeout in the private
    ``_ScrapyAgent._get_agent``; ours passes the shorter connect limit there, and only there."""
    from scrapy.core.downloader.handlers.http11 import _load_context_factory_from_settings
    from scrapy.utils.test import get_crawler

    from dataset_spiders.downloader.scrapy_compat import CONNECT_TIMEOUT_META, _ConnectLimitedAgent

    crawler = get_crawler()
    agent = _ConnectLimitedAgent(contextFactory=_load_context_factory_from_settings(crawler), crawler=crawler)
    limited = agent._get_agent(Request("http://example.com/a.jpg", meta={CONNECT_TIMEOUT_META: 2}), 60)
    assert limited._endpointFactory._connectTimeout == 2
    plain = agent._get_agent(Request("http://example.com/a.jpg"), 60)
    assert plain._endpointFactory._connectTimeout == 60
    proxied = agent._get_agent(Request("http://example.com/a.jpg", meta={CONNECT_TIMEOUT_META: 3,
                                                                          "proxy": "http://127.0.0.1:3128"}), 60)
    assert proxied._endpointFactory._connectTimeout == 3  # through a proxy: the hop to the proxy


def test_the_engine_says_it_is_closing_before_it_waits_for_its_downloads():
    """downloader/scrapy_compat.py ``engine_closing``: a Ctrl-C sets ``ExecutionEngine._slot.closing``
    first, then waits for the downloads in progress; the handler cancels those not yet started."""
    import inspect

    from scrapy.core.engine import ExecutionEngine

    from dataset_spiders.downloader.scrapy_compat import engine_closing

    source = inspect.getsource(ExecutionEngine.close_spider_async)
    assert source.index("self._slot.closing") < source.index("await self._slot.close()")

    class Slot:
        closing = None

    class Engine:
        _slot = Slot()

    class Crawler:
        engine = Engine()

    assert not engine_closing(Crawler())
    Slot.closing = object()  # type: ignore[assignment]
    assert engine_closing(Crawler()) and not engine_closing(object())
