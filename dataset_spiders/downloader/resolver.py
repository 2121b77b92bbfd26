"""Name lookups that never hold the end of a run (``TWISTED_DNS_RESOLVER``).

Scrapy's resolver looks a name up with ``socket.gethostbyname`` in the reactor's thread pool,
and when the reactor stops Twisted joins every thread of that pool. A lookup the run no longer
needs (a candidate of a class that filled up meanwhile, on a host whose name server does not
answer) then held the process after its summary until the system resolver gave up: seconds of
nothing, each time. Here lookups run in a pool of daemon threads of their own (as many as
``REACTOR_THREADPOOL_MAXSIZE``), which the process does not wait for at its exit; the rest (the
cache, ``DNS_TIMEOUT``, the errors a failed lookup gives) is Scrapy's ``CachingThreadedResolver``.
"""

from __future__ import annotations

import threading
from typing import Any

from scrapy.resolver import CachingThreadedResolver
from twisted.python.threadpool import ThreadPool


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class DaemonThreads(ThreadPool):
    """A Twisted thread pool whose threads are daemons: started at once, never stopped or joined."""

    # Twisted types threadFactory as the Thread class; it only calls it, so a function making a Thread does
    threadFactory = staticmethod(_daemon_thread)  # type: ignore[assignment]

    def __init__(self, maxthreads: int):
        super().__init__(minthreads=0, maxthreads=max(1, maxthreads), name="dataset_spiders.dns")
        self.start()


class _WithPool:
    """The reactor as Twisted's ``ThreadedResolver`` uses it ("the reactor the threadpool of
    which will be used" for lookups), but for its thread pool: ours."""

    def __init__(self, reactor: Any, pool: ThreadPool):
        self._reactor = reactor
        self._pool = pool

    def getThreadPool(self) -> ThreadPool:  # Twisted's name
        return self._pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class DaemonThreadResolver(CachingThreadedResolver):
    """``CachingThreadedResolver`` whose lookups run in daemon threads (module docstring)."""

    def __init__(self, reactor: Any, cache_size: int, timeout: float, threads: int = 10):
        # _WithPool stands in for the reactor (all but getThreadPool forwarded): it is not the ReactorBase
        # Scrapy's annotation names
        super().__init__(_WithPool(reactor, DaemonThreads(threads)), cache_size, timeout)  # type: ignore[arg-type]

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> DaemonThreadResolver:
        s = crawler.settings
        cache_size = s.getint("DNSCACHE_SIZE") if s.getbool("DNSCACHE_ENABLED") else 0
        return cls(reactor, cache_size, s.getfloat("DNS_TIMEOUT"), s.getint("REACTOR_THREADPOOL_MAXSIZE"))
