"""Progress on stderr while a crawl runs: a live bar on a terminal, a plain line every few seconds
elsewhere (CI, a log file), never on stdout (so piping works).

It reads what the dataset core and Scrapy's stats already count: images in the dataset against
the plan, failures so far, bytes received, and (imagenet) classes done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Any, TextIO

from scrapy import signals
from scrapy.exceptions import NotConfigured

from ..core import DatasetCore
from ..outcomes import KEPT_OUTCOMES, Outcome

logger = logging.getLogger(__name__)

NOT_FAILURES = frozenset({*KEPT_OUTCOMES, Outcome.SURPLUS})
MB = 1 << 20


class Progress:
    """How far the run is, every ``PROGRESS_INTERVAL`` seconds (the bar: a few times a second)."""

    def __init__(self, crawler: Any, stream: TextIO | None = None):
        s = crawler.settings
        mode = str(s.get("PROGRESS", "auto")).lower()
        if mode in ("off", "false", "0", "none"):
            raise NotConfigured("PROGRESS is off")
        self.stream = stream or sys.stderr
        self.bar_wanted = mode == "bar" or (mode == "auto" and self.stream.isatty())
        self.interval = max(0.2, s.getfloat("PROGRESS_INTERVAL"))
        self.crawler = crawler
        self.core: DatasetCore | None = None
        self.task: asyncio.Task[None] | None = None
        self.bar: Any = None
        self.started = time.monotonic()
        self.last = (self.started, 0, 0)  # time, images in the dataset, bytes received
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Any) -> Progress:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        self.core = self.crawler.get_extension(DatasetCore)
        if self.core is None:
            return
        self.started = time.monotonic()
        self.last = (self.started, 0, 0)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def spider_closed(self, spider: Any) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.bar is not None:
            self.update_bar()
            self.bar.close()
            self.bar = None

    async def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(0.25 if self.bar_wanted else self.interval)
                try:
                    if self.bar_wanted:
                        self.update_bar()
                    else:
                        self.stream.write(self.line() + "\n")
                        self.stream.flush()
                except Exception:  # progress is a view: never a reason to stop the run, but say why it went
                    logger.warning("Progress display stopped", exc_info=True)
                    return

    # --- what is shown --------------------------------------------------------------------------

    def numbers(self) -> dict[str, Any]:
        """Images in the dataset, the plan, failures, bytes, classes full of classes planned."""
        core, stats = self.core, self.crawler.stats
        assert core is not None
        counts = {k[len("outcome/"):]: v for k, v in stats.get_stats().items() if k.startswith("outcome/")}
        kept = sum(core.quota.kept.values()) if core.quota.target is not None else sum(
            counts.get(o, 0) for o in KEPT_OUTCOMES)
        target = core.plan.images
        return {
            "kept": min(kept, target) if target is not None else kept,
            "target": target,
            "failed": sum(v for k, v in counts.items() if k not in NOT_FAILURES),
            "bytes": stats.get_value("downloader/response_bytes", 0) or 0,
            "groups_done": sum(1 for n in core.quota.kept.values() if core.quota.target and n >= core.quota.target),
            "groups": core.plan.groups,
            "hosts_down": len(core.hosts.down_hosts()),
        }

    def rates(self, n: dict[str, Any]) -> tuple[float, float]:
        """Images per second and bytes per second since the last look (the whole run if none)."""
        now = time.monotonic()
        then, kept, received = self.last
        if now - then < 1:
            then, kept, received = self.started, 0, 0
        elapsed = max(now - then, 1e-6)
        self.last = (now, n["kept"], n["bytes"])
        return max(0.0, (n["kept"] - kept) / elapsed), max(0.0, (n["bytes"] - received) / elapsed)

    def line(self) -> str:
        n = self.numbers()
        per_s, bytes_s = self.rates(n)
        of = f"/{n['target']}" if n["target"] is not None else ""
        parts = [f"Progress: {n['kept']}{of} images", f"{n['failed']} failed",
                 f"{n['bytes'] / MB:.1f} MB at {bytes_s / MB:.2f} MB/s"]
        if n["groups"]:
            parts.append(f"classes {n['groups_done']}/{n['groups']}")
        if n["hosts_down"]:
            parts.append(f"{n['hosts_down']} host(s) down")
        if n["target"] is not None and per_s > 0 and n["kept"] < n["target"]:
            parts.append(f"ETA {format_seconds((n['target'] - n['kept']) / per_s)}")
        return ", ".join(parts)

    def update_bar(self) -> None:
        n = self.numbers()
        if self.bar is None:
            from tqdm import tqdm  # only on a terminal

            # a terminal that says it is 0 by 0 (a new pseudo-terminal) would show nothing: 100 by 24
            width, height = terminal_size(self.stream)
            self.bar = tqdm(total=n["target"], unit="img", file=self.stream, dynamic_ncols=bool(width),
                            ncols=None if width else 100, nrows=None if height else 24, leave=True,
                            desc="images", smoothing=0.1)
        if n["target"] != self.bar.total:
            self.bar.total = n["target"]
        self.bar.n = n["kept"]
        classes = f" classes {n['groups_done']}/{n['groups']}" if n["groups"] else ""
        classes += f", {n['hosts_down']} host(s) down" if n["hosts_down"] else ""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.bar.set_postfix_str(f"{n['failed']} failed, {n['bytes'] / MB:.1f} MB, "
                                 f"{n['bytes'] / MB / elapsed:.2f} MB/s{classes}", refresh=False)
        self.bar.refresh()


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 0, 0
    return size.columns, size.lines
