"""The crawls from Python: ``download_isic(num_images=100, filter="benign")``.

Each call runs the console command (``cli.py``) in a subprocess: Twisted's reactor cannot be
started twice in one process, and a notebook's asyncio loop is already running. So a script
or a Jupyter notebook may call these any number of times; an interrupted call (KeyboardInterrupt,
SIGTERM) stops its subprocess and waits for it before re-raising (``children.py``), so the next
call finds the dataset free. Keyword arguments are the spider
arguments (``num_images``, ``wnids``...); UPPERCASE ones, or ``settings={...}``, are settings.
The result is read back from the run's own entry in ``dataset.json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import parent_progress as progress
from .children import Terminated, package_env, running
from .cli import asks_for_everything, spider_models
from .dataset.provenance import FOLDER_NAMES, read_resolved
from .secrets import ENV_ARGUMENTS, ENV_SETTINGS, SECRET_ARGUMENTS, SETTING_NAME, secret_setting, url_passwords


class DownloadError(RuntimeError):
    """The run did not do its job; the message is the command's one ``error:`` line. ``summary``
    holds what the run recorded, if it got that far."""

    def __init__(self, message: str, summary: Summary | None = None):
        super().__init__(message)
        self.summary = summary


@dataclass
class Summary:
    """What a run did, from its entry in ``dataset.json``."""

    exit_status: int
    error: str | None
    out_dir: Path
    images_dir: Path | None
    manifest: Path
    report: Path | None
    outcomes: dict[str, int] = field(default_factory=dict)  # this run's images, by outcome
    per_class: dict[str, int] = field(default_factory=dict)  # in the dataset ("" : the isic selection)
    planned: int | None = None  # images the run meant to end with, as far as it knew
    shortfalls: list[str] = field(default_factory=list)  # why a class (or the selection) ended short

    @property
    def images(self) -> int:
        """Images of what was asked that the dataset holds."""
        return sum(self.per_class.values())


def download_isic(*, settings: dict[str, Any] | None = None, echo: bool = True, **arguments: Any) -> Summary:
    """``dataset-spiders isic``: keyword arguments as in its ``--help``; raises DownloadError."""
    return run_spider("isic", arguments, settings, echo)


def download_imagenet(*, settings: dict[str, Any] | None = None, echo: bool = True, **arguments: Any) -> Summary:
    """``dataset-spiders imagenet``: keyword arguments as in its ``--help``; raises DownloadError."""
    return run_spider("imagenet", arguments, settings, echo)


def child_command(spider: str, arguments: dict[str, Any], settings: dict[str, Any] | None
                  ) -> tuple[list[str], dict[str, str]]:
    """The console command these keyword arguments stand for, and what its environment adds.

    Each value is the value of its own option (``--query=-diagnosis_1:Malignant``,
    ``--set=NAME=VALUE``), so none can become an option. No secret is on the command line (any
    user may read it, in ``ps``): the token goes as ``ISIC_TOKEN``, a setting whose name is
    secret or whose value holds a URL's password in ``DATASET_SPIDERS_SETTINGS``, an argument
    holding such a URL in ``DATASET_SPIDERS_ARGUMENTS`` (JSON objects the crawl command reads).
    """
    model = spider_models()[spider]
    names = {n for f in dataclasses.fields(model) for n in (f.name, *f.metadata.get("aliases", ()))}
    argv = [sys.executable, "-m", "dataset_spiders", spider]
    env: dict[str, str] = {}
    private_arguments: dict[str, str] = {}
    private_settings: dict[str, str] = {}
    every = dict(settings or {})
    token = None
    for name, value in arguments.items():
        if name.isupper():
            every[name] = value
        elif name in SECRET_ARGUMENTS and name in names:
            token = _text(name, value)
        elif name in names:
            text = _text(name, value)
            if url_passwords(text):
                private_arguments[name] = text
            else:
                argv.append(f"--{name}={text}")
        else:
            raise DownloadError(f"{spider}: unknown argument {name!r} (known: {', '.join(sorted(names))})")
    for name, value in every.items():
        if not isinstance(name, str) or not SETTING_NAME.fullmatch(name):
            raise DownloadError(f"{spider}: {name!r} is not a setting name (NAME_LIKE_THIS)")
        text = _text(name, value)
        if name == "ISIC_TOKEN":
            token = token if token and token.strip() else text  # the argument wins, as in the spider
        elif secret_setting(name) or url_passwords(text):
            private_settings[name] = text
        else:
            argv.append(f"--set={name}={text}")
    if token is not None and token.strip():
        env["ISIC_TOKEN"] = token
    if private_settings:
        env[ENV_SETTINGS] = json.dumps(private_settings)
    if private_arguments:
        env[ENV_ARGUMENTS] = json.dumps(private_arguments)
    return argv, env


def run_spider(spider: str, arguments: dict[str, Any], settings: dict[str, Any] | None, echo: bool,
               stream: TextIO | None = None) -> Summary:
    argv, private = child_command(spider, arguments, settings)
    if asks_for_everything(spider, {k: _text(k, v) for k, v in arguments.items() if not k.isupper()}):  # as sent
        raise DownloadError(f"{spider}: no num_images or per_label: this call would download every matching image "
                            "(without filter, query or collections, the whole archive); give all=True to mean it, "
                            "or num_images=N (dry_run=True says how many match)")
    try:
        code, error, pid = run_child(argv, private, echo, stream or sys.stderr)
    except Terminated:  # the caller's own SIGTERM handler returned: the call is over all the same
        raise DownloadError(f"{spider}: stopped by SIGTERM") from None
    named = [str(Path(str(v)).absolute()) for k, v in arguments.items() if k in FOLDER_NAMES and v]
    summary = read_summary(out_dir(spider, arguments), pid, code, error, named)
    if code != 0:
        raise DownloadError(error or f"{spider} exited with status {code}", summary)
    if summary is None:
        raise DownloadError(f"{spider}: the run left no entry in dataset.json")
    return summary


def run_child(argv: list[str], private: dict[str, str], echo: bool, out: TextIO) -> tuple[int, str | None, int]:
    """Run the console command ``argv`` (``private``: what its environment adds); its exit
    status, its ``error:`` line and its pid. Its stderr is passed on to ``out`` when ``echo``
    (a notebook's sys.stderr has no file descriptor, so lines are passed on, not the descriptor),
    its progress drawn as a bar where one can be seen (``parent_progress.py``); an interrupt or
    SIGTERM stops it and waits for it before going on (``children.py``)."""
    bar_class = progress.bar_class(out) if echo else None
    env = {k: v for k, v in package_env(private).items()
           if k not in (ENV_SETTINGS, ENV_ARGUMENTS, progress.ENV) or k in private}
    if bar_class is not None:
        env[progress.ENV] = "json"
    view = progress.ParentBar(bar_class, out)
    error = None

    def on_line(line: str) -> None:
        nonlocal error
        numbers = progress.numbers_of(line)
        if numbers is not None:  # (never shown as a line: drawn, or dropped with echo=False)
            if bar_class is not None:
                view.show(numbers)
            return
        if line.startswith("error: "):
            error = line[len("error: "):].strip()
        if echo:
            view.write(line)

    try:
        with running(argv, env, on_line) as child:
            for line in child.stderr_lines():
                on_line(line)
            code = child.wait()
    finally:
        view.close()
    return code, error, child.pid


def out_dir(spider: str, arguments: dict[str, Any]) -> Path:
    model = spider_models()[spider]
    default = next(f.default for f in dataclasses.fields(model) if f.name == "out_dir")
    return Path(str(arguments.get("out_dir") or default)).absolute()


def read_summary(root: Path, pid: int, code: int, error: str | None, named: list[str] | None = None) -> Summary | None:
    """The run of process ``pid`` in ``root/dataset.json``, or None (it stopped before recording)."""
    runs = [r for r in read_resolved(str(root), named or [])[0] if r.get("pid") == pid] if root.is_dir() else []
    if not runs:
        return None
    run = runs[-1]
    folders = run["folders"]
    images = folders.get("images_dir")
    report = root / "report.html"
    return Summary(
        exit_status=code, error=error if code else None, out_dir=root, images_dir=Path(images) if images else None,
        manifest=root / "manifest.jsonl", report=report if report.exists() else None,
        outcomes=dict(run.get("outcomes") or {}), per_class=dict(run.get("in_dataset") or {}),
        planned=run.get("planned"), shortfalls=list(run.get("shortfalls") or []),
    )


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple, set)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if "\0" in text:
        raise DownloadError(f"{name}: a value must not contain a NUL byte")
    return text
