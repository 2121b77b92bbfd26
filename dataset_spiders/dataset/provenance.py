"""``dataset.json``: where a dataset came from, one entry per run, appended, written atomically.

Each run records its command and arguments, what it selected and its target, the sources,
the folders, the versions of the software, its start and end (and how many seconds it took) and
its exit status. ``verify``
reads it back for what the manifest does not say: where the image folders are and how many
images an ImageNet class may hold. A run with no end was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .. import __version__
from ..secrets import redacted_command, scrubbed
from .files import STAGING_DIR, atomic_write, open_regular

logger = logging.getLogger(__name__)

NAME = "dataset.json"
MAX_SIZE = 64 << 20  # a dataset.json larger than this is not ours


class Unreadable(ValueError):
    """dataset.json is there but is not ours to read (hand-edited, damaged, foreign)."""


def read_runs(root: str, strict: bool = False) -> list[dict[str, Any]]:
    """The runs recorded in ``root/dataset.json`` (only well-formed entries); [] when none.
    An unreadable file is a warning and [] (with ``strict``, Unreadable)."""
    path = os.path.join(root, NAME)
    try:
        if os.path.islink(path) or os.path.getsize(path) > MAX_SIZE:
            raise ValueError("a symlink, or too large")
        with open_regular(path, mode="r", follow=False, encoding="utf-8", errors="replace") as f:
            data = json.load(f)
        runs = data.get("runs") if isinstance(data, dict) else None
        if not isinstance(runs, list):
            raise ValueError("no list of runs")
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:
        if strict:
            raise Unreadable(str(exc)[:100]) from None
        logger.warning("%s cannot be read (%s); it is not used", path, str(exc)[:100])
        return []
    return [run for run in runs if isinstance(run, dict)]


def versions() -> dict[str, str]:
    found = {"dataset_spiders": __version__, "python": platform.python_version()}
    for package in ("scrapy", "pillow", "twisted"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Provenance:
    """This run's entry in ``dataset.json``: written at the start and again at the end."""

    def __init__(self, root: str, staging_dir: str, run: dict[str, Any], set_aside: Callable[[str], Any]):
        self.root = root
        self.staging_dir = staging_dir
        self.set_aside = set_aside  # moves an unreadable dataset.json to .quarantine
        self.clock = time.monotonic()  # `started` and `ended` say the second; `seconds` says how long, exactly
        self.run = {
            "run_id": uuid.uuid4().hex,
            "command": redacted_command(list(sys.argv)),  # as Scrapy left it; the crawl command gives it whole
            **run,
            "versions": versions(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now(),
            "ended": None,
            "exit_status": None,
        }

    def start(self) -> None:
        """Append this run; an unreadable dataset.json is set aside first, never lost. Blocking."""
        try:
            read_runs(self.root, strict=True)
        except Unreadable as exc:
            aside = self.set_aside(os.path.join(self.root, NAME))
            logger.warning("%s cannot be read (%s): moved to %s, a new one is started", NAME, exc, aside)
        self._write()

    def end(self, exit_status: int, error: str | None, results: dict[str, Any] | None = None) -> None:
        """Record how the run ended, how long it took (``seconds``, from the start recorded) and
        what came of it. Blocking (a small file, once)."""
        self.run.update(ended=now(), seconds=round(time.monotonic() - self.clock, 3), exit_status=exit_status,
                        error=error, **(results or {}))
        self._write()

    def _write(self) -> None:
        """Read, add this run, write: under an flock, as workers of one dataset share the file."""
        fd = os.open(os.path.join(self.root, STAGING_DIR), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            runs = [r for r in read_runs(self.root) if r.get("run_id") != self.run["run_id"]]
            data = json.dumps({"runs": [*runs, scrubbed(self.run)]}, indent=2, ensure_ascii=False, default=str)
            atomic_write(os.path.join(self.root, NAME), data.encode("utf-8") + b"\n", self.staging_dir)
        finally:
            os.close(fd)


FOLDER_NAMES = ("images_dir", "descs_dir", "seg_dir")  # the folders a run may name, besides out_dir


def recorded_folders(root: str, folders: dict[str, str]) -> dict[str, str]:
    """A run's folders as dataset.json records them: a folder inside ``root`` relative to it (so
    a copied or moved dataset stays whole and never points at the original), one outside it
    absolute (``root`` itself is ``.``)."""
    root = os.path.abspath(root)
    out = {}
    for name, folder in folders.items():
        folder = os.path.abspath(folder)
        out[name] = os.path.relpath(folder, root) if _under(folder, root) else folder
    return out


@dataclass
class Folders:
    """The folders of a dataset's runs, as a command may use them (see ``resolve``)."""

    usable: list[str] = field(default_factory=list)  # absolute, inside the root or named by the caller
    images: list[str] = field(default_factory=list)  # the image folders among them (images_dir, seg_dir)
    skipped: list[str] = field(default_factory=list)  # outside the root and not named: never looked at


def resolve(root: str, runs: list[dict[str, Any]], named: list[str] | tuple[str, ...] = ()) -> Folders:
    """Rewrite each run's ``folders`` in place as absolute paths for the dataset at ``root``, and
    say which may be used. ``dataset.json`` is data, not an instruction: a folder inside ``root``
    (recorded relative, or absolute under the run's own ``out_dir``, as earlier versions wrote it,
    so that a copy resolves to the copy) is used if its real path is inside ``root`` too; any other
    folder (outside, or a symlink leading out) only if the caller ``named`` it (its own command
    line); the rest are ``skipped`` and removed from the run."""
    root = os.path.abspath(root)
    real_root = os.path.realpath(root)
    allowed = {os.path.realpath(os.path.abspath(n)) for n in named}
    found = Folders()
    for run in runs:
        folders = run.get("folders")
        if not isinstance(folders, dict):
            run["folders"] = {}
            continue
        was_root = folders.get("out_dir")
        was_root = os.path.normpath(was_root) if isinstance(was_root, str) and os.path.isabs(was_root) else None
        resolved: dict[str, str] = {"out_dir": root}
        for name in FOLDER_NAMES:
            value = folders.get(name)
            if not isinstance(value, str) or not value or "\x00" in value:
                continue
            if not os.path.isabs(value):
                path = os.path.normpath(os.path.join(root, value))
            elif was_root and _under(os.path.normpath(value), was_root):
                path = os.path.normpath(os.path.join(root, os.path.relpath(os.path.normpath(value), was_root)))
            else:
                path = os.path.normpath(value)
            real = os.path.realpath(path)
            if (_under(path, root) and _under(real, real_root)) or real in allowed:
                resolved[name] = path
                found.usable.append(path)
                if name != "descs_dir":
                    found.images.append(path)
            else:
                found.skipped.append(path)
        run["folders"] = resolved
    found.usable = list(dict.fromkeys(found.usable))
    found.images = list(dict.fromkeys(found.images))
    found.skipped = [f for f in dict.fromkeys(found.skipped) if f not in found.usable]
    return found


def read_resolved(root: str, named: list[str] | tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], Folders]:
    """The runs of ``root/dataset.json`` with their folders resolved (see ``resolve``)."""
    runs = read_runs(os.path.abspath(root))
    return runs, resolve(root, runs, named)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def imagenet_target(runs: list[dict[str, Any]], images_dir: str) -> int | None:
    """``per_class`` of the latest ImageNet run into ``images_dir``, or None (runs resolved)."""
    for run in reversed(runs):
        folders = run.get("folders") if isinstance(run.get("folders"), dict) else {}
        target = run.get("target") if isinstance(run.get("target"), dict) else {}
        same = folders.get("images_dir") == images_dir
        if run.get("spider") == "imagenet" and same and type(target.get("images")) is int:
            return int(target["images"])
    return None
