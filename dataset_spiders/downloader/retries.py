"""Retries that honour ``Retry-After``: a 429 or 503 pauses that host only, for as long as
it asks (capped by ``RETRY_AFTER_MAX``), while every other host keeps downloading. A 429 or 503
that does not say how long backs that host off exponentially, with jitter
(``RETRY_BACKOFF_BASE`` x 2^n, at most ``RETRY_BACKOFF_MAX``), reset by its next success.

Scrapy's RetryMiddleware retries at once and ignores the header; this subclass keeps its
bounded retries and its settings and adds the wait, by holding the host's download slot.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from typing import Any

from scrapy import Request
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.http import Response
from scrapy.utils.asyncio import call_later

from ..dataset import DatasetCore
from ..dataset.hosts import HostHealth

logger = logging.getLogger(__name__)

PAUSE_STATUSES = frozenset({429, 503})
RATE_LIMITED_META = "rate_limited_for"  # set on a request given up for an absurd Retry-After
RETRY_LATER_META = "dataset_retry_later"  # a failed connection is not retried here: the spider retries it later


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or an HTTP-date), or None."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if re.fullmatch(r"[0-9]{1,10}", text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryAfterMiddleware(RetryMiddleware):
    """RetryMiddleware plus a per-host pause on 429/503 with ``Retry-After``."""

    def __init__(self, settings: Any):
        super().__init__(settings)
        self.max_wait = settings.getfloat("RETRY_AFTER_MAX")
        self.backoff_base = settings.getfloat("RETRY_BACKOFF_BASE")
        self.backoff_max = settings.getfloat("RETRY_BACKOFF_MAX")
        self._paused_until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}  # host slot -> 429/503s without Retry-After since its last success
        self.health: HostHealth | None = None  # the crawl's host health (from_crawler), told of each pause

    @classmethod
    def from_crawler(cls, crawler: Any) -> RetryAfterMiddleware:
        middleware = super().from_crawler(crawler)
        core = crawler.get_extension(DatasetCore)  # extensions are built before the downloader
        middleware.health = core.hosts if core is not None else None
        return middleware

    def process_response(self, request: Request, response: Response, spider: Any = None) -> Request | Response:
        if response.status in PAUSE_STATUSES and not request.meta.get("dont_retry"):
            wait = parse_retry_after(response.headers.get(b"Retry-After"))
            if wait is not None and wait > self.max_wait:
                # Not worth stalling for: the host is paused for the cap, this request gives up.
                self.crawler.stats.inc_value("retry_after/capped")
                logger.warning("%s asked to wait %.0f s (over RETRY_AFTER_MAX); giving up on it", response.url, wait)
                self.pause_host(request, self.max_wait)
                request.meta[RATE_LIMITED_META] = wait
                return response
            if wait is not None:
                self.pause_host(request, wait)
            elif self.backoff_base > 0:
                key = self.crawler.engine.downloader.get_slot_key(request)
                strikes = self._strikes[key] = self._strikes.get(key, 0) + 1
                backoff = min(self.backoff_max, self.backoff_base * 2 ** (strikes - 1)) * random.uniform(0.5, 1.0)
                self.crawler.stats.inc_value("retry_after/backoff")
                self.pause_host(request, backoff, "no Retry-After: backing off")
        elif response.status < 400 and self._strikes:
            self._strikes.pop(self.crawler.engine.downloader.get_slot_key(request), None)
        return super().process_response(request, response)

    def process_exception(self, request: Request, exception: Exception, spider: Any = None) -> Any:
        """A request whose spider retries failed connections itself, behind the other candidates
        of its class (the host may be down by then: then it is not asked at all), is not retried
        here, at once, in front of them."""
        if request.meta.get(RETRY_LATER_META):
            return None
        return super().process_exception(request, exception)

    def pause_host(self, request: Request, seconds: float, why: str = "Retry-After") -> None:
        """Hold the request's download slot for ``seconds``: queued requests wait, others go on."""
        downloader = self.crawler.engine.downloader
        key = downloader.get_slot_key(request)
        slot = downloader.slots.get(key)
        if slot is None or seconds <= 0:
            return
        until = time.monotonic() + seconds
        if until <= self._paused_until.get(key, 0):
            return
        self._paused_until[key] = until
        if self.health is not None:
            self.health.paused(key, until, why)  # progress says what a stalled run waits on
        if slot.latercall:
            slot.latercall.cancel()
        # The downloader holds a slot's queue while ``latercall`` is set, and calls
        # ``_latercall`` to release it: the same mechanism DOWNLOAD_DELAY uses.
        slot.latercall = call_later(seconds, downloader._latercall, slot)
        self.crawler.stats.inc_value("retry_after/paused")
        logger.info("Pausing %s for %.1f s (%s)", key, seconds, why)
