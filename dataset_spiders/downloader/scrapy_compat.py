"""Where we reach into Scrapy's private download machinery, in one place. Each touch is pinned by
a test of its behaviour in ``tests/unit/test_scrapy_internals.py``, which fails first when an
upgrade of Scrapy changes it.

- **A connect limit of its own.** Scrapy 2.19's HTTP/1.1 handler uses ``DOWNLOAD_TIMEOUT`` (or
  ``meta['download_timeout']``) both as the agent's ``connectTimeout`` and as the timer of the
  whole request, so a host that drops connection attempts costs the whole image timeout. The
  agent takes the connect limit in its private ``_ScrapyAgent._get_agent``; the handler below
  builds its agent the way ``HTTP11DownloadHandler.download_request`` does, with that one method
  overridden, when a request carries ``meta['download_connect_timeout']``.
- **Whether the engine is closing.** After a Ctrl-C the engine waits for every download it has
  in progress (``ExecutionEngine._slot.closing`` is set at once, before that wait), and the
  image stage's downloads waiting for a slot would all be made: ``engine_closing`` lets the
  handler cancel those not yet started.
- **A refused connection known at once.** Twisted's ``HostnameEndpoint``, which Scrapy's agent
  uses, reports a refusal only when its next "happy eyeballs" attempt would start, 0.3 s later:
  a dead image host cost 0.3 s per try. ``quick_refusals`` (called when the handler is made,
  never on import) starts the attempts to a host's next address 10 ms apart; no public setting
  reaches it through Scrapy's agent.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler, _ScrapyAgent
from scrapy.exceptions import ResponseDataLossError
from scrapy.http import Response
from scrapy.utils._download_handlers import get_dataloss_msg, wrap_twisted_exceptions
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.endpoints import HostnameEndpoint

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_META = "download_connect_timeout"  # seconds to connect (after DNS), per attempt


class _ConnectLimitedAgent(_ScrapyAgent):
    """Scrapy's agent, connecting within ``meta['download_connect_timeout']`` when it is shorter
    than the request's whole timeout."""

    def _get_agent(self, request: Request, timeout: float) -> Any:
        limit = request.meta.get(CONNECT_TIMEOUT_META)
        return super()._get_agent(request, min(timeout, limit) if limit else timeout)


class ConnectLimitedDownloadHandler(HTTP11DownloadHandler):
    """``HTTP11DownloadHandler`` that honours ``meta['download_connect_timeout']``."""

    async def download_request(self, request: Request) -> Response:
        if not request.meta.get(CONNECT_TIMEOUT_META):
            return await super().download_request(request)
        agent = _ConnectLimitedAgent(
            contextFactory=self._contextFactory,
            bindAddress=self._bind_address,
            pool=self._pool,
            maxsize=self._default_maxsize,
            warnsize=self._default_warnsize,
            fail_on_dataloss=self._fail_on_dataloss,
            crawler=self._crawler,
            tls_verbose_logging=self._tls_verbose_logging,
        )
        try:
            with wrap_twisted_exceptions():
                return await maybe_deferred_to_future(agent.download_request(request))
        except ResponseDataLossError:
            if not self._fail_on_dataloss_warned:
                logger.warning(get_dataloss_msg(request.url))
                self._fail_on_dataloss_warned = True
            raise


def engine_closing(crawler: Any) -> bool:
    """Whether the crawl's engine has begun closing its spider (a Ctrl-C, a close request)."""
    engine = getattr(crawler, "engine", None)
    slot = getattr(engine, "_slot", None)
    return slot is not None and slot.closing is not None


def quick_refusals() -> None:
    """Connection attempts to a host's next address 10 ms apart, not 0.3 s (module docstring)."""
    HostnameEndpoint._DEFAULT_ATTEMPT_DELAY = 0.01
