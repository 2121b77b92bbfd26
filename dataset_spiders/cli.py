"""``dataset-spiders``: the console command, from any folder.

``dataset-spiders isic|imagenet [--ARG VALUE]... [-s NAME=VALUE]...`` is ``scrapy crawl`` with the
project's settings wherever it runs (the dataset goes where the user is, or to ``--out-dir``).
Its options come from the spiders' argument models (``params.py``), so ``--help`` and the README
tables say the same; ``--num-images`` and ``--num_images`` are both accepted. ``verify`` and
``report`` have options and help of their own here, then run Scrapy's commands of ours
(``commands/``) with them: their help is not Scrapy's (``--pdb``, ``--profile``), and a wrong
option is one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .secrets import hide_url_passwords

if TYPE_CHECKING:
    from .params import ArgumentModel

SETTINGS_MODULE = "dataset_spiders.settings"
COMMANDS = ("isic", "imagenet", "verify", "report")
EXAMPLES = {
    "isic": ["dataset-spiders isic --num-images 1000 --filter benign",
             "dataset-spiders isic --per-label 50 --layout by_label --out-dir ISIC-balanced",
             "dataset-spiders isic --num-images 200 --query 'age_approx:[20 TO 40]' --segmentation",
             "dataset-spiders isic --dry-run --filter malignant   # how many images match, and their size",
             "dataset-spiders isic --all --filter malignant       # every one, without being asked"],
    "imagenet": ["dataset-spiders imagenet --wnids n01440764,n01443537 --per-class 8",
                 "dataset-spiders imagenet --wnids-file wnids.txt --per-class 100 --layout name_wnid",
                 "dataset-spiders imagenet --urls-file fall11_urls.txt.gz --num-classes 100 --seed 1"],
    "verify": ["dataset-spiders verify ISIC          # exit 0: all good; 1: problems (listed); 2: not a dataset",
               "dataset-spiders verify --fix ISIC    # bad files aside to ISIC/.quarantine; the next crawl refills",
               "dataset-spiders verify ISIC --images-dir /big/Images"],
    "report": ["dataset-spiders report ISIC          # writes ISIC/report.html and prints its path",
               "dataset-spiders report ISIC --images-dir /big/Images"],
}


def spider_models() -> dict[str, type[ArgumentModel]]:
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


def help_text(field: dataclasses.Field[Any]) -> str:
    """The field's meaning, then what it takes (unless its choices, shown as its value, say it)
    and its default: ``how many images to keep; ... (a whole number >= 1, or all; default: all)``."""
    parse = field.metadata["parse"]
    kind = "" if parse.choices else f"{parse.kind}; "
    return f"{field.metadata['help'].replace('`', '')} ({kind}default: {default_text(field)})".replace("%", "%%")


class Parser(argparse.ArgumentParser):
    """argparse, whose error is one line, ``error: isic: argument --num-images/--num_images:
    expected one argument``, and exit 2, as every other refusal of the command (the Python API
    raises DownloadError with that line)."""

    def error(self, message: str, command: str | None = None) -> NoReturn:
        command = command or self.prog.removeprefix("dataset-spiders").strip()
        print(f"error: {f'{command}: ' if command else ''}{hide_url_passwords(message)}", file=sys.stderr, flush=True)
        sys.exit(2)

    def parse_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        """As argparse's, except that an option the command does not know is named with the command
        (``error: verify: unrecognized arguments: --pdb``), not as the tool's."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}", getattr(parsed, "command", None))
        return parsed


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's spellings, then what it takes, once: ``--num-images, --num_images N|all``
    (argparse repeats the value after every spelling). Descriptions and examples as written."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"


def examples(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


def build_parser() -> Parser:
    parser = Parser(
        prog="dataset-spiders", formatter_class=HelpFormatter,
        description="Clean, verified image datasets from the ISIC Archive and ImageNet URL lists: exactly the\n"
                    "number of images asked, each decoded in full before it is kept, no placeholders, no\n"
                    "duplicates, a manifest that says what happened to every image tried, cheap re-runs.",
        epilog="Each command has its own --help: dataset-spiders isic --help.",
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, model in spider_models().items():
        add_spider_command(commands, name, model)
    add_dataset_commands(commands)
    return parser


def version_text() -> str:
    """``dataset-spiders 0.1.0 (Scrapy 2.19.0, Python 3.11.9)``: what a bug report needs."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        scrapy = version("scrapy")
    except PackageNotFoundError:  # (not installed as a distribution: a checkout on the path)
        scrapy = "unknown"
    return f"dataset-spiders {__version__} (Scrapy {scrapy}, Python {sys.version.split()[0]})"


def add_spider_command(commands: Any, name: str, model: type) -> None:
    """``dataset-spiders NAME``: one option per field of the spider's argument model."""
    sub = commands.add_parser(
        name, help=f"download the {'ISIC Archive' if name == 'isic' else 'ImageNet'} images you ask for",
        description=inspect.cleandoc(model.__doc__ or ""), formatter_class=HelpFormatter,
        usage=f"dataset-spiders {name} [--NAME VALUE]... [-s NAME=VALUE]... [-L LEVEL] [--verbose]",
        epilog=f"{examples(name)}\n\nEvery option is also an argument of `scrapy crawl {name} -a NAME=VALUE`.\n"
               "A value starting with - goes attached: --query=-diagnosis_1:Malignant.",
    )
    group = sub.add_argument_group(f"what to download (as `scrapy crawl {name} -a NAME=VALUE`)")
    for field in dataclasses.fields(model):
        names = [opt for n in (field.name, *field.metadata.get("aliases", ())) for opt in option_names(n)]
        flag = isinstance(field.default, bool)
        group.add_argument(*names, dest=field.name, metavar=field.metadata["parse"].metavar,
                           nargs="?" if flag else None, const="true" if flag else None, help=help_text(field))
    add_scrapy_options(sub)


def add_scrapy_options(sub: argparse.ArgumentParser, crawl: bool = True) -> None:
    group = sub.add_argument_group("settings and log")
    group.add_argument("-s", "--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                       help="a Scrapy or dataset-spiders setting, repeatable (docs/settings.md)")
    group.add_argument("-L", "--loglevel", metavar="LEVEL",
                       help="log level: DEBUG, INFO, WARNING, ERROR (default: INFO)")
    if crawl:
        group.add_argument("--verbose", action="store_true",
                           help="Scrapy's own log too (its banner, components, stats)")


DATASET_COMMANDS = {  # name: its line in the tool's help, its usage, its description
    "verify": ("check a dataset folder against its manifest (--fix: let a crawl refill it)",
               "[--fix] [--images-dir FOLDER]... DIR",
               "Check that every image the manifest keeps is there, with the recorded size and sha256,\n"
               "decodes in full and is no known placeholder, and that the image folders hold nothing\n"
               "else. Prints each problem, then a count; exit 0: all good, 1: problems, 2: not a dataset."),
    "report": ("write DIR/report.html, the dataset's report", "[--images-dir FOLDER]... DIR",
               "Write DIR/report.html, one self-contained page of what the dataset holds: what was asked,\n"
               "outcomes, classes or labels, hosts, sizes and a contact sheet; print its path.\n"
               "Exit 2: not a dataset."),
}


def add_dataset_commands(commands: Any) -> None:
    """``verify`` and ``report``: the options of our Scrapy commands, with help of their own."""
    from .commands.verify import add_folder_options

    for name, (summary, usage, description) in DATASET_COMMANDS.items():
        sub = commands.add_parser(name, help=summary, formatter_class=HelpFormatter, description=description,
                                  usage=f"dataset-spiders {name} {usage}", epilog=examples(name))
        sub.add_argument("dir", metavar="DIR", help="the dataset folder (a crawl's --out-dir)")
        if name == "verify":
            sub.add_argument("--fix", action="store_true",
                             help="move bad files aside to DIR/.quarantine and mark them, so the next crawl with "
                                  "the same command fills exactly those gaps (takes the dataset's lock)")
        add_folder_options(sub)
        add_scrapy_options(sub, crawl=False)


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


def dataset_command_argv(args: argparse.Namespace) -> list[str]:
    """The ``scrapy verify|report`` command line the options stand for. Each value is attached
    to its option, and DIR comes last (as ``./-x`` if it starts with ``-``, which Scrapy would
    read as an option): none can become another option."""
    argv = ["scrapy", args.command]
    if getattr(args, "fix", False):
        argv.append("--fix")
    # --images-dir, --descs-dir and --seg-dir are one list to the commands: each named folder
    # outside DIR may be looked at, whatever it holds
    argv += [f"--images-dir={folder}" for folder in args.named]
    argv += [f"--set={setting}" for setting in args.settings]
    if args.loglevel:
        argv.append(f"--loglevel={args.loglevel}")
    argv.append(f"./{args.dir}" if args.dir.startswith("-") else args.dir)
    return argv


def asks_for_everything(spider: str, arguments: dict[str, Any]) -> bool:
    """Whether an ``isic`` run of these arguments would download every matching image without
    saying so: no ``num_images`` (``num_images=all`` says so), no ``per_label``, not ``all``, not
    a dry run (which fetches no image). On the whole archive that is hundreds of thousands of
    images, so the console asks first and the Python API refuses. Arguments that do not parse:
    False (the crawl names what is wrong, as for any run)."""
    from .params import ArgumentError, parse_args
    from .spiders.isic_args import IsicParams

    if spider != "isic":
        return False
    try:
        params = parse_args(IsicParams, arguments)
    except ArgumentError:
        return False
    return arguments.get("num_images") is None and params.per_label is None and not params.all and not params.dry_run


def confirm_everything(parser: Parser, argv: list[str], arguments: dict[str, Any]) -> None:
    """A bare ``dataset-spiders isic``: on a terminal, what the whole selection is (the dry run's
    numbers, from a child) and a question, default no (no: exit 1); elsewhere one line, exit 2,
    as a script cannot answer and should say ``--all``."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        parser.error("no --num-images or --per-label: this run would download every matching image (without "
                     "--filter, --query or --collections, the whole archive); give --all to mean it, or "
                     "--num-images N (--dry-run says how many match)", "isic")
    from .params import parse_args
    from .spiders.isic_args import IsicParams
    from .spiders.preflight import size_text

    whole = measure_everything(argv)
    params = parse_args(IsicParams, arguments)
    count, wanted, expected = whole.get("count"), whole.get("wanted"), whole.get("expected")
    said = f"{count} image(s) match {whole.get('selection')}" if count is not None else (
        f"the API does not say how many images match {whole.get('selection', 'the selection')}")
    about = f" (about {size_text(expected)})" if isinstance(expected, (int, float)) else ""
    into = whole.get("folder") or params.folder("images")
    what = (f"Save the descriptions of all {wanted if count is not None else 'the'} matching records (no images) "
            f"into {params.folder('descs')}" if params.no_images else
            f"Download all {wanted if count is not None else 'the'} images{about} into {into}")
    sys.stderr.write(f"isic: no --num-images or --per-label: {said}.\n{what}? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        print("Nothing downloaded (give --num-images N for fewer, or --all to skip this question).",
              file=sys.stderr, flush=True)
        sys.exit(1)


def measure_everything(argv: list[str]) -> dict[str, Any]:
    """The isic dry run of these options, run as a child (this process's reactor is for the crawl
    itself): its numbers, or {} if it said nothing we can read. A dry run that fails has said
    why on stderr: its exit status is ours. An interrupt stops it (``children.py``)."""
    import json

    from .children import package_env, running
    from .spiders.preflight import DRY_RUN_ENV

    command = [sys.executable, "-m", "dataset_spiders", *argv, "--dry-run", "--loglevel=WARNING"]
    with running(command, package_env({DRY_RUN_ENV: "json"}), capture_stdout=True, stderr=False) as child:
        code = child.wait()
    if code != 0:
        sys.exit(code)
    try:
        found = json.loads("".join(child.stdout).strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return found if isinstance(found, dict) else {}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ["SCRAPY_SETTINGS_MODULE"] = SETTINGS_MODULE  # the project's settings, from any folder
    from .children import end_with_the_parent

    end_with_the_parent()  # (started by the Python API, or by the question of a bare isic)
    parser = build_parser()
    if not argv:
        parser.error(f"give a command: {', '.join(COMMANDS)} (dataset-spiders --help says what each does)")
    args = parser.parse_args(argv)
    if args.command in spider_models():
        model = spider_models()[args.command]
        arguments = {f.name: getattr(args, f.name) for f in dataclasses.fields(model)
                     if getattr(args, f.name) is not None}
        if asks_for_everything(args.command, arguments):
            try:
                confirm_everything(parser, argv, arguments)
            except KeyboardInterrupt:  # at the question, or during the dry run (stopped, waited for)
                print(file=sys.stderr)
                sys.exit(130)
        sys.argv = scrapy_argv(args, model)  # dataset.json records the run as this
    else:
        sys.argv = dataset_command_argv(args)
    from scrapy.cmdline import execute

    execute(sys.argv)


if __name__ == "__main__":
    main()
