"""``scrapy verify DIR [--fix]``: re-check a downloaded dataset against its manifest."""

from __future__ import annotations

import argparse
import os
import sys

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from ..core.disk import FolderError
from ..core.lock import DatasetBusy, DatasetLock
from ..settings_check import refuse_bad_settings
from ..verify import Report, dataset_folders, fix, verify


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False

    def syntax(self) -> str:
        return "[--fix] DIR"

    def short_desc(self) -> str:
        return "Check that a dataset's files are present, intact, decodable and as the manifest says"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--fix", action="store_true", help="move bad files aside and mark them for re-download")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give the dataset folder (the crawl's out_dir), e.g. `scrapy verify Data`")
        assert self.settings is not None
        refuse_bad_settings(self.settings, ["PLACEHOLDER_DIGESTS"])
        lock = None
        try:
            if opts.fix:  # --fix moves files and appends to the manifest: one run per dataset
                folders, _, _ = dataset_folders(args[0])
                lock = DatasetLock(os.path.abspath(args[0]), folders)
                lock.acquire()
            report = verify(args[0], self.settings.getlist("PLACEHOLDER_DIGESTS"))
        except DatasetBusy as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 1
            return
        except (OSError, FolderError) as exc:  # no manifest; a FIFO, a device... where a file of ours goes
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        try:
            self.report(report, opts.fix, args[0])
        finally:
            if lock is not None:
                lock.release()

    def report(self, report: Report, fixing: bool, root: str) -> None:
        for problem in report.problems:
            print(f"{problem.what}: {problem.path}: {problem.detail}")
        if report.pending:
            print(f"pending: {len(report.pending)} valid image(s) not yet in the manifest (a crawl is running)")
        counts = ", ".join(f"{what} {n}" for what, n in sorted(_count(report).items()))
        print(f"checked {report.checked} image(s) in {len(report.per_group)} folder(s): "
              + (f"{len(report.problems)} problem(s): {counts}" if report.problems else "all good"))
        if report.problems and fixing:
            moved = fix(root, report)
            print(f"fixed: {moved} moved aside to .quarantine and marked; the next crawl fills the gaps")
        self.exitcode = 0 if report.ok else 1


def _count(report: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in report.problems:  # type: ignore[attr-defined]
        counts[problem.what] = counts.get(problem.what, 0) + 1
    return counts
