"""``dataset-spiders``: the console command, from any folder.

``dataset-spiders isic|imagenet [--ARG VALUE]... [-s NAME=VALUE]...`` is ``scrapy crawl`` with the
project's settings wherever it runs (the dataset goes where the user is, or to ``--out-dir``).
Its options come from the spiders' argument models (``params.py``), so ``--help`` and the README
tables say the same; ``--num-images`` and ``--num_images`` are both accepted. ``verify`` and
``report`` are Scrapy's commands of ours, given their arguments as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .secrets import hide_url_passwords

SETTINGS_MODULE = "dataset_spiders.settings"
PASSED_THROUGH = {"verify": "check a dataset folder against its manifest (`--fix` to let a crawl refill it)",
                  "report": "write DIR/report.html, the dataset's report"}


def spider_models() -> dict[str, type]:
    """Each spider's argument model, by spider name."""
    from .spiders.imagenet_args import ImagenetParams
    from .spiders.isic_args import IsicParams

    return {"isic": IsicParams, "imagenet": ImagenetParams}


def option_names(name: str) -> list[str]:
    """``--num-images`` and ``--num_images`` for ``num_images``."""
    return list(dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"]))


def default_text(field: dataclasses.Field[Any]) -> str:
    shown = field.metadata.get("shown")
    if shown:
        return str(shown).replace("`", "")
    value = field.default
    return str(value).lower() if isinstance(value, bool) else str(value)


class Parser(argparse.ArgumentParser):
    """argparse, whose error is one line, ``error: isic: argument --num-images/--num_images:
    expected one argument``, and exit 2, as every other refusal of the command (the Python API
    raises DownloadError with that line)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("dataset-spiders").strip()
        print(f"error: {f'{command}: ' if command else ''}{hide_url_passwords(message)}", file=sys.stderr, flush=True)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dataset-spiders",
        description="Clean, verified image datasets from the ISIC Archive and ImageNet URL lists.",
        epilog="Each command has its own --help. Scrapy settings: -s NAME=VALUE (repeatable).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{isic,imagenet,verify,report}")
    for name, model in spider_models().items():
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        sub = commands.add_parser(name, help=f"download the {name} dataset", description=doc or None,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        for field in dataclasses.fields(model):
            names = [opt for n in (field.name, *field.metadata.get("aliases", ())) for opt in option_names(n)]
            flag = isinstance(field.default, bool)
            help_text = f"{field.metadata['help'].replace('`', '')} (default: {default_text(field)})"
            sub.add_argument(*names, dest=field.name, metavar="VALUE" if not flag else "BOOL",
                             nargs="?" if flag else None, const="true" if flag else None, help=help_text)
        add_scrapy_options(sub)
    for name, text in PASSED_THROUGH.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def add_scrapy_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-s", "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                     help="a Scrapy or dataset-spiders setting (README: Settings worth tuning)")
    sub.add_argument("-L", "--loglevel", metavar="LEVEL", help="log level: DEBUG, INFO (default), WARNING, ERROR")
    sub.add_argument("--verbose", action="store_true", help="Scrapy's own log too (its banner, components, stats)")


def scrapy_argv(args: argparse.Namespace, model: type) -> list[str]:
    """The ``scrapy crawl`` command line the options stand for."""
    argv = ["scrapy", "crawl", args.command]
    for field in dataclasses.fields(model):
        value = getattr(args, field.name)
        if value is not None:
            argv += ["-a", f"{field.name}={value}"]
    for setting in args.settings:
        argv += ["-s", setting]
    if args.verbose:
        argv += ["-s", "DATASET_VERBOSE_LOG=true"]
    if args.loglevel:
        argv += ["-L", args.loglevel]
    elif args.verbose:
        argv += ["-L", "DEBUG"]
    return argv


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ["SCRAPY_SETTINGS_MODULE"] = SETTINGS_MODULE  # the project's settings, from any folder
    from scrapy.cmdline import execute

    if argv and argv[0] in PASSED_THROUGH:
        execute(["scrapy", *argv])
        return
    args = build_parser().parse_args(argv)
    sys.argv = scrapy_argv(args, spider_models()[args.command])  # dataset.json records the run as this
    execute(sys.argv)


if __name__ == "__main__":
    main()
