"""A quiet, honest log: Scrapy's banner, component lists, periodic page counts and stats dump are
DEBUG records here (``-L DEBUG`` or ``--verbose`` brings them back); its warnings and errors stay.

Filters on the emitting loggers run before any handler's level check, so a record made DEBUG
here is dropped by an INFO handler like any other DEBUG record.
"""

from __future__ import annotations

import logging

#: Loggers whose INFO records are Scrapy's chatter, not news about the dataset.
CHATTY = (
    "scrapy.utils.log",  # "Scrapy 2.19.0 started", versions, the reactor
    "scrapy.crawler",  # "Overridden settings"
    "scrapy.middleware",  # "Enabled extensions / middlewares / item pipelines"
    "scrapy.addons",  # "Enabled addons"
    "scrapy.core.engine",  # "Spider opened", "Closing spider", "Spider closed"
    "scrapy.extensions.logstats",  # "Crawled N pages (at N pages/min)": our progress says more
    "scrapy.extensions.telnet",
    "scrapy.statscollectors",  # "Dumping Scrapy stats": the summary says what matters
)


class DemoteToDebug(logging.Filter):
    """INFO becomes DEBUG; other levels pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_FILTER = DemoteToDebug()


def quiet_scrapy() -> None:
    """Install the filter (idempotent)."""
    for name in CHATTY:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
