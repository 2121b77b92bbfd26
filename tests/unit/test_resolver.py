"""Name lookups in daemon threads (downloader/resolver.py): the pool's threads are daemons, the resolver is
Scrapy's with that pool, sized and timed by the settings."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from scrapy.resolver import CachingThreadedResolver
from scrapy.settings import Settings

from dataset_spiders import settings as project_settings
from dataset_spiders.downloader.resolver import DaemonThreadResolver, DaemonThreads


def test_the_pools_threads_are_daemons_the_exit_does_not_wait_for():
    pool = DaemonThreads(2)
    seen, done = [], threading.Event()

    def deliver(ok: bool, result: object) -> None:
        seen.append((ok, result))
        done.set()

    pool.callInThreadWithCallback(deliver, lambda: threading.current_thread().daemon)
    assert done.wait(5) and seen == [(True, True)]


def test_the_resolver_is_scrapys_with_its_own_pool_sized_and_timed_by_the_settings():
    installed = []
    reactor = SimpleNamespace(installResolver=installed.append)
    settings = Settings()
    settings.setmodule(project_settings)
    settings.setdict({"REACTOR_THREADPOOL_MAXSIZE": 7, "DNS_TIMEOUT": 4}, priority="cmdline")
    resolver = DaemonThreadResolver.from_crawler(SimpleNamespace(settings=settings), reactor)
    assert isinstance(resolver, CachingThreadedResolver) and resolver.timeout == 4
    pool = resolver.reactor.getThreadPool()
    assert isinstance(pool, DaemonThreads) and pool.max == 7
    resolver.install_on_reactor()  # the rest of the reactor is the reactor's
    assert installed == [resolver]
    assert settings["TWISTED_DNS_RESOLVER"] == "dataset_spiders.downloader.resolver.DaemonThreadResolver"
