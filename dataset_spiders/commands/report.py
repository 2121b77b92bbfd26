"""``scrapy report DIR``: write DIR/report.html, a self-contained page of the dataset, and print its path."""

from __future__ import annotations

import argparse
import sys

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from ..dataset.disk import FolderError
from ..report import NotADataset, write_report
from ..settings_check import OURS, refuse_bad_settings
from .verify import add_folder_options


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False

    def syntax(self) -> str:
        return "[--images-dir FOLDER] DIR"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        add_folder_options(parser)

    def short_desc(self) -> str:
        return "Write DIR/report.html: what a dataset holds, what failed and why, with a contact sheet"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give the dataset folder (the crawl's out_dir), e.g. `dataset-spiders report ISIC`")
        assert self.settings is not None
        refuse_bad_settings(self.settings, [name for name in OURS if name.startswith("REPORT_THUMBNAIL")])
        try:
            path = write_report(
                args[0],
                thumbnails_per_group=self.settings.getint("REPORT_THUMBNAILS_PER_GROUP", 12),
                thumbnails_max=self.settings.getint("REPORT_THUMBNAILS_MAX", 600),
                thumbnail_size=self.settings.getint("REPORT_THUMBNAIL_SIZE", 96),
                named=opts.named,
            )
        except (NotADataset, FolderError) as exc:  # no manifest.jsonl; a FIFO, a device... where a file of ours goes
            print(f"error: {exc}", file=sys.stderr)
            self.exitcode = 2
            return
        except OSError as exc:  # unreadable, or the page cannot be written (read-only folder, full disk)
            print(f"error: no report for {args[0]}: {exc}", file=sys.stderr)
            self.exitcode = 1
            return
        print(path)
