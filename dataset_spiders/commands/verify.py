"""``scrapy verify DIR [--fix]``: re-check a downloaded dataset against its manifest.

Only DIR is looked at, and the folders outside it that this command line names
(``--images-dir`` and the like): a ``dataset.json`` is data, never an instruction to read or
move files elsewhere.
"""

from __future__ import annotations

import argparse
import os
import sys

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from ..dataset.disk import DatasetDisk, FolderError
from ..dataset.lock import DatasetBusy, DatasetLock
from ..dataset.provenance import read_resolved
from ..dataset.verify import Report, fix, refuse_special_files, verify
from ..settings_check import refuse_bad_settings

NAMED_OPTIONS = ("--images-dir", "--descs-dir", "--seg-dir")


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    """The folders outside DIR a command may look at: only those its own command line names."""
    for option in NAMED_OPTIONS:
        parser.add_argument(option, "--" + option[2:].replace("-", "_"), dest="named",
                            action="append", default=[], metavar="FOLDER",
                            help=f"the dataset's {option[2:]} when it lies outside DIR (only named folders "
                                 "outside DIR are ever looked at)")


def outside_note(root: str, skipped: list[str]) -> str | None:
    """One line naming the recorded folders that were not looked at, and how to include them."""
    if not skipped:
        return None
    shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return (f"not looked at: {shown}: outside {root} (or reached through a link leading out of it); "
            "name such a folder on the command line to include it, e.g. --images-dir FOLDER")


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False

    def syntax(self) -> str:
        return "[--fix] [--images-dir FOLDER] DIR"

    def short_desc(self) -> str:
        return "Check that a dataset's files are present, intact, decodable and as the manifest says"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--fix", action="store_true", help="move bad files aside and mark them for re-download")
        add_folder_options(parser)

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give the dataset folder (the crawl's out_dir), e.g. `dataset-spiders verify ISIC`")
        assert self.settings is not None
        refuse_bad_settings(self.settings, ["PLACEHOLDER_DIGESTS"])
        root, named = args[0], list(opts.named)
        try:
            refuse_special_files(root, named)
        except FolderError as exc:  # a FIFO, a device... where a file of ours goes: bad input
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        lock = None
        try:
            if opts.fix:  # --fix moves files and appends to the manifest: one run per dataset
                _, folders = read_resolved(root, named)
                lock = DatasetLock(os.path.abspath(root), folders.usable)
                lock.acquire()
                disk = DatasetDisk(root)
                disk.refuse_symlinks([disk.staging_dir, disk.quarantine_dir])
            report = verify(root, self.settings.getlist("PLACEHOLDER_DIGESTS"), named=named,
                            locked_by_us=lock is not None)
        except (DatasetBusy, FolderError) as exc:
            self._release(lock)
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 1
            return
        except OSError as exc:
            self._release(lock)
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        try:
            self.report(report, opts.fix, root, named)
        finally:
            self._release(lock)

    @staticmethod
    def _release(lock: DatasetLock | None) -> None:
        if lock is not None:
            lock.release()

    def report(self, report: Report, fixing: bool, root: str, named: list[str]) -> None:
        for problem in report.problems:
            print(f"{problem.what}: {problem.path}: {problem.detail}")
        if report.pending:
            print(f"pending: {len(report.pending)} valid image(s) not yet in the manifest (a crawl is running)")
        note = outside_note(root, report.skipped)
        if note:
            print(note)
        if report.not_read:
            print(f"not read: {report.not_read} kept image(s) whose folder leads out of {root} through a link; "
                  "name that folder on the command line to check them")
        counts = ", ".join(f"{what} {n}" for what, n in sorted(_count(report).items()))
        print(f"checked {report.checked} image(s) in {len(report.per_group)} folder(s): "
              + (f"{len(report.problems)} problem(s): {counts}" if report.problems else "all good"))
        if report.problems and fixing:
            done = fix(root, report, named)
            left = len(report.problems) - done
            print(f"fixed: {done} moved aside to .quarantine and marked; the next crawl fills the gaps"
                  + (f"; {left} could not be moved (the log says why)" if left else ""))
        self.exitcode = 0 if report.ok else 1


def _count(report: Report) -> dict[str, int]:
    counts: dict[str, int] = {}
    for problem in report.problems:
        counts[problem.what] = counts.get(problem.what, 0) + 1
    return counts
