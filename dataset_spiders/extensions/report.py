"""The end of every run: ``report.html`` in the dataset folder, and the summary on stderr.

The summary is printed, not logged, so it shows at any log level (``-L WARNING`` too): how many
images the dataset holds of what was asked, the outcomes of this run, the classes that ended
short and why, and where the manifest and the report are. The ``error: …`` line, if the run
failed, follows it (the crawl command prints it last).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from .. import signals as our_signals
from ..dataset import DatasetCore
from ..outcomes import KEPT_OUTCOMES

logger = logging.getLogger(__name__)

SHORT_SHOWN = 10  # classes short named in the summary; the rest are counted
HOSTS_SHOWN = 5  # hosts down named in the summary


def outcome_counts(stats: dict[str, Any], prefix: str = "outcome/") -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in sorted(stats.items()) if k.startswith(prefix) and v}


class RunReport:
    """Writes report.html (``REPORT_HTML``) and prints the summary when the dataset is finished."""

    def __init__(self, crawler: Any, stream: TextIO | None = None):
        self.crawler = crawler
        self.stream = stream
        self.html = crawler.settings.getbool("REPORT_HTML", True)
        self.started = time.monotonic()
        crawler.signals.connect(self.finished, signal=our_signals.dataset_finished)

    @classmethod
    def from_crawler(cls, crawler: Any) -> RunReport:
        return cls(crawler)

    def finished(self, core: DatasetCore) -> None:
        report = None
        if self.html and not core.untouched:
            report = self.write_html(core)
        stream = self.stream or sys.stderr
        stream.write("".join(f"{line}\n" for line in self.summary(core, report)))
        stream.flush()

    def write_html(self, core: DatasetCore) -> str | None:
        try:
            from ..report import write_report

            s = self.crawler.settings
            return str(write_report(core.disk.root, thumbnails_per_group=s.getint("REPORT_THUMBNAILS_PER_GROUP", 12),
                                    thumbnails_max=s.getint("REPORT_THUMBNAILS_MAX", 600),
                                    thumbnail_size=s.getint("REPORT_THUMBNAIL_SIZE", 96),
                                    named=core.disk.folders[1:]))  # this run's own folders
        except Exception as exc:  # the report is a view of the dataset: never a reason to fail the run
            logger.warning("Could not write report.html: %s: %s", type(exc).__name__, exc)
            logger.debug("report.html", exc_info=True)
            return None

    def summary(self, core: DatasetCore, report: str | None) -> list[str]:
        stats = self.crawler.stats.get_stats()
        counts = outcome_counts(stats)
        if core.untouched:
            return ["Summary: nothing was downloaded; the folders this run had made are removed"]
        target = core.quota.target
        planned = target * (core.plan.groups or 1) if target is not None else core.plan.images
        if target is not None:
            held = sum(min(n, target) for n in core.quota.kept.values())
        else:
            held = sum(counts.get(o, 0) for o in KEPT_OUTCOMES)
        asked = f" of the {planned} asked for" if planned is not None else ""
        elapsed = time.monotonic() - self.started
        now = counts.get("kept", 0)
        # already there: what the dataset held of it before this run (found in class folders, or present)
        lines = [f"Summary: {held} image(s) in the dataset{asked} ({now} downloaded now, "
                 f"{max(0, held - now)} already there) in {elapsed:.0f} s"]
        tried = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append("Outcomes (images): " + (tried or ("none tried: the dataset already holds what was asked"
                                                        if held and planned is not None and held >= planned
                                                        else "none tried")))
        masks = outcome_counts(stats, "outcome_mask/")
        if masks:
            lines.append("Outcomes (masks): " + ", ".join(f"{k} {v}" for k, v in masks.items()))
        lines += [f"Note: {note}" for note in core.notes]
        down = core.hosts.ever_down()
        if down:
            shown = "; ".join(f"{host} ({cost} candidate(s) not asked)" for host, cost, _ in down[:HOSTS_SHOWN])
            more = f"; and {len(down) - HOSTS_SHOWN} more (see the report)" if len(down) > HOSTS_SHOWN else ""
            lines.append(f"Hosts down: {len(down)}: {shown}{more}; a re-run tries their candidates again")
        for why in core.shortfalls[:SHORT_SHOWN]:
            lines.append(f"Short: {why}")
        if len(core.shortfalls) > SHORT_SHOWN:
            lines.append(f"Short: … and {len(core.shortfalls) - SHORT_SHOWN} more (see the report)")
        lines.append(f"Manifest: {core.disk.manifest_path}")
        if report:
            lines.append(f"Report: {report}")
        return lines
