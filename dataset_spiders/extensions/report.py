"""The end-of-run summary: how many images ended with each outcome, as the manifest has them."""

from __future__ import annotations

import logging
from typing import Any

from scrapy import signals

from ..core import DatasetCore

logger = logging.getLogger(__name__)


def outcome_counts(stats: dict[str, Any], prefix: str = "outcome/") -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix) and v}


class OutcomeReport:
    """Logs the counts by outcome when the spider closes."""

    def __init__(self, crawler: Any):
        self.crawler = crawler
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Any) -> OutcomeReport:
        return cls(crawler)

    def spider_closed(self, spider: Any, reason: str) -> None:
        stats = self.crawler.stats.get_stats()
        for kind, prefix in (("images", "outcome/"), ("masks", "outcome_mask/")):
            counts = outcome_counts(stats, prefix)
            if counts or kind == "images":
                text = ", ".join(f"{name} {count}" for name, count in counts.items()) or "none tried"
                logger.info("Outcomes (%s): %s", kind, text)
        core = self.crawler.get_extension(DatasetCore)
        if core is not None:
            logger.info("Manifest: %s", core.disk.manifest_path)
