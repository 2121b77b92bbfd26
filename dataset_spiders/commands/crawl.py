"""``scrapy crawl``, with one-line errors and an exit status that tells whether the run did its job.

Scrapy's own command prints a traceback when a spider argument is wrong and exits 0 after
a spider closes itself on an error. Ours checks the arguments before Scrapy starts (one
line, exit 2) and exits 1 when the spider recorded a fatal error.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from scrapy.exceptions import UsageError
from scrapy.spiderloader import get_spider_loader

from ..dataset import DatasetCore
from ..logs import quiet_scrapy
from ..params import ArgumentError, parse_args
from ..secrets import protect, scrub, take_environment
from ..settings_check import refuse_bad_settings


def _fail(message: str, code: int) -> NoReturn:
    print(f"error: {scrub(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


class Command(ScrapyCrawlCommand):
    def long_desc(self) -> str:
        return ("Run a spider (isic, imagenet). Its arguments, -a NAME=VALUE: `scrapy crawl SPIDER -a help=1` "
                "lists every one with its meaning and default (as does `dataset-spiders SPIDER --help`).")

    def process_options(self, args: list[str], opts: Any) -> None:
        super().process_options(args, opts)
        quiet_scrapy()  # before the crawler process logs its banner
        refuse_bad_settings(self.settings)  # -s and -L applied: before the crawler is made, or any folder
        if len(args) != 1:
            raise UsageError("give exactly one spider name, e.g. `scrapy crawl isic`")
        assert self.settings is not None
        problem = take_environment(self.settings, opts.spargs)  # what the Python API passed privately
        protect(self.settings, opts.spargs)  # no token or password in the log or an `error:` line from here on
        if problem:
            _fail(problem, 2)
        loader = get_spider_loader(self.settings)
        try:
            spider_cls = loader.load(args[0])
        except KeyError:
            _fail(f"no spider named {args[0]!r} (there are: {', '.join(sorted(loader.list()))})", 2)
        # Scrapy took the command's name out of sys.argv; dataset.json records the whole line
        self.settings.set("DATASET_COMMAND_LINE", ["scrapy", "crawl", *sys.argv[1:]], priority="command")
        model = getattr(spider_cls, "Params", None)
        if model is not None and "help" in opts.spargs:  # `-a help=1`: every argument, its meaning, its default
            from ..cli import build_parser

            build_parser().parse_args([args[0], "--help"])  # prints, and exits 0
        if model is not None:
            try:
                parse_args(model, opts.spargs)
            except ArgumentError as exc:
                _fail(f"{args[0]}: {exc}", 2)

    def run(self, args: list[str], opts: Any) -> None:
        assert self.crawler_process
        crawler = self._create_crawler(args[0])
        self.crawler_process.crawl(crawler, **opts.spargs)
        self.crawler_process.start()
        if self.crawler_process.bootstrap_failed:
            self.exitcode = 1
        try:
            core = crawler.get_extension(DatasetCore)
        except RuntimeError:  # the crawl did not get as far as building its extensions
            core = None
        fatal = core.exit_status()[1] if core is not None else None  # (the reason, when the status is 1)
        if fatal:
            print(f"error: {scrub(fatal)}", file=sys.stderr, flush=True)
            self.exitcode = 1
